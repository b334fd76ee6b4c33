import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { selectBackend } from '../../shared/backend.js';
import { gatherSamples, loadDataset, type Dataset } from '../../shared/data/index.js';
import { buildModel, type ModelName } from '../../shared/models/index.js';
import { paramSpecsOf, readWeights, writeWeights } from '../../shared/param-layout.js';
import { EpochSampler } from '../../shared/sampler.js';
import { initialWeights } from '../../shared/weight-init.js';
import { computeMicroBatch, computeMicroBatchYielding, type GradientModel } from '../../worker/gradient.js';
import { referenceGradient as reference } from '../support/gradient-reference.js';
import { expectNoLeaks, maxRelativeDifference } from '../support/tensors.js';

let dataset: Dataset;

beforeAll(async () => {
  dataset = await loadDataset({ name: 'synthetic', seed: 7, syntheticTrain: 512, syntheticTest: 64 });
});

function setup(name: ModelName, hidden: number[]) {
  const model = buildModel(name, { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden });
  return withWeights(model);
}

function withWeights(model: tfl.LayersModel): GradientModel {
  writeWeights(model, initialWeights(paramSpecsOf(model), 3));
  return { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
}

/** Spies on the engine's gradient computation: tf.variableGrads goes through it, the dense fast path does not. */
function spyOnGradients() {
  return vi.spyOn(tf.engine(), 'gradients');
}

function batch(seed: number, n: number) {
  return gatherSamples(
    dataset.train,
    dataset.sampleShape,
    new EpochSampler(dataset.train.count, seed).indicesFor(0, n),
  );
}

type ModelMaker = (inputShape: number[], classes: number) => tfl.LayersModel;

/** Dense-only models the fast path should recognise, beyond the stock MLP. */
const DENSE_VARIANTS: Record<string, ModelMaker> = {
  'no bias, relu logits': (inputShape, classes) =>
    tfl.sequential({
      layers: [
        tfl.layers.flatten({ inputShape }),
        tfl.layers.dense({ units: 12, activation: 'relu', useBias: false }),
        tfl.layers.dense({ units: classes, activation: 'relu' }),
      ],
    }),
  'functional, linear hidden layer': (inputShape, classes) => {
    const input = tfl.input({ shape: inputShape });
    const flat = tfl.layers.flatten().apply(input) as tfl.SymbolicTensor;
    const h = tfl.layers.dense({ units: 9 }).apply(flat) as tfl.SymbolicTensor;
    const out = tfl.layers.dense({ units: classes }).apply(h) as tfl.SymbolicTensor;
    return tfl.model({ inputs: input, outputs: out });
  },
  'single dense layer': (inputShape, classes) =>
    tfl.sequential({ layers: [tfl.layers.flatten({ inputShape }), tfl.layers.dense({ units: classes })] }),
};

/** Models the fast path must leave to the generic one. */
const GENERIC_ONLY: Record<string, ModelMaker> = {
  cnn: (inputShape, classes) => buildModel('cnn', { inputShape, numClasses: classes, hidden: [4, 4] }),
  'tanh activation': (inputShape, classes) =>
    tfl.sequential({
      layers: [
        tfl.layers.flatten({ inputShape }),
        tfl.layers.dense({ units: 8, activation: 'tanh' }),
        tfl.layers.dense({ units: classes }),
      ],
    }),
  'dropout between dense layers': (inputShape, classes) =>
    tfl.sequential({
      layers: [
        tfl.layers.flatten({ inputShape }),
        tfl.layers.dense({ units: 8, activation: 'relu' }),
        tfl.layers.dropout({ rate: 0 }),
        tfl.layers.dense({ units: classes }),
      ],
    }),
  'frozen first layer': (inputShape, classes) => {
    const model = tfl.sequential({
      layers: [
        tfl.layers.flatten({ inputShape }),
        tfl.layers.dense({ units: 8, activation: 'relu' }),
        tfl.layers.dense({ units: classes }),
      ],
    });
    model.layers[1]!.trainable = false;
    return model;
  },
};

describe.each(['wasm', 'cpu'] as const)('micro-batch gradients on %s', (backend) => {
  beforeAll(async () => {
    await selectBackend(backend);
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  // Tolerance of the dense fast path against the generic one: max |a - b| / max |a| < 2e-6 over the
  // gradient (float32 sums in a different order: XNNPACK vs the naive kernel), loss sums within
  // 1e-6 relative (the fast path sums the loss in float64), identical correct counts.
  it.each([
    [1, 1024],
    [7, 1024],
    [32, 1024],
    [100, 1024],
    [100, 13],
    [64, 64],
    [65, 32],
  ])('the dense fast path matches the generic gradient (batch %i, maxChunk %i)', (n, maxChunk) => {
    const gm = setup('mlp', [32, 16]);
    const { images, labels } = batch(n + maxChunk, n);
    const gradients = spyOnGradients();
    const fast = computeMicroBatch(gm, images, labels, maxChunk);
    expect(gradients).not.toHaveBeenCalled();
    const want = reference(gm, images, labels);
    expect(fast.samples).toBe(n);
    expect(fast.gradSum.length).toBe(want.gradSum.length);
    expect(maxRelativeDifference(want.gradSum, fast.gradSum)).toBeLessThan(2e-6);
    expect(Math.abs(fast.lossSum - want.lossSum) / Math.abs(want.lossSum)).toBeLessThan(1e-6);
    expect(fast.correct).toBe(want.correct);
    const sq = want.gradSum.reduce((acc, v) => acc + (v / n) * (v / n), 0);
    expect(Math.abs(fast.sqNorm - sq) / sq).toBeLessThan(1e-5);
    gm.model.dispose();
  });

  // Chunks of 40, 40 and 16 run the first two layers' forward transposed; 96 only the first; 160 neither.
  it.each([
    [96, 40],
    [96, 96],
    [160, 160],
  ])(
    'the dense fast path matches the generic gradient on the default 784-256-128-10 MLP (batch %i, maxChunk %i)',
    (n, maxChunk) => {
      const gm = setup('mlp', [256, 128]);
      const { images, labels } = batch(11, n);
      const fast = computeMicroBatch(gm, images, labels, maxChunk);
      const want = reference(gm, images, labels);
      expect(maxRelativeDifference(want.gradSum, fast.gradSum)).toBeLessThan(2e-6);
      expect(Math.abs(fast.lossSum - want.lossSum) / Math.abs(want.lossSum)).toBeLessThan(1e-6);
      expect(fast.correct).toBe(want.correct);
      gm.model.dispose();
    },
  );

  it.each(Object.keys(DENSE_VARIANTS))('the dense fast path handles a %s model', (variant) => {
    const gm = withWeights(DENSE_VARIANTS[variant]!(dataset.sampleShape, dataset.numClasses));
    const { images, labels } = batch(5, 24);
    const gradients = spyOnGradients();
    const fast = computeMicroBatch(gm, images, labels, 10);
    expect(gradients).not.toHaveBeenCalled();
    const want = reference(gm, images, labels);
    expect(maxRelativeDifference(want.gradSum, fast.gradSum)).toBeLessThan(2e-6);
    expect(Math.abs(fast.lossSum - want.lossSum) / Math.abs(want.lossSum)).toBeLessThan(1e-6);
    expect(fast.correct).toBe(want.correct);
    gm.model.dispose();
  });

  it.each(Object.keys(GENERIC_ONLY))('a %s model takes the generic path', (variant) => {
    const gm = withWeights(GENERIC_ONLY[variant]!(dataset.sampleShape, dataset.numClasses));
    const { images, labels } = batch(6, 12);
    const gradients = spyOnGradients();
    const result = computeMicroBatch(gm, images, labels, 5);
    expect(gradients).toHaveBeenCalledTimes(3);
    gradients.mockRestore();
    const want = reference(gm, images, labels);
    expect(maxRelativeDifference(want.gradSum, result.gradSum)).toBeLessThan(1e-5);
    expect(result.correct).toBe(want.correct);
    gm.model.dispose();
  });

  it('leaves samples or classes of the wrong size to the generic path, which rejects them', () => {
    const gm = setup('mlp', [8]);
    const { images, labels } = batch(10, 6);
    expect(() => computeMicroBatch({ ...gm, numClasses: gm.numClasses - 1 }, images, labels, 4)).toThrow();
    expect(() => computeMicroBatch(gm, images.subarray(0, images.length - 6), labels, 4)).toThrow();
    gm.model.dispose();
  });

  // Weights made on cpu, computed on wasm: on cpu there is no other backend for them to live on.
  const crossBackend = 'the dense fast path reads weights that still live on another backend';
  it.skipIf(backend !== 'wasm')(
    backend === 'wasm'
      ? crossBackend
      : `${crossBackend} (skipped on cpu: the weights are made on cpu, so only wasm reads them across backends)`,
    async () => {
      await tf.setBackend('cpu');
      const gm = setup('mlp', [24, 12]);
      await tf.setBackend(backend);
      const { images, labels } = batch(12, 10);
      const fast = computeMicroBatch(gm, images, labels, 10);
      const want = reference(gm, images, labels);
      expect(maxRelativeDifference(want.gradSum, fast.gradSum)).toBeLessThan(2e-6);
      gm.model.dispose();
    },
  );

  it('the dense fast path follows new weights and leaves no tensors behind', () => {
    const gm = setup('mlp', [32, 16]);
    const { images, labels } = batch(8, 30);
    let weights = readWeights(gm.model);
    expectNoLeaks(() => {
      writeWeights(gm.model, weights);
      const r = computeMicroBatch(gm, images, labels, 8);
      // The reference reads the weights just written: a stale plan or cached transpose would differ.
      expect(maxRelativeDifference(reference(gm, images, labels).gradSum, r.gradSum)).toBeLessThan(2e-6);
      weights = weights.map((w, i) => w - 0.01 * r.gradSum[i]!);
    });
    gm.model.dispose();
  });

  // The cnn takes the generic path; the MLP's chunks of 130 and 10 run its forward plain and transposed.
  it.each([
    ['cnn', [4, 4], 20, 6],
    ['mlp', [256, 128], 140, 130],
  ] as const)(
    'gives the same bits when it yields between chunks (%s %j, batch %i, maxChunk %i)',
    async (name, hidden, n, maxChunk) => {
      const gm = setup(name, [...hidden]);
      const { images, labels } = batch(9, n);
      const blocking = computeMicroBatch(gm, images, labels, maxChunk);
      const yielding = await computeMicroBatchYielding(gm, images, labels, maxChunk);
      expect(Buffer.from(yielding.gradSum.buffer).equals(Buffer.from(blocking.gradSum.buffer))).toBe(true);
      expect(yielding.lossSum).toBe(blocking.lossSum);
      expect(yielding.correct).toBe(blocking.correct);
      gm.model.dispose();
    },
  );

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
      const part = computeMicroBatch(
        gm,
        images.subarray(start * sampleSize, (start + 16) * sampleSize),
        labels.subarray(start, start + 16),
        1024,
      );
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

  it.each([
    ['mlp', [32]],
    ['cnn', [4, 8]],
  ] as const)(
    '%s: writes into a reused output buffer, whatever it held, with the same bits as a fresh array',
    async (name, hidden) => {
      const gm = setup(name, [...hidden]);
      const indices = new EpochSampler(dataset.train.count, 5).indicesFor(0, 24);
      const { images, labels } = gatherSamples(dataset.train, dataset.sampleShape, indices);
      const fresh = computeMicroBatch(gm, images, labels, 10);
      const out = new Float32Array(fresh.gradSum.length).fill(Number.NaN);
      const reused = await computeMicroBatchYielding(gm, images, labels, 10, out);
      expect(reused.gradSum).toBe(out);
      expect(Buffer.from(out.buffer).equals(Buffer.from(fresh.gradSum.buffer))).toBe(true);
      // A buffer of the wrong size is not used.
      expect(computeMicroBatch(gm, images, labels, 10, new Float32Array(3)).gradSum.length).toBe(fresh.gradSum.length);
      gm.model.dispose();
    },
  );

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
