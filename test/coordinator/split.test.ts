import { describe, expect, it } from 'vitest';
import { splitMicroBatches } from '../../coordinator/split.js';
import { cutMicroBatches } from '../../shared/micro-batches.js';
import type { MicroBatchSpec } from '../../shared/protocol.js';

describe('cutMicroBatches', () => {
  it('refuses a micro-batch size below 1 instead of looping forever', () => {
    expect(() => cutMicroBatches(8, 0)).toThrow(RangeError);
  });

  it('cuts 10 samples into micro-batches of 4 as [0,4) [4,8) [8,10)', () => {
    expect(cutMicroBatches(10, 4)).toEqual([
      { id: 0, start: 0, end: 4 },
      { id: 1, start: 4, end: 8 },
      { id: 2, start: 8, end: 10 },
    ]);
  });

  it.each([
    [1, 1],
    [7, 1],
    [64, 16],
    [65, 16],
    [100, 7],
    [5, 8],
    [1024, 1000],
  ])('cuts B=%i with m=%i into ceil(B/m) micro-batches with ids 0..k-1 covering [0,B) exactly', (B, m) => {
    const specs = cutMicroBatches(B, m);
    const k = Math.ceil(B / m);
    expect(specs).toHaveLength(k);
    expect(specs.map((s) => s.id)).toEqual(Array.from({ length: k }, (_, i) => i));
    expect(specs[0]!.start).toBe(0);
    expect(specs[k - 1]!.end).toBe(B);
    for (let i = 1; i < k; i++) expect(specs[i]!.start).toBe(specs[i - 1]!.end);
    // Every micro-batch holds m samples, except the last, which holds the remainder (1..m).
    for (let i = 0; i < k - 1; i++) expect(specs[i]!.end - specs[i]!.start).toBe(m);
    const last = specs[k - 1]!.end - specs[k - 1]!.start;
    expect(last).toBe(B - (k - 1) * m);
    expect(last).toBeGreaterThan(0);
    expect(last).toBeLessThanOrEqual(m);
  });

  it('gives the same micro-batch the same positions every time it is cut', () => {
    expect(cutMicroBatches(100, 7)).toEqual(cutMicroBatches(100, 7));
  });
});

/** Checks the properties every plan must have, and returns the share sizes in worker order. */
function checkPlan(microBatches: MicroBatchSpec[], workerIds: number[], plan: Map<number, MicroBatchSpec[]>): number[] {
  const handedOut = workerIds.flatMap((w) => plan.get(w) ?? []);
  // Every micro-batch goes to exactly one worker, and blocks follow worker order.
  expect(handedOut).toEqual(microBatches);
  for (const key of plan.keys()) expect(workerIds).toContain(key);
  for (const share of plan.values()) {
    expect(share.length).toBeGreaterThan(0);
    // Contiguous: consecutive micro-batches of the list.
    const first = microBatches.indexOf(share[0]!);
    share.forEach((spec, i) => expect(spec).toBe(microBatches[first + i]));
  }
  const sizes = workerIds.map((w) => plan.get(w)?.length ?? 0);
  expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
  return sizes;
}

describe('splitMicroBatches', () => {
  it.each([
    [1, 1],
    [8, 1],
    [8, 2],
    [8, 3],
    [10, 4],
    [17, 5],
    [64, 7],
    [3, 3],
  ])('gives each of %i micro-batches to exactly one of %i workers in contiguous shares differing by at most one', (k, n) => {
    const microBatches = cutMicroBatches(k * 4, 4);
    const workerIds = Array.from({ length: n }, (_, j) => 100 + j * 3);
    const sizes = checkPlan(microBatches, workerIds, splitMicroBatches(microBatches, workerIds));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(k);
  });

  it('leaves workers beyond the micro-batch count without work', () => {
    const microBatches = cutMicroBatches(12, 4);
    const workerIds = [1, 2, 3, 4, 5, 6, 7];
    const plan = splitMicroBatches(microBatches, workerIds);
    checkPlan(microBatches, workerIds, plan);
    expect(plan.size).toBe(3);
    expect([...plan.values()].every((share) => share.length === 1)).toBe(true);
  });

  it('returns an empty plan when there are no workers', () => {
    expect(splitMicroBatches(cutMicroBatches(10, 4), []).size).toBe(0);
  });

  it('returns an empty plan when there are no micro-batches', () => {
    expect(splitMicroBatches([], [1, 2, 3]).size).toBe(0);
  });

  it('hands the first block to the first worker in the list, whatever its id', () => {
    const microBatches = cutMicroBatches(16, 4);
    const plan = splitMicroBatches(microBatches, [9, 2]);
    expect(plan.get(9)!.map((s) => s.id)).toEqual([0, 1]);
    expect(plan.get(2)!.map((s) => s.id)).toEqual([2, 3]);
  });

  it('splits a list of re-issued micro-batches with gaps in their ids', () => {
    const all = cutMicroBatches(40, 4);
    const orphans = [all[1]!, all[4]!, all[5]!, all[8]!, all[9]!];
    const workerIds = [3, 5];
    const plan = splitMicroBatches(orphans, workerIds);
    checkPlan(orphans, workerIds, plan);
  });
});
