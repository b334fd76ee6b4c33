// Tensor helpers shared by tests: relative closeness of flat arrays and a leak check.

import * as tf from '@tensorflow/tfjs-core';
import { expect } from 'vitest';

/** max |a − b| / max |a|: the tolerance measure the oracle uses. */
export function maxRelativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Asserts that running `fn` `times` more times (after one warm-up) leaves no extra tensors. */
export function expectNoLeaks(fn: () => void, times = 3): void {
  fn();
  const before = tf.memory().numTensors;
  for (let i = 0; i < times; i++) fn();
  expect(tf.memory().numTensors).toBe(before);
}
