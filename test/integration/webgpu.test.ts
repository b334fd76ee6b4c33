// The webgpu backend in real processes: 1 and 3 workers on webgpu end with the same weights (the
// reduction order is fixed, and each micro-batch is computed by the same kernels whoever runs
// it); `auto` passes over a software adapter, saying why; a machine without a Vulkan driver Dawn
// accepts gets one clear line, and `auto` goes on. Skipped with the reason where no adapter
// exists; under CI=true that is a failure (.ci/run installs Mesa from bookworm-backports).

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../shared/backend.js';
import { cleanEnv, CLI, ROOT, runCli } from '../support/cli.js';
import { maxRelativeDifference, readSavedWeights } from '../support/tensors.js';

const inCi = process.env.CI === 'true';
let unavailable: string | null = null;
try {
  await selectBackend('webgpu');
} catch (error) {
  unavailable = (error as Error).message;
}
const runs = unavailable === null || inCi;
const skipped = unavailable === null ? '' : ` (skipped: no WebGPU adapter here: ${unavailable})`;

const dir = mkdtempSync(join(tmpdir(), 'batchlab-webgpu-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const job = (steps = 20): string[] => [
  '--dataset',
  'synthetic',
  '--hidden',
  '32',
  '--global-batch',
  '96',
  '--micro-batch',
  '16',
  '--steps',
  String(steps),
  '--seed',
  '4',
  '--eval-every',
  '0',
  '--metrics-port',
  'off',
];
/** Points Vulkan's loader at no driver at all: what a machine without one sees. */
const NO_DRIVER = { VK_ICD_FILENAMES: join(dir, 'no-such-icd.json'), VK_DRIVER_FILES: join(dir, 'no-such-icd.json') };

describe('webgpu in real processes', () => {
  it.skipIf(!runs)(
    `1 and 3 workers on webgpu end with the same weights within 1e-5, and the report names the adapter${skipped}`,
    async () => {
      expect(
        unavailable,
        'CI=true: the webgpu tests need a Vulkan driver (mesa-vulkan-drivers from bookworm-backports)',
      ).toBeNull();
      const weights: Float32Array[] = [];
      for (const workers of [1, 3]) {
        const out = join(dir, `w${workers}`);
        const result = await runCli(
          [
            'local',
            '--workers',
            String(workers),
            '--backend',
            'webgpu',
            ...job(),
            '--save-model',
            out,
            '--report',
            `${out}.json`,
          ],
          {},
          240_000,
        );
        expect(result.code, result.stderr.slice(-3000)).toBe(0);
        // Every worker says which adapter it computes on.
        expect(
          result.stderr.match(/^\[worker \d\] backend webgpu \(adapter .+, (hardware|software fallback)\)$/gm),
        ).toHaveLength(workers);
        const report = JSON.parse(readFileSync(`${out}.json`, 'utf8'));
        expect(report.backend).toBe('webgpu');
        expect(report.adapter).toMatch(/^adapter .+, (hardware|software fallback)$/);
        expect(report.samples).toBe(20 * 96);
        weights.push(readSavedWeights(out));
      }
      expect(maxRelativeDifference(weights[0]!, weights[1]!)).toBeLessThan(1e-5);
    },
    300_000,
  );

  it.skipIf(!runs)(
    `auto passes over a software adapter, naming it, and uses the next backend${skipped}`,
    async () => {
      expect(unavailable).toBeNull();
      const software = /software fallback/.test((await selectBackend('webgpu')).device);
      const result = await runCli(['local', '--workers', '1', '--backend', 'auto', ...job(2)]);
      expect(result.code, result.stderr.slice(-3000)).toBe(0);
      const line = /^\[worker 1\] backend (\S+) .*$/m.exec(result.stderr);
      expect(line, result.stderr.slice(-3000)).not.toBeNull();
      if (software) {
        expect(line![1]).not.toBe('webgpu');
        expect(line![0]).toMatch(
          /skipped .*webgpu: only a software adapter \(.+\), slower than wasm; name it with --backend webgpu/,
        );
      } else {
        // A GPU node: auto takes the hardware adapter (after tfjs-node-gpu, when that loads).
        expect(line![1]).toMatch(/^(webgpu|tensorflow-gpu)$/);
      }
    },
    120_000,
  );
});

describe('scripts/gpu-check.sh on this machine', () => {
  it.skipIf(!runs)(
    `passes with --allow-fallback on the adapter here and fails without it when that adapter is software${skipped}`,
    async () => {
      expect(unavailable).toBeNull();
      const software = /software fallback/.test((await selectBackend('webgpu')).device);
      const check = (args: string[]) =>
        new Promise<{ code: number | null; output: string }>((resolve) => {
          const child = spawn('bash', [join(ROOT, 'scripts/gpu-check.sh'), ...args], {
            env: cleanEnv({ BATCHLAB: `${process.execPath} ${CLI}` }),
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          let output = '';
          child.stdout.on('data', (d) => (output += d));
          child.stderr.on('data', (d) => (output += d));
          child.on('exit', (code) => resolve({ code, output }));
        });
      const allowed = await check(['--allow-fallback', '--steps', '3']);
      expect(allowed.code, allowed.output.slice(-3000)).toBe(0);
      // It ran all three parts: the adapter, the backends bench with webgpu in it, and two workers.
      expect(allowed.output).toMatch(/backend webgpu \(adapter .+\)/);
      expect(allowed.output).toMatch(/^ {2}webgpu mlp +batch \d+ +[\d,]+ +adapter /m);
      expect(allowed.output).toMatch(/backend, workers, reducer +webgpu \(adapter .+\), 2, star/);
      if (software) {
        const strict = await check(['--steps', '3']);
        expect(strict.code, strict.output.slice(-3000)).toBe(3);
      }
    },
    600_000,
  );
});

describe('webgpu without a Vulkan driver', () => {
  it('is refused with one line saying so when asked for by name (exit 2), and auto goes on', async () => {
    const named = await runCli(['local', '--workers', '1', '--backend', 'webgpu', ...job()], NO_DRIVER);
    expect(named.code, named.stderr.slice(-3000)).toBe(2);
    expect(named.stderr).toMatch(
      /--backend: got "webgpu"; expected a backend that loads here \((no WebGPU adapter: Dawn found no Vulkan driver it accepts|not installed)[^)]*\)/,
    );
    expect(named.stderr).not.toMatch(/step +1\//);

    const auto = await runCli(['local', '--workers', '1', '--backend', 'auto', ...job(2)], NO_DRIVER);
    expect(auto.code, auto.stderr.slice(-3000)).toBe(0);
    expect(auto.stderr).toMatch(/skipped .*webgpu: (no WebGPU adapter|not installed)/);
  }, 120_000);
});
