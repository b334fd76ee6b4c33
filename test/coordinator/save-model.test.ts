// saveLayersModel: the saved model standardizes its own input (one channel: Rescaling; colour
// images: per channel), exactly also at the border of a zero-padded convolution (where folding
// the standardization into the weights would not be); weights.bin holds the trained weights
// unchanged; saving leaves the model usable and no tensor behind.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { saveLayersModel } from '../../coordinator/save-model.js';
import { buildModel } from '../../shared/models/index.js';
import { readWeights } from '../../shared/param-layout.js';
import { loadSavedModel } from '../support/saved-model.js';
import { expectBitIdentical, maxRelativeDifference, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-save-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => tf.setBackend('cpu'));

const STATS = { mean: [0.3], std: [0.4] };
/** CIFAR-10's per-channel statistics (R, G, B), rounded. */
const RGB_STATS = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] };

/** A conv net whose first layer pads with zeros ('same'), with seeded non-zero biases. */
function paddedConvNet(channels = 1): tfl.LayersModel {
  return tfl.sequential({
    name: 'padded',
    layers: [
      tfl.layers.conv2d({
        inputShape: [6, 6, channels],
        filters: 3,
        kernelSize: 3,
        padding: 'same',
        kernelInitializer: tfl.initializers.randomNormal({ seed: 1 }),
        biasInitializer: tfl.initializers.randomNormal({ seed: 2 }),
        name: 'conv',
      }),
      tfl.layers.flatten({ name: 'flatten' }),
      tfl.layers.dense({ units: 4, kernelInitializer: tfl.initializers.glorotNormal({ seed: 3 }), name: 'logits' }),
    ],
  });
}

it('takes raw input and computes what the model computes on (x - mean) / std, at the padded border too', async () => {
  const model = paddedConvNet();
  const out = join(dir, 'padded');
  await saveLayersModel(model, out, { standardization: STATS, metadata: { note: { what: 'test' } } });
  const loaded = await loadSavedModel(out);
  try {
    const [ours, expected] = tf.tidy(() => {
      const raw = tf.randomUniform([5, 6, 6, 1], 0, 1, 'float32', 4);
      const standardized = tf.div(tf.sub(raw, STATS.mean[0]!), STATS.std[0]!);
      return [(loaded.predict(raw) as tf.Tensor).dataSync(), (model.predict(standardized) as tf.Tensor).dataSync()];
    });
    // Float32 rounding only: x * (1 / std) - mean / std is (x - mean) / std to a few ulps.
    expect(maxRelativeDifference(expected, ours)).toBeLessThan(1e-5);
    expect(loaded.getUserDefinedMetadata()).toEqual({ note: { what: 'test' } });
  } finally {
    loaded.dispose();
    model.dispose();
  }
});

it('writes the trained weights unchanged and leaves the model usable, with no tensor behind', async () => {
  const before = tf.memory().numTensors;
  const model = paddedConvNet();
  const built = tf.memory().numTensors;
  const out = join(dir, 'weights');
  await saveLayersModel(model, out, { standardization: STATS, metadata: {} });
  expect(tf.memory().numTensors).toBe(built);
  expectBitIdentical(readWeights(model), readSavedWeights(out), 'weights.bin vs the model');
  tf.tidy(() => {
    expect((model.predict(tf.zeros([1, 6, 6, 1])) as tf.Tensor).shape).toEqual([1, 4]);
  });
  model.dispose();
  // Saving shares the model's layers with the saved wrapper; disposing the model frees them all.
  expect(tf.memory().numTensors).toBe(before);
});

it('keeps the wiring of a model with branches (a ResNet: shortcuts, batch norm)', async () => {
  const model = buildModel('resnet', { inputShape: [8, 8, 3], numClasses: 4, hidden: [2, 4, 4], depth: 8 });
  const out = join(dir, 'resnet');
  await saveLayersModel(model, out, { standardization: STATS, metadata: {} });
  const loaded = await loadSavedModel(out);
  try {
    const [ours, expected] = tf.tidy(() => {
      const raw = tf.randomUniform([3, 8, 8, 3], 0, 1, 'float32', 5);
      const standardized = tf.div(tf.sub(raw, STATS.mean), STATS.std);
      return [(loaded.predict(raw) as tf.Tensor).dataSync(), (model.predict(standardized) as tf.Tensor).dataSync()];
    });
    expect(maxRelativeDifference(expected, ours)).toBeLessThan(1e-5);
  } finally {
    loaded.dispose();
    model.dispose();
  }
});

it('standardizes colour images per channel: the saved model on raw input computes the model on (x - mean[c]) / std[c]', async () => {
  const model = paddedConvNet(3);
  const out = join(dir, 'rgb');
  const before = tf.memory().numTensors;
  await saveLayersModel(model, out, { standardization: RGB_STATS, metadata: {} });
  expect(tf.memory().numTensors, 'the standardizing layer is freed with the saved wrapper').toBe(before);
  const loaded = await loadSavedModel(out);
  try {
    const first = loaded.layers[1]!;
    expect(first.name).toBe('standardize');
    expect(first.trainable).toBe(false);
    const [ours, expected, layerOut, exact] = tf.tidy(() => {
      const raw = tf.randomUniform([5, 6, 6, 3], 0, 1, 'float32', 4);
      const standardized = tf.div(tf.sub(raw, RGB_STATS.mean), RGB_STATS.std);
      const firstOnly = tfl.model({ inputs: loaded.inputs, outputs: first.output });
      return [
        (loaded.predict(raw) as tf.Tensor).dataSync(),
        (model.predict(standardized) as tf.Tensor).dataSync(),
        (firstOnly.predict(raw) as tf.Tensor).dataSync(),
        raw.dataSync(),
      ];
    });
    // The first layer against (x - mean[c]) / std[c] in double precision: float32 rounding only.
    let worst = 0;
    for (let i = 0; i < exact.length; i++) {
      const c = i % 3;
      const want = (exact[i]! - RGB_STATS.mean[c]!) / RGB_STATS.std[c]!;
      worst = Math.max(worst, Math.abs(layerOut[i]! - want));
    }
    expect(worst, 'max |standardize(x) - (x - mean) / std|').toBeLessThan(1e-6);
    expect(maxRelativeDifference(expected, ours)).toBeLessThan(1e-5);
    // weights.bin: the trained weights unchanged, then (not trainable, so last) the fixed kernel
    // 1 / std and bias -mean / std.
    const saved = readSavedWeights(out);
    const trained = readWeights(model);
    expectBitIdentical(
      trained,
      saved.subarray(0, trained.length),
      'weights.bin before the standardization vs the model',
    );
    expect(Array.from(saved.subarray(trained.length))).toEqual([
      ...RGB_STATS.std.map((s) => Math.fround(1 / s)),
      ...RGB_STATS.mean.map((m, c) => Math.fround(-m / RGB_STATS.std[c]!)),
    ]);
  } finally {
    loaded.dispose();
    model.dispose();
  }
});
