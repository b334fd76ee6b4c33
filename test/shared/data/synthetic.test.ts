// The seeded PRNG and the synthetic dataset: determinism, shape, standardization, learnability.

import { describe, expect, it } from 'vitest';
import type { Dataset } from '../../../shared/data/dataset.js';
import { createRandom, deriveSeed } from '../../../shared/data/seeded-random.js';
import { makeSyntheticDataset } from '../../../shared/data/synthetic.js';

const small = (seed: number, train = 600, test = 200): Dataset => makeSyntheticDataset({ seed, train, test });

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Trains a linear softmax classifier with minibatch SGD and returns its test accuracy. */
function linearProbeAccuracy(ds: Dataset, steps: number, batch: number, lr: number): number {
  const d = ds.sampleShape.reduce((a, b) => a * b, 1);
  const c = ds.numClasses;
  const w = new Float64Array(d * c);
  const b = new Float64Array(c);
  const z = new Float64Array(c);
  const random = createRandom(99);
  const logits = (x: Float32Array, offset: number) => {
    for (let k = 0; k < c; k++) {
      let s = b[k]!;
      for (let j = 0; j < d; j++) s += x[offset + j]! * w[j * c + k]!;
      z[k] = s;
    }
  };
  for (let step = 0; step < steps; step++) {
    const gw = new Float64Array(d * c);
    const gb = new Float64Array(c);
    for (let n = 0; n < batch; n++) {
      const i = Math.floor(random.next() * ds.train.count);
      logits(ds.train.images, i * d);
      const max = Math.max(...z);
      let sum = 0;
      for (let k = 0; k < c; k++) sum += z[k] = Math.exp(z[k]! - max);
      for (let k = 0; k < c; k++) {
        const g = z[k]! / sum - (k === ds.train.labels[i] ? 1 : 0);
        gb[k]! += g;
        for (let j = 0; j < d; j++) gw[j * c + k]! += g * ds.train.images[i * d + j]!;
      }
    }
    for (let j = 0; j < w.length; j++) w[j]! -= (lr * gw[j]!) / batch;
    for (let k = 0; k < c; k++) b[k]! -= (lr * gb[k]!) / batch;
  }
  let correct = 0;
  for (let i = 0; i < ds.test.count; i++) {
    logits(ds.test.images, i * d);
    let best = 0;
    for (let k = 1; k < c; k++) if (z[k]! > z[best]!) best = k;
    if (best === ds.test.labels[i]) correct++;
  }
  return correct / ds.test.count;
}

describe('seeded random', () => {
  it('repeats the same sequence for the same seed and stays in [0, 1)', () => {
    const a = createRandom(42);
    const b = createRandom(42);
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(Array.from({ length: 1000 }, () => b.next())).toEqual(xs);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(createRandom(43).next()).not.toBe(xs[0]);
  });

  it('draws normals with mean about 0 and standard deviation about 1', () => {
    const random = createRandom(7);
    const n = 20000;
    const xs = Array.from({ length: n }, () => random.normal());
    const mean = xs.reduce((s, x) => s + x, 0) / n;
    const std = Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / n);
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(std - 1)).toBeLessThan(0.03);
  });

  it('derives distinct sub-stream seeds', () => {
    const seeds = new Set([0, 1, 2].flatMap((stream) => [1, 2].map((seed) => deriveSeed(seed, stream))));
    expect(seeds.size).toBe(6);
  });

  it('refuses a non-integer seed', () => {
    expect(() => createRandom(1.5)).toThrow(RangeError);
  });
});

describe('synthetic dataset', () => {
  it('is identical, bit for bit, for the same seed', () => {
    const a = small(1);
    const b = small(1);
    expect(bytesOf(a.train.images).equals(bytesOf(b.train.images))).toBe(true);
    expect(bytesOf(a.test.images).equals(bytesOf(b.test.images))).toBe(true);
    expect(a.train.labels).toEqual(b.train.labels);
    expect(a.test.labels).toEqual(b.test.labels);
    expect(a.fingerprint).toBe(b.fingerprint);
  });

  it('differs across seeds, including its fingerprint', () => {
    const a = small(1);
    const b = small(2);
    expect(bytesOf(a.train.images).equals(bytesOf(b.train.images))).toBe(false);
    expect(a.fingerprint).not.toBe(b.fingerprint);
    expect(a.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it('keeps the same test samples when only the training size changes', () => {
    const a = small(3, 300, 100);
    const b = small(3, 500, 100);
    expect(a.test.labels).toEqual(b.test.labels);
    expect(a.fingerprint).not.toBe(b.fingerprint);
  });

  it('describes itself with the MNIST shape, balanced labels and its seed', () => {
    const ds = small(5, 1000, 200);
    expect(ds).toMatchObject({
      name: 'synthetic',
      sampleShape: [28, 28, 1],
      numClasses: 10,
      source: 'synthetic(seed=5)',
    });
    expect(ds.train.count).toBe(1000);
    expect(ds.train.images.length).toBe(1000 * 784);
    const counts = new Array(10).fill(0);
    for (const label of ds.train.labels) counts[label]++;
    expect(counts).toEqual(new Array(10).fill(100));
  });

  it('defaults to 10000 training and 2000 test samples with standardized training pixels', () => {
    const ds = makeSyntheticDataset({ seed: 1 });
    expect(ds.train.count).toBe(10000);
    expect(ds.test.count).toBe(2000);
    const px = ds.train.images;
    let sum = 0;
    let squares = 0;
    for (const v of px) {
      sum += v;
      squares += v * v;
    }
    const mean = sum / px.length;
    expect(Math.abs(mean)).toBeLessThan(1e-4);
    expect(Math.sqrt(squares / px.length - mean * mean)).toBeCloseTo(1, 4);
  });

  it('is learnable well above chance by a linear classifier in 100 SGD steps', () => {
    const accuracy = linearProbeAccuracy(small(11, 2000, 500), 100, 32, 0.01);
    expect(accuracy).toBeGreaterThan(0.6);
  });

  it('refuses non-positive sizes', () => {
    expect(() => makeSyntheticDataset({ seed: 1, train: 0 })).toThrow('train size must be a positive integer, got 0');
  });
});
