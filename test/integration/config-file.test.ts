// A run described in a file, end to end with real processes on the embedded data: a YAML file
// sets the options, BATCHLAB_* variables override it and the command line overrides both (read
// back from the report); and a report is itself a config file: `--config A.json` trains the same
// weights, bit for bit, and records the same configuration, for a run and for a sweep.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, SUBSET_DIR } from '../support/cli.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-config-run-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));

/** Runs `batchlab args…` and fails with the end of its output unless it exits 0. */
async function run(args: string[], env: Record<string, string> = {}): Promise<void> {
  const result = await runCli(args, env, 180_000);
  if (result.code !== 0)
    throw new Error(`batchlab ${args.join(' ')} exited ${result.code}:\n${result.stderr.slice(-3000)}`);
}

describe('--config FILE', () => {
  it(
    'takes options from a YAML file, under BATCHLAB_* variables, under the command line',
    { timeout: 200_000 },
    async () => {
      const config = join(dir, 'run.yaml');
      writeFileSync(
        config,
        [
          '# three layers: seed from here, lr from the environment, global-batch from the command line',
          `data-dir: ${SUBSET_DIR}`,
          'hidden: [24]',
          'seed: 3',
          'lr: 0.002',
          'global-batch: 48',
          'micro-batch: 16',
          'steps: 3',
          'eval-every: 0',
          'metrics-port: off',
          'workers: 2',
          '',
        ].join('\n'),
      );
      const report = join(dir, 'layers.json');
      await run(['local', '--config', config, '--global-batch', '32', '--report', report], {
        BATCHLAB_LR: '0.003',
        BATCHLAB_GLOBAL_BATCH: '64',
      });
      const r = readJson(report);
      // What the run did…
      expect({ seed: r.seed, learningRate: r.learningRate, globalBatchSize: r.globalBatchSize }).toEqual({
        seed: 3,
        learningRate: 0.003,
        globalBatchSize: 32,
      });
      expect({ microBatchSize: r.microBatchSize, steps: r.steps, workers: r.workers }).toEqual({
        microBatchSize: 16,
        steps: 3,
        workers: 2,
      });
      // …and what it records: the same values, keyed as in the file, without the report's path.
      expect(r.config).toMatchObject({
        'data-dir': SUBSET_DIR,
        hidden: 24,
        seed: 3,
        lr: 0.003,
        'global-batch': 32,
        'micro-batch': 16,
        steps: 3,
        'eval-every': 0,
        'metrics-port': 'off',
        local: { workers: 2 },
        model: 'mlp',
        optimizer: 'adam',
      });
      expect(r.config).not.toHaveProperty('report');
    },
  );

  it('runs a report again: the same weights, bit for bit, and the same config', { timeout: 300_000 }, async () => {
    const first = join(dir, 'first');
    const again = join(dir, 'again');
    // Options off their defaults, so that a replay that lost any of them would train other weights.
    await run([
      'local',
      '--workers',
      '2',
      '--data-dir',
      SUBSET_DIR,
      '--hidden',
      '32,16',
      '--global-batch',
      '64',
      '--micro-batch',
      '16',
      '--optimizer',
      'sgd',
      '--lr',
      '0.07',
      '--nesterov',
      '--weight-decay',
      '0.001',
      '--steps',
      '4',
      '--seed',
      '11',
      '--eval-every',
      '0',
      '--metrics-port',
      'off',
      '--save-model',
      first,
      '--report',
      `${first}.json`,
      // Checkpoint options are not recorded: the replay is a new run, which neither resumes from
      // these checkpoints (it would train nothing) nor moves them aside.
      '--checkpoint-dir',
      `${first}-checkpoints`,
      '--resume',
      'auto',
    ]);
    await run(['local', '--config', `${first}.json`, '--save-model', again, '--report', `${again}.json`]);
    const [a, b] = [readJson(`${first}.json`), readJson(`${again}.json`)];
    expect(b.config).toEqual(a.config);
    expect(a.config).toMatchObject({ optimizer: 'sgd', lr: 0.07, nesterov: true, seed: 11, hidden: '32,16' });
    expect(a.config).not.toHaveProperty('save-model');
    for (const option of ['checkpoint-dir', 'resume']) expect(a.config).not.toHaveProperty(option);
    expect(a.config).toMatchObject({ local: { workers: 2 } });
    expect(b.checkpoints, 'the replay keeps no checkpoints').toBeNull();
    expect(b.steps).toBe(4);
    expectBitIdentical(readSavedWeights(first), readSavedWeights(again), 'weights of the run from its report');
  });

  it(
    'runs a sweep report again (named by BATCHLAB_CONFIG, which the workers it starts ignore)',
    { timeout: 300_000 },
    async () => {
      const first = join(dir, 'sweep-first.json');
      const again = join(dir, 'sweep-again.json');
      await run([
        'sweep',
        '--data-dir',
        SUBSET_DIR,
        '--hidden',
        '16',
        '--global-batch',
        '32',
        '--workers',
        '2',
        '--steps',
        '3',
        '--seed',
        '7',
        '--report',
        first,
      ]);
      await run(['sweep', '--report', again], { BATCHLAB_CONFIG: first });
      const [a, b] = [readJson(first), readJson(again)];
      expect(b.config).toEqual(a.config);
      expect(a.config).toMatchObject({ 'global-batch': 32, workers: 2, steps: 3, seed: 7 });
      expect(b.points.map((p: { finalLoss: number }) => p.finalLoss)).toEqual(
        a.points.map((p: { finalLoss: number }) => p.finalLoss),
      );
      expect(b.points[0]).not.toHaveProperty('config');
    },
  );
});
