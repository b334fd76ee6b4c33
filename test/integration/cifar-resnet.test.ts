// CIFAR-10, a ResNet-20 with batch norm and crop-flip augmentation, end to end on generated files:
// `batchlab local` with 2 workers trains it, reports a finite loss, an evaluation and the
// workers' peak memory, and saves a model that plain tfjs-layers loads and that, fed the test
// records' bytes / 255 in HWC, reproduces the reported evaluation (which needs the moving
// statistics in it); and a run started from that saved model with --init-from evaluates as the
// saved run did (which needs the moving statistics loaded too, not only the weights).

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeTestFile, writeCifarFiles } from '../support/cifar-files.js';
import { runCli } from '../support/cli.js';
import { loadSavedModel } from '../support/saved-model.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const root = mkdtempSync(join(tmpdir(), 'batchlab-cifar-resnet-'));
const env = { XDG_CACHE_HOME: join(root, 'cache') };
afterAll(() => rmSync(root, { recursive: true, force: true }));
beforeAll(() => tf.setBackend('cpu'));

// 5 files × 128 records: 640 training images, 5 epochs' worth of 20 steps of 128 (each step
// draws from all of them); a test split of 200.
const data = join(root, 'c10');
const { files } = writeCifarFiles(data, { name: 'cifar10', trainPerFile: 128, test: 200, seed: 11 });
const saved = join(root, 'resnet20');
const reportPath = join(root, 'resnet20.json');

/** The fields of the --report JSON read here. */
interface Report {
  steps: number;
  samples: number;
  workers: number;
  microBatchSize: number;
  initialLoss: number;
  finalLoss: number;
  evalAccuracy: number;
  evalLoss: number;
  peakMemoryBytes: number;
  config: Record<string, unknown>;
}

describe('local --dataset cifar10 --model resnet --depth 20 --augment crop-flip, 2 workers', () => {
  let report: Report;

  beforeAll(async () => {
    const started = performance.now();
    // Exactly the command a user would type, with the default micro-batch (min(32, B) = 32: the
    // ghost batch whose statistics each worker computes in one pass), plus outputs and no metrics port.
    const result = await runCli(
      [
        ...['local', '--workers', '2', '--dataset', 'cifar10', '--data-dir', data, '--model', 'resnet'],
        ...['--depth', '20', '--augment', 'crop-flip', '--global-batch', '128', '--steps', '20'],
        ...['--metrics-port', 'off', '--report', reportPath, '--save-model', saved],
      ],
      env,
      900_000,
    );
    console.log(
      `ResNet-20 on CIFAR-10, 2 workers, 20 steps of 128: ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    expect(result.code, result.stderr).toBe(0);
    report = JSON.parse(readFileSync(reportPath, 'utf8'));
  }, 900_000);

  it('trains: finite loss, an evaluation, peak memory measured, the configuration recorded', () => {
    expect(report.steps).toBe(20);
    expect(report.samples).toBe(20 * 128);
    expect(report.workers).toBe(2);
    expect(report.microBatchSize).toBe(32);
    expect(Number.isFinite(report.finalLoss)).toBe(true);
    expect(report.finalLoss).toBeLessThan(report.initialLoss);
    // 10 classes: chance is 0.1; the generated classes differ in colour and stripe.
    expect(report.evalAccuracy).toBeGreaterThan(0.5);
    expect(Number.isFinite(report.evalLoss)).toBe(true);
    expect(report.peakMemoryBytes).toBeGreaterThan(0);
    expect(report.config).toMatchObject({ model: 'resnet', depth: 20, augment: 'crop-flip', dataset: 'cifar10' });
  });

  it('saves a model that tf.loadLayersModel loads and that, on raw HWC pixels / 255, reproduces the evaluation', async () => {
    const model = await loadSavedModel(saved);
    try {
      const { pixels, labels } = decodeTestFile(files['test_batch.bin']!);
      const [predicted, loss] = tf.tidy(() => {
        const logits = model.predict(tf.tensor4d(pixels, [labels.length, 32, 32, 3])) as tf.Tensor2D;
        const oneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), 10);
        const ce = tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1)));
        return [tf.argMax(logits, 1).dataSync(), ce.dataSync()[0]!] as const;
      });
      const accuracy = labels.filter((label, i) => predicted[i] === label).length / labels.length;
      expect(Math.abs(accuracy - report.evalAccuracy), `${accuracy} vs ${report.evalAccuracy}`).toBeLessThanOrEqual(
        0.01,
      );
      // The loss too: the accuracy of a well-separated test split could survive wrong moving
      // statistics, its loss could not.
      const evalLoss = report.evalLoss;
      expect(Math.abs(loss - evalLoss), `loss ${loss} vs reported ${evalLoss}`).toBeLessThanOrEqual(
        1e-4 + 1e-3 * evalLoss,
      );
    } finally {
      model.dispose();
    }
  });

  it('--init-from the saved ResNet starts from its weights and its moving statistics: it evaluates as saved', async () => {
    // The saved model.json without its weights and with every batch norm's momentum set to 1 (a
    // model file of the user's own), so that the one step this run must make leaves the moving
    // statistics where --init-from put them; at --lr 1e-30 it leaves the weights too. Its
    // evaluation is then the saved run's, to the bit, only if --init-from loaded the moving
    // statistics (--steps is at least 1, and the first evaluation follows the first step).
    const json = JSON.parse(readFileSync(join(saved, 'model.json'), 'utf8'));
    const layers = json.modelTopology.config.layers as { class_name: string; config: { momentum?: number } }[];
    const batchNorms = layers.filter((l) => l.class_name === 'BatchNormalization');
    expect(batchNorms.length).toBe(21);
    for (const layer of batchNorms) layer.config.momentum = 1;
    mkdirSync(join(root, 'frozen-stats'));
    const modelPath = join(root, 'frozen-stats', 'model.json');
    writeFileSync(modelPath, JSON.stringify({ ...json, weightsManifest: undefined }));

    const out = join(root, 'init-from');
    const result = await runCli(
      [
        ...['local', '--workers', '1', '--dataset', 'cifar10', '--data-dir', data, '--augment', 'crop-flip'],
        ...['--model', modelPath, '--init-from', saved, '--global-batch', '128'],
        ...['--steps', '1', '--optimizer', 'sgd', '--momentum', '0', '--lr', '1e-30'],
        ...['--metrics-port', 'off', '--report', `${out}.json`, '--save-model', out],
      ],
      env,
      600_000,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain(`--init-from ${saved}: starting at step 0 from its weights`);
    const run = JSON.parse(readFileSync(`${out}.json`, 'utf8'));
    expect(run.initFrom).toBe(saved);
    expect([run.evalAccuracy, run.evalLoss]).toEqual([report.evalAccuracy, report.evalLoss]);
    // The weights and the moving statistics (weights.bin holds both), bit for bit.
    expectBitIdentical(readSavedWeights(saved), readSavedWeights(out), 'init-from run vs the saved ResNet');
  }, 600_000);
});
