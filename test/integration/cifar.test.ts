// CIFAR end to end with generated files in the exact binary layout: `batchlab local` trains a cnn
// on 32×32×3 images and saves a model that, loaded with plain tfjs-layers and fed the test
// records' bytes / 255 in HWC, gets the accuracy the run reported (the per-channel
// standardization is built in); a worker whose copy differs from the coordinator's in one file is
// refused, naming that file; a directory without the files is refused with exit code 2.

import { type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeTestFile, writeCifarFiles } from '../support/cifar-files.js';
import { runCli, startCli, waitForOutput } from '../support/cli.js';
import { watch } from '../support/processes.js';
import { loadSavedModel } from '../support/saved-model.js';

const root = mkdtempSync(join(tmpdir(), 'batchlab-cifar-run-'));
const env = { XDG_CACHE_HOME: join(root, 'cache') };
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
beforeAll(() => tf.setBackend('cpu'));

describe('cifar10 runs', () => {
  it('local --model cnn trains on generated CIFAR-10 and saves a model that standardizes per channel itself', async () => {
    const data = join(root, 'c10');
    const { files } = writeCifarFiles(data, { name: 'cifar10', trainPerFile: 40, test: 100, seed: 7 });
    const out = join(root, 'model');
    const result = await runCli(
      [
        'local',
        ...['--workers', '1', '--dataset', 'cifar10', '--data-dir', data, '--model', 'cnn'],
        ...['--steps', '40', '--global-batch', '32', '--seed', '1', '--eval-every', '0', '--metrics-port', 'off'],
        ...['--report', `${out}.json`, '--save-model', out],
      ],
      env,
      180_000,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain(`cifar10: 200 train / 100 test from ${join(data, 'cifar-10-batches-bin')}`);
    const report = JSON.parse(readFileSync(`${out}.json`, 'utf8'));
    // 10 classes: chance is 0.1; the generated classes differ in colour and stripe.
    expect(report.evalAccuracy).toBeGreaterThan(0.5);

    const model = await loadSavedModel(out);
    try {
      const { pixels, labels } = decodeTestFile(files['test_batch.bin']!);
      const predicted = tf.tidy(() =>
        tf.argMax(model.predict(tf.tensor4d(pixels, [labels.length, 32, 32, 3])) as tf.Tensor, 1).dataSync(),
      );
      const accuracy = labels.filter((label, i) => predicted[i] === label).length / labels.length;
      expect(
        Math.abs(accuracy - report.evalAccuracy),
        `${accuracy} vs reported ${report.evalAccuracy}`,
      ).toBeLessThanOrEqual(0.01);
      const meta = model.getUserDefinedMetadata() as Record<string, Record<string, unknown>>;
      expect(meta.input).toEqual({
        shape: [null, 32, 32, 3],
        dtype: 'float32',
        values: 'pixel / 255, in [0, 1], channels R, G, B (HWC)',
      });
      expect((meta.standardization!.mean as number[]).length).toBe(3);
      expect(meta.dataset).toMatchObject({ name: 'cifar10', numClasses: 10 });
    } finally {
      model.dispose();
    }
  }, 240_000);

  it('refuses a worker whose copy differs in one file, naming it; the same copy trains', async () => {
    const same = join(root, 'same');
    const changed = join(root, 'changed');
    writeCifarFiles(same, { name: 'cifar10', trainPerFile: 8, test: 8, seed: 3 });
    const { files } = writeCifarFiles(changed, { name: 'cifar10', trainPerFile: 8, test: 8, seed: 3 });
    const bytes = readFileSync(files['data_batch_2.bin']!);
    bytes[3073 * 5 + 1 + 2048 + 77]! ^= 1; // one blue byte of record 5
    writeFileSync(files['data_batch_2.bin']!, bytes);
    const tokenEnv = { ...env, BATCHLAB_TOKEN: 'cifar' };
    const coordinator = startCli(
      [
        ...['coordinator', '--host', '127.0.0.1', '--port', '0', '--metrics-port', 'off'],
        ...['--dataset', 'cifar10', '--data-dir', same, '--model', 'cnn', '--steps', '2', '--global-batch', '8'],
      ],
      tokenEnv,
    );
    children.push(coordinator);
    const run = watch(coordinator);
    const port = Number((await waitForOutput(coordinator, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
    const worker = (dir: string) =>
      runCli(['worker', '--connect', `ws://127.0.0.1:${port}`, '--data-dir', dir, '--metrics-port', 'off'], tokenEnv);

    const refused = await worker(changed);
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toMatch(/\[DATASET_MISMATCH\] dataset file data_batch_2\.bin differs/);
    expect(refused.stderr).toContain(files['data_batch_2.bin']);

    const accepted = await worker(same);
    expect(accepted.code, accepted.stderr).toBe(0);
    expect(await run.exit, run.output()).toBe(0);
  }, 120_000);

  it('exits 2 naming the directory, the missing files and how to get them', async () => {
    const empty = join(root, 'empty');
    mkdirSync(empty);
    const result = await runCli(
      [
        'local',
        '--workers',
        '1',
        '--dataset',
        'cifar100',
        '--data-dir',
        empty,
        '--steps',
        '1',
        '--metrics-port',
        'off',
      ],
      env,
    );
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain(
      `[BAD_DATA] cifar100: data directory ${empty} (from --data-dir) is missing train.bin, test.bin`,
    );
    expect(result.stderr).toContain('batchlab data fetch cifar100 --dir DIR');
  }, 60_000);
});
