// A ResNet with batch norm trains the same under data parallelism: real `batchlab local` runs of
// --model resnet --depth 8 on the embedded Fashion-MNIST subset, with 1 and 3 workers and both
// reducers, end with the same weights and the same moving statistics (read from --save-model's
// weights.bin and from the checkpoint); a resume from a checkpoint continues them; and the saved
// model, loaded by plain tfjs-layers, reproduces the accuracy the run reported.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpointFileName, readCheckpoint } from '../../coordinator/checkpoint.js';
import { batchNormLayersOf, readMovingStatistics } from '../../shared/batch-norm.js';
import { runCli, startCli, SUBSET_DIR, waitForOutput } from '../support/cli.js';
import { waitForStep, waitForText, watch } from '../support/processes.js';
import { loadSavedModel } from '../support/saved-model.js';
import { bitDifference, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-batch-norm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => tf.setBackend('cpu'));

const STEPS = 16;
const RUN = [
  ...['--model', 'resnet', '--depth', '8', '--hidden', '4,8,8'],
  ...['--dataset', 'fashion-mnist', '--data-dir', SUBSET_DIR],
  ...['--steps', String(STEPS), '--global-batch', '48', '--micro-batch', '16', '--lr', '0.01', '--seed', '5'],
  ...['--eval-every', '0', '--metrics-port', 'off', '--balance', 'equal'],
];

interface Run {
  model: string;
  report: { evalAccuracy: number };
}

async function run(name: string, workers: number, extra: string[] = []): Promise<Run> {
  const model = join(dir, name);
  const report = `${model}.json`;
  const args = ['local', '--workers', String(workers), ...RUN, '--save-model', model, '--report', report, ...extra];
  const result = await runCli(args, {}, 300_000);
  expect(result.code, result.stderr).toBe(0);
  return { model, report: JSON.parse(readFileSync(report, 'utf8')) };
}

