// Gradients, evaluation and memory on the webgpu backend, against the cpu backend. Here the
// adapter is Mesa's llvmpipe (software Vulkan, from bookworm-backports); on a GPU node the same
// tests run on the GPU. Without an adapter Dawn accepts, the tests are skipped with the reason;
// under CI=true that is a failure (.ci/run installs the driver).
//
// Tolerance: GPU kernels sum in another order than the cpu backend (tiled matMul, workgroup
// reductions), so results agree within float32 rounding, not bit for bit: max |a − b| / max |a|
// below 1e-4 over the gradient sum, loss sums within 1e-4 relative. Measured here on llvmpipe:
// 2.5e-7 to 2.8e-7 (MLP) and 0.9e-6 to 1.1e-6 (CNN) over the gradient, at most 8.2e-8 on the loss.

import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type BackendChoice } from '../../shared/backend.js';
import { gatherSamples, loadDataset, type Dataset } from '../../shared/data/index.js';
import { evaluateModel } from '../../shared/evaluate.js';
import { buildModel, type ModelName } from '../../shared/models/index.js';
import { paramSpecsOf, writeWeights } from '../../shared/param-layout.js';
import { EpochSampler } from '../../shared/sampler.js';
import { initialWeights } from '../../shared/weight-init.js';
import { computeMicroBatch, computeMicroBatchYielding, type GradientModel } from '../../worker/gradient.js';
import { probeMaxChunk, startMemoryMeter } from '../../worker/memory.js';
import { referenceGradient } from '../support/gradient-reference.js';
import { maxRelativeDifference } from '../support/tensors.js';

const TOLERANCE = 1e-4;
const inCi = process.env.CI === 'true';

let webgpu: BackendChoice | null = null;
let unavailable: string | null = null;
try {
  webgpu = await selectBackend('webgpu');
} catch (error) {
  unavailable = (error as Error).message;
}
const runs = webgpu !== null || inCi;
const title = (what: string): string =>
  webgpu
    ? `${what} (${webgpu.device})`
    : `${what} (skipped: no WebGPU adapter here: ${unavailable}${inCi ? '; CI=true requires one' : ''})`;

let dataset: Dataset;
beforeAll(async () => {
  dataset = await loadDataset({ name: 'synthetic', seed: 7, syntheticTrain: 512, syntheticTest: 500 });
});
afterAll(async () => {
  if (webgpu) await tf.setBackend('webgpu');
});

