// Tensor helpers shared by tests: relative closeness of flat arrays, bit-for-bit comparison of
// saved weights, and a leak check.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { maxRelativeDifference as maxRelative } from '../../bench/support.js';
import * as tf from '@tensorflow/tfjs-core';
import { expect } from 'vitest';
import { createRandom } from '../../shared/data/seeded-random.js';

/** max |a − b| / max |a|: the tolerance measure the oracle uses. */
export function maxRelativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  return maxRelative(a, b);
}

/** The flat float32 weights of a model saved with --save-model (its weights.bin), in a fresh buffer. */
export function readSavedWeights(modelDir: string): Float32Array {
  const bytes = readFileSync(join(modelDir, 'weights.bin'));
  if (bytes.byteLength % 4 !== 0)
    throw new Error(`${modelDir}/weights.bin has ${bytes.byteLength} bytes, not a whole number of float32 values`);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

const bitsOf = (x: Float32Array): Uint32Array =>
  new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));

/**
 * Null when `actual` has exactly the bits of `expected` (so -0 ≠ +0, and every NaN payload
 * counts); otherwise how they differ: how many values, the first index with both values, and the
 * max relative difference.
 */
export function bitDifference(expected: Float32Array, actual: Float32Array): string | null {
  if (expected.length !== actual.length) return `${actual.length} values where ${expected.length} were expected`;
  const a = bitsOf(expected);
  const b = bitsOf(actual);
  let first = -1;
  let count = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  if (count === 0) return null;
  return (
    `${count} of ${a.length} values differ in their bits; the first at index ${first}: ${expected[first]} expected, ${actual[first]} got; ` +
    `max relative difference ${maxRelative(expected, actual).toExponential(3)}`
  );
}

/** Asserts that `actual` is bit-for-bit `expected` and that there is something to compare. */
export function expectBitIdentical(expected: Float32Array, actual: Float32Array, what: string): void {
  expect(expected.length, `${what}: no values to compare`).toBeGreaterThan(0);
  const why = bitDifference(expected, actual);
  // The whole explanation goes into the message: vitest shortens long values in its diff.
  expect(why === null, `${what}: not bit-identical: ${why}`).toBe(true);
}

/** Asserts that running `fn` `times` more times (after one warm-up) leaves no extra tensors. */
export function expectNoLeaks(fn: () => void, times = 3): void {
  fn();
  const before = tf.memory().numTensors;
  for (let i = 0; i < times; i++) fn();
  expect(tf.memory().numTensors).toBe(before);
}

/** The bytes of `a` (a view, not a copy), for byte-for-byte comparisons. */
export function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Float32 values of both signs spread over magnitudes 1e-20..1e20, so summation order changes results. */
export function mixedMagnitudes(n: number, seed: number): Float32Array {
  const random = createRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const sign = random.next() < 0.5 ? -1 : 1;
    out[i] = sign * (1 + random.next()) * 10 ** Math.floor(random.next() * 41 - 20);
  }
  return out;
}
