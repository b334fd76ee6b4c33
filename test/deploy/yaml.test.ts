// Every YAML file under deploy/ parses, strictly: no syntax error, no warning, no duplicated
// key (which many tools would resolve silently, last one wins).

import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { deployYamlFiles, parseYamlText, readYaml, rel, ROOT } from './support.js';

describe('YAML under deploy/', () => {
  const files = deployYamlFiles();

  it('includes the compose, Kubernetes and Prometheus files', () => {
    expect(files.map(rel)).toEqual(
      expect.arrayContaining([
        'deploy/compose.yaml',
        'deploy/compose.gpu.yaml',
        'deploy/prometheus.yml',
        'deploy/prometheus-compose.yml',
        'deploy/prometheus-kubernetes.yml',
        'deploy/k8s/kustomization.yaml',
        'deploy/k8s/settings.yaml',
        'deploy/k8s/coordinator.yaml',
        'deploy/k8s/workers.yaml',
        'deploy/k8s/podmonitor/kustomization.yaml',
        'deploy/k8s/podmonitor/podmonitor.yaml',
      ]),
    );
  });

  it.each(files.map(rel))('%s parses without errors, warnings or duplicate keys', (file) => {
    const docs = readYaml(join(ROOT, file));
    expect(docs.length).toBeGreaterThan(0);
    for (const doc of docs) expect(typeof doc).toBe('object');
  });

  it('the parser used here rejects a duplicated key and a bad indent', () => {
    expect(() => parseYamlText('a: 1\na: 2\n')).toThrow(/unique/i);
    expect(() => parseYamlText('a:\n  b: 1\n c: 2\n')).toThrow();
  });
});
