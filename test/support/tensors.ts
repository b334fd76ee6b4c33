// Tensor helpers shared by tests: relative closeness of flat arrays and a leak check.

import { maxRelativeDifference as maxRelative } from '../../bench/support.js';
import * as tf from '@tensorflow/tfjs-core';
import { expect } from 'vitest';

/** max |a − b| / max |a|: the tolerance measure the oracle uses. */
export function maxRelativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  return maxRelative(a, b);
}

/** Asserts that running `fn` `times` more times (after one warm-up) leaves no extra tensors. */
export function expectNoLeaks(fn: () => void, times = 3): void {
  fn();
  const before = tf.memory().numTensors;
  for (let i = 0; i < times; i++) fn();
  expect(tf.memory().numTensors).toBe(before);
}