function setup(name: ModelName, hidden: number[]): GradientModel {
  const model = buildModel(name, { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden });
  writeWeights(model, initialWeights(paramSpecsOf(model), 3));
  return { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
}

function batch(seed: number, n: number) {
  const sampler = new EpochSampler(dataset.train.count, seed);
  return gatherSamples(dataset.train, dataset.sampleShape, sampler.indicesFor(0, n, 0, n));
}

/**
 * The reference gradient on the cpu backend: written independently of worker/gradient.ts (its
 * chunking and its reads), so a fault there cannot hide by appearing on both sides.
 */
async function cpuReference(gm: GradientModel, images: Float32Array, labels: Int32Array) {
  await tf.setBackend('cpu');
  return referenceGradient(gm, images, labels);
}

/** The same computation on the cpu backend (reference) and on webgpu. */
async function onBoth<T>(compute: () => Promise<T> | T): Promise<{ cpu: T; gpu: T }> {
  await tf.setBackend('cpu');
  const cpu = await compute();
  await tf.setBackend('webgpu');
  const gpu = await compute();
  return { cpu, gpu };
}

describe('the webgpu backend', () => {
  it.skipIf(!runs).each([
    ['mlp', 32, 32, [64, 32]],
    ['mlp', 48, 16, [64, 32]],
    ['cnn', 16, 16, [32]],
    ['cnn', 24, 8, [32]],
  ] as const)(
    title('%s gradient sums of %i samples in chunks of %i agree with the cpu backend within 1e-4'),
    async (name, n, chunk, hidden) => {
      expect(
        unavailable,
        'CI=true: the webgpu tests need a Vulkan driver (mesa-vulkan-drivers from bookworm-backports)',
      ).toBeNull();
      const gm = setup(name, [...hidden]);
      const { images, labels } = batch(11, n);
      const cpu = await cpuReference(gm, images, labels);
      await tf.setBackend('webgpu');
      const gpu = await computeMicroBatchYielding(gm, images, labels, chunk);
      expect(maxRelativeDifference(cpu.gradSum, gpu.gradSum)).toBeLessThan(TOLERANCE);
      expect(Math.abs(gpu.lossSum - cpu.lossSum) / Math.abs(cpu.lossSum)).toBeLessThan(TOLERANCE);
      expect(gpu.correct).toBe(cpu.correct);
      expect(gpu.samples).toBe(n);
      gm.model.dispose();
    },
    60_000,
  );

  it.skipIf(!runs)(title('gives the same bits for the same micro-batch, computed twice'), async () => {
    expect(unavailable).toBeNull();
    await tf.setBackend('webgpu');
    const gm = setup('mlp', [64, 32]);
    const { images, labels } = batch(5, 32);
    const first = await computeMicroBatchYielding(gm, images, labels, 16);
    const again = await computeMicroBatchYielding(gm, images, labels, 16);
    expect(Buffer.from(again.gradSum.buffer).equals(Buffer.from(first.gradSum.buffer))).toBe(true);
    gm.model.dispose();
  });

  it.skipIf(!runs)(
    title('says why the synchronous computation cannot run on it, instead of returning wrong values'),
    async () => {
      expect(unavailable).toBeNull();
      await tf.setBackend('webgpu');
      const gm = setup('mlp', [16]);
      const { images, labels } = batch(5, 8);
      const before = tf.memory().numTensors;
      expect(() => computeMicroBatch(gm, images, labels, 8)).toThrow(/OffscreenCanvas|synchronous/i);
      expect(tf.memory().numTensors).toBe(before);
      gm.model.dispose();
    },
  );

  it.skipIf(!runs)(
    title('--max-chunk auto probes on it (asynchronous reads), under a budget and up to the micro-batch'),
    async () => {
      expect(unavailable).toBeNull();
      await tf.setBackend('webgpu');
      startMemoryMeter(null);
      const gm = setup('mlp', [64, 32]);
      const { images, labels } = batch(5, 16);
      const tensors = tf.memory().numTensors;
      const free = await probeMaxChunk(gm, images, labels, 16, null, {
        backend: 'webgpu',
        memory: 'its device memory',
        emulated: false,
      });
      expect(free.maxChunk).toBe(16);
      expect(free.tried.map((t) => t.chunk)).toEqual([1, 2, 4, 8, 16]);
      // --memory-limit just below the peak of 4 samples: 4 is refused, 2 or 1 is picked.
      const budget = free.tried[2]!.peakTensorBytes! - 1;
      const limited = await probeMaxChunk(gm, images, labels, 16, budget, {
        backend: 'webgpu',
        memory: 'a test budget',
        emulated: true,
      });
      expect(limited.tried.map((t) => t.chunk)).toEqual([1, 2, 4]);
      expect(limited.tried[2]!.peakTensorBytes).toBeNull();
      expect(limited.maxChunk).toBeLessThan(4);
      expect(limited.stoppedBy).toBe('allocation-failure');
      expect(tf.memory().numTensors).toBe(tensors);
      gm.model.dispose();
    },
  );

  it.skipIf(!runs)(title('evaluates a split like the cpu backend'), async () => {
    expect(unavailable).toBeNull();
    const gm = setup('cnn', [32]);
    const { cpu, gpu } = await onBoth(() =>
      evaluateModel(gm.model, dataset.test, dataset.sampleShape, dataset.numClasses, 128),
    );
    expect(gpu.samples).toBe(500);
    expect(gpu.accuracy).toBe(cpu.accuracy);
    expect(Math.abs(gpu.loss - cpu.loss) / cpu.loss).toBeLessThan(TOLERANCE);
    gm.model.dispose();
  });

  it.skipIf(!runs)(
    title('holds no more tensors or GPU memory after 200 micro-batches than after the first 10'),
    async () => {
      expect(unavailable).toBeNull();
      await tf.setBackend('webgpu');
      const gm = setup('mlp', [64, 32]);
      const out = new Float32Array(gm.model.countParams());
      const step = async (i: number): Promise<void> => {
        const { images, labels } = batch(i, 32);
        await computeMicroBatchYielding(gm, images, labels, 16, out);
      };
      for (let i = 0; i < 10; i++) await step(i);
      const warm = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
      for (let i = 10; i < 200; i++) await step(i);
      const after = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
      expect(after.numTensors).toBe(warm.numTensors);
      expect(after.numDataBuffers).toBe(warm.numDataBuffers);
      expect(after.numBytes).toBe(warm.numBytes);
      expect(after.numBytesInGPU).toBe(warm.numBytesInGPU);
      // The buffer manager pools GPU buffers: after warm-up it reuses them instead of growing.
      expect(warm.numBytesAllocatedInGPU, 'tf.memory() reports GPU bytes on webgpu').toBeTypeOf('number');
      expect(after.numBytesAllocatedInGPU!).toBeLessThanOrEqual(warm.numBytesAllocatedInGPU!);
      gm.model.dispose();
    },
    120_000,
  );
});
