// Small numeric helpers shared by the benchmarks and the tests (which import them from here,
// since dist/ is built from bench/ but not from test/).

import { DEFAULT_HIDDEN } from '../shared/models/index.js';

/** Parameters of the default MLP (784 inputs, DEFAULT_HIDDEN.mlp, 10 classes): 235,146. */
export const DEFAULT_MLP_PARAMS = [784, ...DEFAULT_HIDDEN.mlp, 10].reduce(
  (sum, width, i, dims) => (i === 0 ? 0 : sum + dims[i - 1]! * width + width),
  0,
);

/** The median (the mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** max |a − b| / max |a| (the absolute difference when a is all zeros): the oracle's tolerance measure. */
export function maxRelativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`arrays differ in length: ${a.length} vs ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}

/** mulberry32 in [-1, 1): the same values on every run and backend, independent of tf's RNG. */
export function seededUniform(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}
