// batchlab refuses a BATCHLAB_* variable it does not know (cli/environment-names.ts) and ignores
// one that is an option of another command, which then does nothing. So a deployment may hand a
// batchlab container only variables that are options of the command it runs. This checks
// compose, Kubernetes and Slurm against the options cli/options.ts declares, and that batchlab
// itself accepts each container's environment.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkVariableNames } from '../../cli/environment-names.js';
import { OPTION_VARIABLES } from '../../cli/option-declarations.js';
import { COORDINATOR_OPTIONS, WORKER_OPTIONS } from '../../cli/options.js';
import {
  DEPLOY,
  loadCompose,
  optionOfVariable,
  parseYamlText,
  readEnvFile,
  readYaml,
  serviceEnvironment,
  type Json,
} from './support.js';

const OPTIONS: Record<string, readonly string[]> = {
  coordinator: Object.keys(COORDINATOR_OPTIONS),
  worker: Object.keys(WORKER_OPTIONS),
};

/**
 * The BATCHLAB_* variables of `env` that are not options of `command`: batchlab refuses the
 * ones it does not know and ignores another command's, so a deployment should give neither.
 * Values are those of a Kubernetes env entry or a compose value; the checker sees strings.
 */
function refused(command: string, env: Record<string, unknown>): string[] {
  const accepted = OPTIONS[command];
  if (!accepted) throw new Error(`unknown batchlab command ${command}`);
  const strings = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, typeof v === 'string' ? v : '']));
  // What batchlab itself does with this environment: no variable it would refuse.
  expect(
    () => checkVariableNames(strings, OPTION_VARIABLES),
    `${command}: ${Object.keys(env).join(' ')}`,
  ).not.toThrow();
  return Object.keys(env).filter((k) => k.startsWith('BATCHLAB') && !accepted.includes(optionOfVariable(k)));
}

describe('BATCHLAB_* variables given to batchlab containers', () => {
  it("maps variables to options as batchlab does, and flags another command's option", () => {
    expect(optionOfVariable('BATCHLAB_GLOBAL_BATCH')).toBe('global-batch');
    expect(optionOfVariable('BATCHLAB_TOKEN')).toBe('token');
    expect(refused('coordinator', { BATCHLAB_MIN_WORKERS: '2', BATCHLAB_WORKERS: '2' })).toEqual(['BATCHLAB_WORKERS']);
    // A misspelt variable is refused by batchlab itself.
    expect(() => checkVariableNames({ BATCHLAB_CONECT: 'ws://h:1' }, OPTION_VARIABLES)).toThrow(
      /did you mean BATCHLAB_CONNECT\?/,
    );
  });

  it('compose: every batchlab service gets only options of the command it runs', () => {
    const env = { ...readEnvFile(join(DEPLOY, '.env.example')), BATCHLAB_TOKEN: 't' };
    const base = loadCompose(join(DEPLOY, 'compose.yaml'), env);
    const isBatchlab = (s: Json): boolean => /^deploy\/Dockerfile\./.test(s?.build?.dockerfile ?? '');
    let checked = 0;
    const gpu = loadCompose(join(DEPLOY, 'compose.gpu.yaml'), env);
    for (const file of ['compose.yaml', 'compose.gpu.yaml', 'compose.webgpu.yaml']) {
      const model = loadCompose(join(DEPLOY, file), env);
      for (const [name, service] of Object.entries<Json>(model.services)) {
        // An override fragment (compose.gpu.yaml's coordinator, compose.webgpu.yaml's workers)
        // inherits image and command from the files below it.
        const below =
          file === 'compose.webgpu.yaml' ? { ...base.services[name], ...gpu.services[name] } : base.services[name];
        const merged = { ...below, ...service };
        if (!isBatchlab(merged)) continue; // Prometheus, Grafana
        expect(refused(merged.command[0], serviceEnvironment(service)), `${file} ${name}`).toEqual([]);
        checked++;
      }
    }
    expect(checked).toBe(2 + 9 + 8);
  });

  it('Kubernetes: every container gets only options of the command it runs', () => {
    let checked = 0;
    for (const file of ['coordinator.yaml', 'workers.yaml']) {
      for (const doc of readYaml(join(DEPLOY, 'k8s', file)) as Json[]) {
        for (const c of doc.spec?.template?.spec?.containers ?? []) {
          const env = Object.fromEntries((c.env ?? []).map((e: Json) => [e.name, e]));
          expect(refused(c.args[0], env), `${file} ${c.name}`).toEqual([]);
          checked++;
        }
      }
    }
    expect(checked).toBe(2);
    // The webgpu component's patch adds variables to the worker container.
    const component = readYaml(join(DEPLOY, 'k8s/webgpu/kustomization.yaml'))[0] as Json;
    const patched = component.patches.flatMap((p: Json) => parseYamlText(p.patch)) as Json[];
    const containers = patched.flatMap((d) => d.spec.template.spec.containers);
    expect(containers.map((c: Json) => c.name)).toEqual(['worker']);
    const env = Object.fromEntries(containers[0].env.map((e: Json) => [e.name, e]));
    expect(Object.keys(env)).toContain('BATCHLAB_BACKEND');
    expect(refused('worker', env), 'k8s/webgpu').toEqual([]);
  });

  it('Slurm: the batch script exports no BATCHLAB_* variable but the token, and names its own knobs without the prefix', () => {
    const script = readFileSync(join(DEPLOY, 'slurm/batchlab.sbatch'), 'utf8');
    const assigned = new Set([...script.matchAll(/^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
    const exported = new Set(
      [...script.matchAll(/^\s*export\s+([A-Z_][A-Z0-9_ ]*)$/gm)].flatMap((m) => m[1]!.split(/\s+/)),
    );
    expect([...assigned, ...exported].filter((v) => v.startsWith('BATCHLAB'))).toEqual([
      'BATCHLAB_TOKEN',
      'BATCHLAB_TOKEN',
    ]);
    expect(refused('coordinator', { BATCHLAB_TOKEN: 'x' })).toEqual([]);
    expect(refused('worker', { BATCHLAB_TOKEN: 'x' })).toEqual([]);
  });
});
