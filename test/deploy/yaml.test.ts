// Every YAML file under deploy/ parses, strictly: no syntax error, no warning, no duplicated
// key (which many tools would resolve silently, last one wins), and every document in it is a
// mapping: no empty document (a stray `---`), no bare list or scalar.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { deployYamlFiles, parseYamlDocuments, parseYamlText, rel, ROOT } from './support.js';

/** Why a parsed document is not a mapping, or null when it is one. */
function notAMapping(doc: unknown): string | null {
  if (doc === null || doc === undefined) return 'an empty document';
  if (Array.isArray(doc)) return 'a list';
  if (typeof doc !== 'object') return `a ${typeof doc} (${JSON.stringify(doc)})`;
  return null;
}

/** For each document of the text, why it is not a mapping (null where it is one). */
const problemsIn = (text: string): (string | null)[] => parseYamlDocuments(text).map(notAMapping);

describe('YAML under deploy/', () => {
  const files = deployYamlFiles();

  it('includes the compose, Kubernetes and Prometheus files', () => {
    expect(files.map(rel)).toEqual(
      expect.arrayContaining([
        'deploy/compose.yaml',
        'deploy/compose.gpu.yaml',
        'deploy/compose.webgpu.yaml',
        'deploy/prometheus.yml',
        'deploy/prometheus-compose.yml',
        'deploy/prometheus-kubernetes.yml',
        'deploy/k8s/kustomization.yaml',
        'deploy/k8s/settings.yaml',
        'deploy/k8s/coordinator.yaml',
        'deploy/k8s/workers.yaml',
        'deploy/k8s/podmonitor/kustomization.yaml',
        'deploy/k8s/podmonitor/podmonitor.yaml',
        'deploy/k8s/webgpu/kustomization.yaml',
      ]),
    );
  });

  it.each(files.map(rel))('%s parses without errors, warnings or duplicate keys, into mappings only', (file) => {
    const docs = parseYamlDocuments(readFileSync(join(ROOT, file), 'utf8'), file);
    expect(docs.length).toBeGreaterThan(0);
    docs.forEach((doc, i) => expect(notAMapping(doc), `${file}, document ${i + 1}`).toBeNull());
  });

  it('the parser used here rejects a duplicated key and a bad indent', () => {
    expect(() => parseYamlText('a: 1\na: 2\n')).toThrow(/^yaml: .*unique/is);
    expect(() => parseYamlText('a:\n  b: 1\n c: 2\n')).toThrow(/^yaml: /);
  });

  it('the mapping check refuses an empty document, a list and a scalar, and accepts mappings', () => {
    expect(problemsIn('a: 1\n---\nb: 2\n')).toEqual([null, null]);
    expect(problemsIn('a: 1\n---\n')).toEqual([null, 'an empty document']);
    expect(problemsIn('---\n---\na: 1\n')).toEqual(['an empty document', null]);
    expect(problemsIn('- a\n- b\n')).toEqual(['a list']);
    expect(problemsIn('42\n')).toEqual(['a number (42)']);
    expect(problemsIn('just text\n')).toEqual(['a string ("just text")']);
  });
});
