// The model --save-model writes stands alone: a real `batchlab local` run saves it, and code that
// is not batchlab's (tfjs-layers' loadLayersModel from an in-memory copy of model.json and
// weights.bin, on the cpu backend; the IDX files decoded here) feeds it the test images as
// pixel / 255 and gets the accuracy the run reported. model.json's metadata says what the model
// takes and gives and how it was trained.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, SUBSET_DIR } from '../support/cli.js';
import { accuracyOnRawPixels, loadSavedModel, readIdx } from '../support/saved-model.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-saved-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const testImages = readIdx(join(SUBSET_DIR, 't10k-images-idx3-ubyte.gz'));
const testLabels = readIdx(join(SUBSET_DIR, 't10k-labels-idx1-ubyte.gz'));
const trainPixels = readIdx(join(SUBSET_DIR, 'train-images-idx3-ubyte.gz')).data;
const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

beforeAll(() => tf.setBackend('cpu'));

describe.each(['mlp', 'cnn'])('--model %s --save-model', (model) => {
  it('takes pixel / 255, reproduces the reported test accuracy within 0.5 points, and carries its metadata', async () => {
    const out = join(dir, model);
    const reportPath = `${out}.json`;
    const result = await runCli(
      [
        'local',
        ...['--workers', '1', '--model', model, '--dataset', 'fashion-mnist', '--data-dir', SUBSET_DIR],
        ...['--steps', '100', '--global-batch', '64', '--seed', '3', '--eval-every', '0', '--metrics-port', 'off'],
        ...['--report', reportPath, '--save-model', out],
      ],
      {},
      180_000,
    );
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(readFileSync(reportPath, 'utf8'));
    // Trained well past chance, so an input off by the standardization would show.
    expect(report.evalAccuracy).toBeGreaterThan(0.6);

    const loaded = await loadSavedModel(out);
    try {
      expect(testImages.dims).toEqual([testLabels.dims[0], 28, 28]);
      accuracyOnRawPixels(loaded, testImages.data.subarray(0, 28 * 28), testLabels.data.subarray(0, 1));
      const before = tf.memory().numTensors;
      const accuracy = accuracyOnRawPixels(loaded, testImages.data, testLabels.data);
      expect(tf.memory().numTensors).toBe(before);
      expect(
        Math.abs(accuracy - report.evalAccuracy),
        `accuracy ${accuracy} vs reported ${report.evalAccuracy}`,
      ).toBeLessThanOrEqual(0.005);

      // Logits, not probabilities: a softmax output would have no negative values.
      const logits = tf.tidy(() =>
        (
          loaded.predict(
            tf.tensor4d(
              Float32Array.from(testImages.data.subarray(0, 784), (p) => p / 255),
              [1, 28, 28, 1],
            ),
          ) as tf.Tensor
        ).dataSync(),
      );
      expect(Math.min(...logits)).toBeLessThan(0);

      let sum = 0;
      let sumSquares = 0;
      for (const p of trainPixels) {
        sum += p / 255;
        sumSquares += (p / 255) ** 2;
      }
      const mean = sum / trainPixels.length;
      const std = Math.sqrt(sumSquares / trainPixels.length - mean * mean);
      const meta = loaded.getUserDefinedMetadata() as Record<string, Record<string, unknown>>;
      expect(meta, 'model.json has userDefinedMetadata').toBeDefined();
      expect(meta.batchlab).toMatchObject({ version, runId: expect.stringMatching(/^[0-9a-f]{12}$/) });
      expect(meta.dataset).toMatchObject({ name: 'fashion-mnist', numClasses: 10 });
      expect(meta.dataset!.classNames).toEqual([
        ...['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat'],
        ...['Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
      ]);
      expect(meta.input).toEqual({ shape: [null, 28, 28, 1], dtype: 'float32', values: 'pixel / 255, in [0, 1]' });
      // One channel: one mean and one standard deviation.
      const { mean: means, std: stds } = meta.standardization as { mean: number[]; std: number[] };
      expect(means).toHaveLength(1);
      expect(stds).toHaveLength(1);
      expect(means[0]).toBeCloseTo(mean, 9);
      expect(stds[0]).toBeCloseTo(std, 9);
      expect(meta.standardization!.builtIn).toMatch(/first layer.*do not standardize the input/);
      expect(meta.output!.shape).toEqual([null, 10]);
      expect(meta.output!.values).toMatch(/^logits \(no softmax\)/);
      expect(meta.evaluation).toMatchObject({ split: 'test', accuracy: report.evalAccuracy, steps: 100 });
      expect(meta.runConfig).toMatchObject({
        model,
        dataset: 'fashion-mnist',
        dataDir: SUBSET_DIR,
        steps: 100,
        globalBatchSize: 64,
        seed: 3,
        optimizer: 'adam',
        saveModel: out,
      });
      for (const key of ['token', 'host', 'port', 'command']) expect(meta.runConfig).not.toHaveProperty(key);
      expect(meta.config, 'the options as the report records them').toEqual(report.config);
      expect(report.config).toMatchObject({ model });
    } finally {
      loaded.dispose();
    }
  }, 240_000);
});
