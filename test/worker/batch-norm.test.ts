import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../shared/backend.js';
import { batchNormLayersOf, batchStatsLength } from '../../shared/batch-norm.js';
import { gatherSamples, loadDataset, type Dataset } from '../../shared/data/index.js';
import { buildModel } from '../../shared/models/index.js';
import { paramSpecsOf, readWeights, writeWeights } from '../../shared/param-layout.js';
import { EpochSampler } from '../../shared/sampler.js';
import { initialWeights } from '../../shared/weight-init.js';
import { computeMicroBatch, computeMicroBatchYielding, type GradientModel } from '../../worker/gradient.js';
import { bitDifference, expectNoLeaks } from '../support/tensors.js';

let dataset: Dataset;

beforeAll(async () => {
  dataset = await loadDataset({ name: 'synthetic', seed: 7, syntheticTrain: 256, syntheticTest: 32 });
});

function resnet(): GradientModel {
  const model = buildModel('resnet', {
    inputShape: dataset.sampleShape,
    numClasses: dataset.numClasses,
    hidden: [4, 8, 8],
    depth: 8,
  });
  writeWeights(model, initialWeights(paramSpecsOf(model), 3));
  return { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
}

function batch(seed: number, n: number) {
  const indices = new EpochSampler(dataset.train.count, seed).indicesFor(0, n);
  return gatherSamples(dataset.train, dataset.sampleShape, indices);
}

/** tf.moments over batch, height and width of what each batch-norm layer receives, in training mode. */
function referenceStats(gm: GradientModel, images: Float32Array, n: number): Float32Array {
  const layers = batchNormLayersOf(gm.model);
  const probe = tfl.model({
    inputs: gm.model.inputs,
    outputs: layers.map((l) => l.layer.input as tfl.SymbolicTensor),
  });
  const saved = layers.map((l) => [l.movingMean.read().clone(), l.movingVariance.read().clone()]);
  const flat = tf.tidy(() => {
    const x = tf.tensor(images, [n, ...gm.sampleShape]);
    const inputs = probe.apply(x, { training: true }) as tf.Tensor[];
    return tf.concat(
      inputs.flatMap((input) => {
        const { mean, variance } = tf.moments(input, [0, 1, 2]);
        return [mean, variance];
      }),
    );
  });
  const values = flat.dataSync() as Float32Array;
  flat.dispose();
  // The probe's training pass moved the shared layers' statistics: put them back.
  layers.forEach((l, i) => {
    l.movingMean.write(saved[i]![0]!);
    l.movingVariance.write(saved[i]![1]!);
  });
  return values;
}

describe.each(['wasm', 'cpu'] as const)('ghost batch norm on %s', (backend) => {
  beforeAll(async () => {
    await selectBackend(backend);
  });

  it("returns each batch-norm layer's tf.moments of the micro-batch, whatever --max-chunk says", () => {
    const gm = resnet();
    const { images, labels } = batch(3, 24);
    const reference = referenceStats(gm, images, 24);
    const layers = batchNormLayersOf(gm.model);
    expect(layers).toHaveLength(1 + 2 * 3 + 2);
    expect(reference.length).toBe(batchStatsLength(layers));
    const whole = computeMicroBatch(gm, images, labels, 1024);
    expect(bitDifference(reference, whole.batchStats!)).toBeNull();
    // A chunk smaller than the micro-batch is not taken: the ghost batch is the micro-batch.
    const small = computeMicroBatch(gm, images, labels, 5);
    expect(bitDifference(reference, small.batchStats!)).toBeNull();
    expect(bitDifference(whole.gradSum, small.gradSum)).toBeNull();
    // Variances are biased (divided by n), as tf.moments computes them, and never negative.
    expect(whole.batchStats!.every((v) => Number.isFinite(v))).toBe(true);
    gm.model.dispose();
  });

  it('gives the same statistics and bits when it yields to the event loop', async () => {
    const gm = resnet();
    const { images, labels } = batch(5, 16);
    const blocking = computeMicroBatch(gm, images, labels, 4);
    const yielding = await computeMicroBatchYielding(gm, images, labels, 4);
    expect(bitDifference(blocking.batchStats!, yielding.batchStats!)).toBeNull();
    expect(bitDifference(blocking.gradSum, yielding.gradSum)).toBeNull();
    gm.model.dispose();
  });

  it('leaves the layers their momentum and no tensors behind', () => {
    const gm = resnet();
    const { images, labels } = batch(9, 8);
    let weights = readWeights(gm.model);
    expectNoLeaks(() => {
      writeWeights(gm.model, weights);
      const r = computeMicroBatch(gm, images, labels, 8);
      weights = weights.map((w, i) => w - 0.01 * r.gradSum[i]!);
    });
    expect(batchNormLayersOf(gm.model).every((l) => l.momentum === 0.9)).toBe(true);
    gm.model.dispose();
  });

  it('returns no statistics for a model without batch norm', () => {
    const model = buildModel('cnn', { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden: [4] });
    writeWeights(model, initialWeights(paramSpecsOf(model), 3));
    const { images, labels } = batch(2, 8);
    const r = computeMicroBatch(
      { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses },
      images,
      labels,
      3,
    );
    expect(r.batchStats).toBeUndefined();
    model.dispose();
  });
});