/** The moving statistics of the model saved in `modelDir`, as the coordinator lays them out. */
async function savedMovingStats(modelDir: string): Promise<Float32Array> {
  const model = await loadSavedModel(modelDir);
  try {
    return readMovingStatistics(batchNormLayersOf(model));
  } finally {
    model.dispose();
  }
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** Weights and moving statistics of two saved models agree within 1e-5; says whether they are the same bits. */
async function expectSameModel(a: Pick<Run, 'model'>, b: Pick<Run, 'model'>): Promise<string> {
  const weights = [readSavedWeights(a.model), readSavedWeights(b.model)] as const;
  const stats = [await savedMovingStats(a.model), await savedMovingStats(b.model)] as const;
  expect(maxAbsDifference(...weights)).toBeLessThanOrEqual(1e-5);
  expect(maxAbsDifference(...stats)).toBeLessThanOrEqual(1e-5);
  return bitDifference(...weights) ?? 'identical bits';
}

function readIdx(path: string): Uint8Array {
  const bytes = gunzipSync(readFileSync(path));
  return bytes.subarray(4 + 4 * bytes[3]!);
}

/** Accuracy of `model` on the subset's test images fed as pixel / 255. */
function testAccuracy(model: tfl.LayersModel): number {
  const images = readIdx(join(SUBSET_DIR, 't10k-images-idx3-ubyte.gz'));
  const labels = readIdx(join(SUBSET_DIR, 't10k-labels-idx1-ubyte.gz'));
  let correct = 0;
  for (let start = 0; start < labels.length; start += 500) {
    const end = Math.min(labels.length, start + 500);
    const pixels = Float32Array.from(images.subarray(start * 784, end * 784), (p) => p / 255);
    const predicted = tf.tidy(() =>
      tf.argMax(model.predict(tf.tensor4d(pixels, [end - start, 28, 28, 1])) as tf.Tensor, 1).dataSync(),
    );
    for (let i = 0; i < predicted.length; i++) if (predicted[i] === labels[start + i]) correct++;
  }
  return correct / labels.length;
}

describe('--model resnet (batch norm) under data parallelism', () => {
  let one: Run;
  const checkpoints = join(dir, 'checkpoints');

  beforeAll(async () => {
    one = await run('one', 1, ['--checkpoint-dir', checkpoints, '--checkpoint-every', String(STEPS / 2)]);
  }, 300_000);

  it('moves the moving statistics away from their start (mean 0, variance 1)', async () => {
    const stats = await savedMovingStats(one.model);
    expect(stats.some((v, i) => v !== (Math.floor(i / 4) % 2 === 0 ? 0 : 1))).toBe(true);
    // The first layer's mean (4 channels, --hidden 4,8,8) has moved off zero.
    const mean0 = stats.subarray(0, 4);
    expect(Math.max(...mean0.map(Math.abs))).toBeGreaterThan(1e-3);
  });

  it('gives 3 star workers the weights and moving statistics of 1', { timeout: 300_000 }, async () => {
    const three = await run('three-star', 3);
    console.log(`star, 3 workers vs 1: ${await expectSameModel(one, three)}`);
  });

  it('gives 3 sharded workers the weights and moving statistics of 1', { timeout: 300_000 }, async () => {
    const sharded = await run('three-sharded', 3, ['--reducer', 'sharded']);
    console.log(`sharded, 3 workers vs 1 star: ${await expectSameModel(one, sharded)}`);
  });

  it(
    'stores the moving statistics in the checkpoint, and a resume continues them bit for bit',
    { timeout: 300_000 },
    async () => {
      const last = await readCheckpoint(join(checkpoints, checkpointFileName(STEPS)));
      expect(bitDifference(await savedMovingStats(one.model), last.movingStats!)).toBeNull();
      // From the checkpoint half-way: the second half again, from its stored statistics.
      unlinkSync(join(checkpoints, checkpointFileName(STEPS)));
      const resumed = await run('resumed', 1, ['--checkpoint-dir', checkpoints, '--resume']);
      expect(bitDifference(readSavedWeights(one.model), readSavedWeights(resumed.model))).toBeNull();
      expect(bitDifference(await savedMovingStats(one.model), await savedMovingStats(resumed.model))).toBeNull();
    },
  );

  it('saves a model that plain tfjs-layers loads and that reproduces the reported test accuracy', async () => {
    const loaded = await loadSavedModel(one.model);
    try {
      // Trained past chance, so moving statistics left out of the saved model would show.
      expect(one.report.evalAccuracy).toBeGreaterThan(0.3);
      const accuracy = testAccuracy(loaded);
      expect(
        Math.abs(accuracy - one.report.evalAccuracy),
        `${accuracy} vs ${one.report.evalAccuracy}`,
      ).toBeLessThanOrEqual(0.005);
    } finally {
      loaded.dispose();
    }
  });
});

describe('a worker lost in the middle of a batch-norm step (sharded)', () => {
  // Long enough to kill a worker mid-run; checkpoints every 10 steps, all kept, so the moving
  // statistics are compared within 10 steps of the loss too (a micro-batch's statistics counted
  // twice there would fade from the final ones by 0.9 per later micro-batch).
  const LONG = 120;
  const job = (name: string) => [
    ...RUN.map((arg, i) => (RUN[i - 1] === '--steps' ? String(LONG) : arg)),
    ...['--checkpoint-dir', join(dir, `${name}-checkpoints`), '--checkpoint-every', '10', '--keep-checkpoints', '100'],
    ...['--save-model', join(dir, name), '--report', join(dir, `${name}.json`)],
  ];

  it(
    'ends, like 1 worker, with the same weights and moving statistics: its replies are counted once',
    { timeout: 400_000 },
    async () => {
      const reference = await runCli(['local', '--workers', '1', ...job('long-one')], {}, 300_000);
      expect(reference.code, reference.stderr).toBe(0);

      const coordinator = startCli([
        ...['coordinator', '--insecure', '--port', '0', '--heartbeat-interval', '1'],
        ...['--reducer', 'sharded', '--min-workers', '2', ...job('long-killed')],
      ]);
      const run = watch(coordinator);
      const workers: ChildProcess[] = [];
      try {
        const port = Number((await waitForText(run.output, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
        workers.push(
          ...['w1', 'w2', 'w3'].map((name) =>
            startCli([
              ...['worker', '--connect', `ws://127.0.0.1:${port}`, '--name', name],
              ...['--data-dir', SUBSET_DIR, '--metrics-port', 'off'],
            ]),
          ),
        );
        await waitForText(run.output, /worker \d+ joined \(w3,/);
        const joinedAt = Math.max(0, ...[...run.output().matchAll(/step +(\d+)\/\d+/g)].map((m) => Number(m[1])));
        await waitForStep(run.output, joinedAt + 20);
        // Frozen first, so that it surely dies inside a step: it has sent its micro-batch's reply
        // (with its batch statistics) and holds a shard of the exchange; losing it, the
        // coordinator takes that reply back and has the micro-batch computed again.
        workers[1]!.kill('SIGSTOP');
        await new Promise((r) => setTimeout(r, 800));
        workers[1]!.kill('SIGKILL');
        expect(await run.exit, run.output().slice(-3000)).toBe(0);
      } finally {
        for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
        coordinator.kill('SIGKILL');
      }
      const lost = /step (\d+): worker \d+ \(w2\) lost/.exec(run.output());
      expect(lost, run.output().slice(-3000)).not.toBeNull();
      expect(run.output()).toMatch(/exchange restarted over 2 workers/);
      const one = { model: join(dir, 'long-one') };
      const killed = { model: join(dir, 'long-killed') };
      console.log(`sharded, 3 workers with one killed at step ${lost![1]} vs 1: ${await expectSameModel(one, killed)}`);
      // Every checkpoint from the loss on holds the moving statistics of the undisturbed run.
      const after = Math.ceil((Number(lost![1]) + 1) / 10) * 10;
      expect(after).toBeLessThan(LONG);
      for (let step = after; step < LONG; step += 10) {
        const [a, b] = await Promise.all(
          ['long-one', 'long-killed'].map((name) =>
            readCheckpoint(join(dir, `${name}-checkpoints`, checkpointFileName(step))),
          ),
        );
        expect(maxAbsDifference(a!.movingStats!, b!.movingStats!), `checkpoint at step ${step}`).toBeLessThanOrEqual(
          1e-5,
        );
      }
    },
  );
});

describe('a batch-norm micro-batch is computed whole', () => {
  it('refuses at hello a worker whose --max-chunk is below --micro-batch, naming both (exit 2)', async () => {
    const coordinator = startCli([
      ...['coordinator', '--insecure', '--port', '0', '--model', 'resnet', '--depth', '8', '--hidden', '4,8,8'],
      ...['--dataset', 'synthetic', '--global-batch', '32', '--micro-batch', '16', '--steps', '1'],
      ...['--metrics-port', 'off', '--worker-wait', '60'],
    ]);
    try {
      const port = Number((await waitForOutput(coordinator, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
      const worker = await runCli([
        'worker',
        '--connect',
        `ws://127.0.0.1:${port}`,
        '--max-chunk',
        '8',
        '--metrics-port',
        'off',
      ]);
      expect(worker.code, worker.stderr).toBe(2);
      expect(worker.stderr).toMatch(
        /BAD_OPTION.*--max-chunk 8, smaller than this run's --micro-batch 16.*batch norm.*--max-chunk 16 or more, or the coordinator --micro-batch 8 or less/,
      );
    } finally {
      coordinator.kill('SIGKILL');
    }
  });

  it('lets a worker with --max-chunk auto join, probing the whole micro-batch only, and the run completes', async () => {
    const coordinator = startCli([
      ...['coordinator', '--insecure', '--port', '0', '--model', 'resnet', '--depth', '8', '--hidden', '4,8,8'],
      ...['--dataset', 'synthetic', '--global-batch', '32', '--micro-batch', '16', '--steps', '2'],
      ...['--metrics-port', 'off', '--worker-wait', '60'],
    ]);
    const run = watch(coordinator);
    try {
      const port = Number((await waitForOutput(coordinator, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
      const worker = await runCli(
        ['worker', '--connect', `ws://127.0.0.1:${port}`, '--max-chunk', 'auto', '--metrics-port', 'off'],
        {},
        120_000,
      );
      expect(worker.code, worker.stderr).toBe(0);
      // One try, at the micro-batch: a smaller chunk is of no use to a batch-norm model.
      expect(worker.stderr).toMatch(/max chunk auto: 16 samples \(micro-batch; peak tensor bytes 16: \d+ B;/);
      expect(await run.exit, run.output()).toBe(0);
      expect(run.output()).toMatch(/step +2\/2/);
    } finally {
      coordinator.kill('SIGKILL');
    }
  }, 180_000);
});
