// A small seeded pseudo-random generator (mulberry32 with Box-Muller normals), so generated
// data is identical, bit for bit, for the same seed.

/** A deterministic random stream. */
export interface SeededRandom {
  /** Uniform in `[0, 1)`, a multiple of 2^-32. */
  next(): number;
  /** Standard normal (mean 0, standard deviation 1). */
  normal(): number;
}

/**
 * Creates a deterministic random stream from a 32-bit seed (mulberry32).
 * Seeds are taken modulo 2^32; the same seed always gives the same sequence.
 * @throws RangeError when `seed` is not a finite integer
 */
export function createRandom(seed: number): SeededRandom {
  if (!Number.isInteger(seed)) throw new RangeError(`createRandom: seed must be an integer, got ${seed}`);
  let state = seed >>> 0;
  let spare: number | undefined;
  const nextUint32 = (): number => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const next = (): number => nextUint32() / 4294967296;
  return {
    next,
    normal(): number {
      if (spare !== undefined) {
        const z = spare;
        spare = undefined;
        return z;
      }
      const u1 = 1 - next(); // (0, 1]: keeps log finite
      const u2 = next();
      const r = Math.sqrt(-2 * Math.log(u1));
      const theta = 2 * Math.PI * u2;
      spare = r * Math.sin(theta);
      return r * Math.cos(theta);
    },
  };
}

/**
 * Derives an independent seed for sub-stream `stream` of `seed` (a murmur3 finalizer mix),
 * so that e.g. changing the number of training samples does not change the test samples.
 */
export function deriveSeed(seed: number, stream: number): number {
  let h = (Math.trunc(seed) ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
