import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../shared/backend.js';
import { gatherSamples, loadDataset, type Dataset } from '../../shared/data/index.js';
import { buildModel, type ModelName } from '../../shared/models/index.js';
import { paramSpecsOf, readWeights, writeWeights } from '../../shared/param-layout.js';
import { EpochSampler } from '../../shared/sampler.js';
import { initialWeights } from '../../shared/weight-init.js';
import { computeMicroBatch, computeMicroBatchYielding } from '../../worker/gradient.js';
import { expectNoLeaks, maxRelativeDifference } from '../support/tensors.js';

let dataset: Dataset;

beforeAll(async () => {
  dataset = await loadDataset({ name: 'synthetic', seed: 7, syntheticTrain: 512, syntheticTest: 64 });
});

function setup(name: ModelName, hidden: number[]) {
  const model = buildModel(name, { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden });
  writeWeights(model, initialWeights(paramSpecsOf(model), 3));
  return { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
}

describe.each(['wasm', 'cpu'] as const)('micro-batch gradients on %s', (backend) => {
  beforeAll(async () => {
    await selectBackend(backend);
  });

  it.each([
    ['mlp', [32, 16]],
    ['cnn', [4, 8]],
  ] as const)('averaging micro-batch gradient sums equals the gradient of the whole batch (%s)', (name, hidden) => {
    const gm = setup(name, [...hidden]);
    const indices = new EpochSampler(dataset.train.count, 1).indicesFor(0, 48);
    const { images, labels } = gatherSamples(dataset.train, dataset.sampleShape, indices);
    const whole = computeMicroBatch(gm, images, labels, 1024);

    // Three micro-batches of 16, as three workers would compute them.
    const sum = new Float64Array(whole.gradSum.length);
    let lossSum = 0;
    let correct = 0;
    const sampleSize = images.length / labels.length;
    for (let start = 0; start < 48; start += 16) {
      const part = computeMicroBatch(gm, images.subarray(start * sampleSize, (start + 16) * sampleSize), labels.subarray(start, start + 16), 1024);
      part.gradSum.forEach((v, i) => (sum[i]! += v));
      lossSum += part.lossSum;
      correct += part.correct;
    }
    const averaged = sum.map((v) => v / 48);
    const reference = whole.gradSum.map((v) => v / 48);
    expect(maxRelativeDifference(reference, averaged)).toBeLessThan(1e-5);
    expect(lossSum).toBeCloseTo(whole.lossSum, 3);
    expect(correct).toBe(whole.correct);
    gm.model.dispose();
  });

  it('accumulating chunks of maxChunk samples gives the unchunked gradient', () => {
    const gm = setup('mlp', [32]);
    const indices = new EpochSampler(dataset.train.count, 2).indicesFor(0, 40);
    const { images, labels } = gatherSamples(dataset.train, dataset.sampleShape, indices);
    const whole = computeMicroBatch(gm, images, labels, 1024);
    const chunked = computeMicroBatch(gm, images, labels, 7);
    expect(maxRelativeDifference(whole.gradSum, chunked.gradSum)).toBeLessThan(1e-5);
    expect(chunked.samples).toBe(40);
    expect(chunked.sqNorm).toBeCloseTo(whole.sqNorm, 6);
    gm.model.dispose();
  });

  it('gives the same bits when it yields to the event loop between chunks', async () => {
    const gm = setup('mlp', [32]);
    const indices = new EpochSampler(dataset.train.count, 4).indicesFor(0, 40);
    const { images, labels } = gatherSamples(dataset.train, dataset.sampleShape, indices);
    const blocking = computeMicroBatch(gm, images, labels, 7);
    const yielding = await computeMicroBatchYielding(gm, images, labels, 7);
    expect(Buffer.from(yielding.gradSum.buffer).equals(Buffer.from(blocking.gradSum.buffer))).toBe(true);
    expect(yielding.lossSum).toBe(blocking.lossSum);
    gm.model.dispose();
  });

  it('reports the squared norm of the mean gradient and a plausible loss', () => {
    const gm = setup('mlp', [16]);
    const { images, labels } = gatherSamples(dataset.train, dataset.sampleShape, [0, 1, 2, 3, 4, 5, 6, 7]);
    const r = computeMicroBatch(gm, images, labels, 1024);
    const sq = r.gradSum.reduce((acc, v) => acc + (v / 8) * (v / 8), 0);
    expect(r.sqNorm).toBeCloseTo(sq, 8);
    // Cross-entropy at initialization is near ln(10) per sample.
    expect(r.lossSum / 8).toBeGreaterThan(0.5);
    expect(r.lossSum / 8).toBeLessThan(10);
    gm.model.dispose();
  });

  it('leaves no tensors behind across steps of write-weights, compute and read-back', () => {
    const gm = setup('cnn', [4, 4]);
    const { images, labels } = gatherSamples(dataset.train, dataset.sampleShape, [5, 9, 11, 13]);
    let weights = readWeights(gm.model);
    expectNoLeaks(() => {
      writeWeights(gm.model, weights);
      const r = computeMicroBatch(gm, images, labels, 3);
      weights = weights.map((w, i) => w - 0.01 * r.gradSum[i]!);
    });
    gm.model.dispose();
    expect(tf.getBackend()).toBe(backend);
  });
});
