import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../../shared/backend.js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hasCode } from '../../shared/errors.js';
import { gatherSamples, loadDataset, type Dataset } from '../../shared/data/index.js';
import { buildModel } from '../../shared/models/index.js';
import { paramSpecsOf, writeWeights } from '../../shared/param-layout.js';
import { EpochSampler } from '../../shared/sampler.js';
import { initialWeights } from '../../shared/weight-init.js';
import { computeMicroBatch, computeMicroBatchYielding, type GradientModel } from '../../worker/gradient.js';
import {
  measured,
  peakTensorBytesOf as peakOf,
  PROBE_MARGIN,
  probeMaxChunk,
  releaseAfterFailure,
  startMemoryMeter,
} from '../../worker/memory.js';
import { outOfMemory } from '../../worker/worker.js';

let dataset: Dataset;

beforeAll(async () => {
  dataset = await loadDataset({ name: 'synthetic', seed: 7, syntheticTrain: 256, syntheticTest: 16 });
});

afterEach(() => startMemoryMeter(null));

function setup(name: 'mlp' | 'cnn' | 'resnet', hidden: number[]): GradientModel {
  const model = buildModel(name, { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden, depth: 8 });
  writeWeights(model, initialWeights(paramSpecsOf(model), 3));
  return { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
}

function batch(n: number) {
  return gatherSamples(dataset.train, dataset.sampleShape, new EpochSampler(dataset.train.count, 4).indicesFor(0, n));
}

describe.each(['cpu', 'wasm'] as const)('worker memory on %s', (backend) => {
  const describe_ = { backend, memory: 'a test budget', emulated: true };
  beforeAll(async () => {
    await selectBackend(backend);
  });

  it('measures the peak of live tensor bytes during a micro-batch: above the weights, growing with the chunk, no tensors left', async () => {
    startMemoryMeter(null);
    const gm = setup('cnn', [4, 8]);
    const { images, labels } = batch(32);
    const weightBytes = tf.memory().numBytes;
    const small = await measured(() => computeMicroBatchYielding(gm, images, labels, 4));
    const large = await measured(() => computeMicroBatchYielding(gm, images, labels, 32));
    expect(small.memory.peakTensorBytes).toBeGreaterThan(weightBytes);
    expect(large.memory.peakTensorBytes).toBeGreaterThan(small.memory.peakTensorBytes);
    expect(small.memory.tensorBytes).toBe(weightBytes);
    expect(large.memory.tensors).toBe(small.memory.tensors);
    expect(large.memory.rssBytes).toBeGreaterThan(0);
    gm.model.dispose();
  });

  it('auto finds the largest doubling whose peak stays within the budget less the margin, leaving no tensors', async () => {
    startMemoryMeter(null);
    const gm = setup('cnn', [4, 8]);
    const { images, labels } = batch(64);
    // The peaks of each power of two, measured without a budget.
    const peaks = new Map<number, number>();
    for (const c of [1, 2, 4, 8, 16, 32, 64]) {
      const run = () => computeMicroBatch(gm, images.subarray(0, (c * images.length) / 64), labels.subarray(0, c), c);
      peaks.set(c, peakOf(run));
    }
    // A budget between the peak of 8 and 16 samples (16 fails, 8 fits within the margin).
    const budget = Math.floor((peaks.get(16)! + peaks.get(8)! / (1 - PROBE_MARGIN)) / 2);
    expect(peaks.get(8)!).toBeLessThan((1 - PROBE_MARGIN) * budget);
    expect(peaks.get(16)!).toBeGreaterThan(budget);
    const tensors = tf.memory().numTensors;
    const probe = await probeMaxChunk(gm, images, labels, 64, budget, describe_);
    expect(probe.maxChunk).toBe(8);
    expect(probe.stoppedBy).toBe('allocation-failure');
    expect(probe.tried.map((t) => t.chunk)).toEqual([1, 2, 4, 8, 16]);
    expect(tf.memory().numTensors).toBe(tensors);
    // Without a budget it stops at the largest micro-batch.
    const free = await probeMaxChunk(gm, images, labels, 48, null, describe_);
    expect(free.maxChunk).toBe(48);
    expect(free.tried.map((t) => t.chunk)).toEqual([1, 2, 4, 8, 16, 32, 48]);
    expect(free.stoppedBy).toBe('micro-batch');
    // After a refused allocation the same computation gives the same bits as before it.
    const again = computeMicroBatch(gm, images, labels, 8);
    const before = computeMicroBatch(gm, images, labels, 8);
    expect(Buffer.from(again.gradSum.buffer).equals(Buffer.from(before.gradSum.buffer))).toBe(true);
    expect(tf.memory().numTensors).toBe(tensors);
    gm.model.dispose();
  });

  it('a budget below one sample is OUT_OF_MEMORY naming the backend, the memory and what one sample needs', async () => {
    startMemoryMeter(null);
    const gm = setup('mlp', [32]);
    const { images, labels } = batch(16);
    const tensors = tf.memory().numTensors;
    const run = () => computeMicroBatch(gm, images.subarray(0, images.length / 16), labels.subarray(0, 1), 1);
    const one = peakOf(run);
    let error: unknown;
    try {
      await probeMaxChunk(gm, images, labels, 16, tf.memory().numBytes + 8, describe_);
    } catch (e) {
      error = e;
    }
    expect(hasCode(error, 'OUT_OF_MEMORY')).toBe(true);
    expect((error as Error).message).toContain(
      `backend ${backend} with a test budget cannot hold one sample: computing it needs ${one} bytes of tensors (`,
    );
    expect(tf.memory().numTensors).toBe(tensors);
    gm.model.dispose();
  });

  it("a budget auto chose itself is never exceeded to measure what did not fit: it says 'more than' the budget", async () => {
    startMemoryMeter(null);
    const gm = setup('mlp', [32]);
    const { images, labels } = batch(16);
    const tensors = tf.memory().numTensors;
    const budget = tf.memory().numBytes + 8;
    let error: unknown;
    try {
      await probeMaxChunk(gm, images, labels, 16, budget, { ...describe_, emulated: false });
    } catch (e) {
      error = e;
    }
    expect(hasCode(error, 'OUT_OF_MEMORY')).toBe(true);
    expect((error as Error).message).toContain(
      `backend ${backend} with a test budget cannot hold one sample: computing it needs more than ${budget} bytes of tensors (`,
    );
    expect(tf.memory().numTensors).toBe(tensors);
    gm.model.dispose();
  });

  it.each([
    ['mlp', [32], 'a chunk of 4 samples (--max-chunk 4)', '; lower --max-chunk, or give --max-chunk auto'],
    [
      'resnet',
      [4, 4, 4],
      'one micro-batch of 8 samples (batch norm: computed in one pass)',
      "; lower the coordinator's --micro-batch",
    ],
  ] as const)(
    'a %s micro-batch over --memory-limit is OUT_OF_MEMORY naming what did not fit and what to lower',
    async (name, hidden, what, hint) => {
      const gm = setup(name, [...hidden]);
      const { images, labels } = batch(8);
      const limit = tf.memory().numBytes + 8;
      startMemoryMeter(limit);
      let failure: unknown;
      try {
        await measured(() => computeMicroBatchYielding(gm, images, labels, 4));
      } catch (e) {
        failure = e;
      }
      releaseAfterFailure();
      expect(failure).toBeDefined();
      const error = await outOfMemory(failure, backend, { memoryLimit: limit }, { maxChunk: 4, gm }, images, labels);
      expect(hasCode(error, 'OUT_OF_MEMORY')).toBe(true);
      expect(error.message).toMatch(
        new RegExp(
          `^backend ${backend} with --memory-limit ${limit} bytes cannot hold ${what.replace(/[()-]/g, '\\$&')}: computing it needs \\d+ bytes of tensors \\(.*\\)${hint.replace(/[()-]/g, '\\$&')}$`,
        ),
      );
      gm.model.dispose();
    },
  );
});
