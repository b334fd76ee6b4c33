// Small numeric helpers shared by the benchmarks and the tests (which import them from here,
// since dist/ is built from bench/ but not from test/).

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
