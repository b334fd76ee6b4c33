import { describe, expect, it } from 'vitest';
import { EpochSampler } from '../../shared/sampler.js';

/** True when `a` holds every index 0..n-1 exactly once. */
function isPermutationOf(a: ArrayLike<number>, n: number): boolean {
  if (a.length !== n) return false;
  const seen = new Uint8Array(n);
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    if (!Number.isInteger(x) || x < 0 || x >= n || seen[x]) return false;
    seen[x] = 1;
  }
  return true;
}

function concat(parts: Uint32Array[]): Uint32Array {
  const out = new Uint32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

describe('EpochSampler', () => {
  it('gives the same indices for the same seed, on separate instances', () => {
    const a = new EpochSampler(1000, 1234);
    const b = new EpochSampler(1000, 1234);
    for (const step of [0, 1, 7, 31])
      expect(Array.from(a.indicesFor(step, 64))).toEqual(Array.from(b.indicesFor(step, 64)));
  });

  it('gives different indices for different seeds, including neighbouring ones', () => {
    const base = Array.from(new EpochSampler(1000, 1).indicesFor(0, 100));
    for (const seed of [0, 2, 3, 1_000_003]) {
      expect(Array.from(new EpochSampler(1000, seed).indicesFor(0, 100))).not.toEqual(base);
    }
  });

  it('makes every epoch a permutation that visits each dataset index exactly once', () => {
    const sampler = new EpochSampler(997, 7);
    for (const epoch of [0, 1, 2, 10]) expect(isPermutationOf(sampler.permutation(epoch), 997)).toBe(true);
  });

  it('covers each index exactly once over the steps of one epoch', () => {
    const sampler = new EpochSampler(600, 3);
    const steps = Array.from({ length: 600 / 40 }, (_, s) => sampler.indicesFor(s, 40));
    expect(isPermutationOf(concat(steps), 600)).toBe(true);
  });

  it('shuffles differently in each epoch', () => {
    const sampler = new EpochSampler(500, 11);
    const epochs = [0, 1, 2, 3].map((e) => Array.from(sampler.permutation(e)));
    for (let i = 0; i < epochs.length; i++) {
      for (let j = i + 1; j < epochs.length; j++) expect(epochs[i]).not.toEqual(epochs[j]);
    }
    expect(epochs[0]).not.toEqual(Array.from({ length: 500 }, (_, i) => i));
  });

  it('returns micro-batch slices that concatenate to the whole step', () => {
    const sampler = new EpochSampler(103, 5);
    const B = 48;
    // Steps 0..5 include batches that straddle epoch boundaries (103 is not a multiple of 48).
    for (let step = 0; step < 6; step++) {
      const whole = sampler.indicesFor(step, B);
      const cuts = [0, 16, 17, 32, 48];
      const parts = cuts.slice(0, -1).map((start, i) => sampler.indicesFor(step, B, start, cuts[i + 1]));
      expect(Array.from(concat(parts))).toEqual(Array.from(whole));
    }
  });

  it('fills a batch that straddles an epoch boundary with the end of one epoch and the start of the next', () => {
    const sampler = new EpochSampler(10, 99);
    const e0 = Array.from(sampler.permutation(0));
    const e1 = Array.from(sampler.permutation(1));
    // B = 4: step 2 takes stream positions 8..11 = epoch 0 positions 8, 9 then epoch 1 positions 0, 1.
    expect(Array.from(sampler.indicesFor(2, 4))).toEqual([e0[8], e0[9], e1[0], e1[1]]);
    // B = 4: step 4 takes positions 16..19 = epoch 1 positions 6..9; step 5 then starts epoch 2.
    expect(Array.from(sampler.indicesFor(4, 4))).toEqual(e1.slice(6, 10));
    expect(sampler.indicesFor(5, 4)[0]).toBe(sampler.permutation(2)[0]);
  });

  it('gives the same indices whatever order steps are asked for in', () => {
    const forward = new EpochSampler(50, 21);
    const wanted = [0, 3, 9, 14, 30];
    const expected = wanted.map((s) => Array.from(forward.indicesFor(s, 16)));
    const scattered = new EpochSampler(50, 21);
    for (const i of [4, 0, 3, 1, 2]) expect(Array.from(scattered.indicesFor(wanted[i]!, 16))).toEqual(expected[i]);
  });

  it('gives the same micro-batch indices whichever sampler (worker) computes them', () => {
    const B = 32;
    const coordinator = new EpochSampler(200, 8);
    const worker = new EpochSampler(200, 8);
    // The worker only ever sees its own slice of step 12.
    expect(Array.from(worker.indicesFor(12, B, 20, 32))).toEqual(
      Array.from(coordinator.indicesFor(12, B)).slice(20, 32),
    );
  });

  it('says which epoch each position of a micro-batch is drawn in, the indices as indicesFor gives them', () => {
    const sampler = new EpochSampler(50, 4);
    // Step 2 of batch 24 holds positions 48..71: 48 and 49 of epoch 0, then 50..71 of epoch 1.
    const { indices, epochs } = sampler.samplesFor(2, 24, 1, 10);
    expect(Array.from(indices)).toEqual(Array.from(sampler.indicesFor(2, 24, 1, 10)));
    expect(Array.from(epochs)).toEqual([0, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(Array.from(sampler.samplesFor(9, 24).epochs)).toEqual(Array(24).fill(4));
  });

  it('reports the fractional epoch reached after a number of steps', () => {
    const sampler = new EpochSampler(1000, 1);
    expect(sampler.epochAfter(0, 64)).toBe(0);
    expect(sampler.epochAfter(25, 40)).toBe(1);
    expect(sampler.epochAfter(10, 25)).toBe(0.25);
  });

  it('refuses a dataset size that is not a positive integer', () => {
    for (const size of [0, -3, 2.5, Number.NaN]) expect(() => new EpochSampler(size, 1)).toThrow(RangeError);
  });
});
