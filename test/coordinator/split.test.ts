import { describe, expect, it } from 'vitest';
import { splitMicroBatches, updateThroughput, type SplitWorker } from '../../coordinator/split.js';
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

/** Workers with no throughput measured yet and no memory limit. */
function unmeasured(ids: number[]): SplitWorker[] {
  return ids.map((workerId) => ({ workerId, samplesPerSecond: null, maxMicroBatches: null }));
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
  ])(
    'gives each of %i micro-batches to exactly one of %i workers in contiguous shares differing by at most one',
    (k, n) => {
      const microBatches = cutMicroBatches(k * 4, 4);
      const workerIds = Array.from({ length: n }, (_, j) => 100 + j * 3);
      const sizes = checkPlan(microBatches, workerIds, splitMicroBatches(microBatches, unmeasured(workerIds)));
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(k);
    },
  );

  it('leaves workers beyond the micro-batch count without work', () => {
    const microBatches = cutMicroBatches(12, 4);
    const workerIds = [1, 2, 3, 4, 5, 6, 7];
    const plan = splitMicroBatches(microBatches, unmeasured(workerIds));
    checkPlan(microBatches, workerIds, plan);
    expect(plan.size).toBe(3);
    expect([...plan.values()].every((share) => share.length === 1)).toBe(true);
  });

  it('returns an empty plan when there are no workers', () => {
    expect(splitMicroBatches(cutMicroBatches(10, 4), []).size).toBe(0);
  });

  it('returns an empty plan when there are no micro-batches', () => {
    expect(splitMicroBatches([], unmeasured([1, 2, 3])).size).toBe(0);
  });

  it('hands the first block to the first worker in the list, whatever its id', () => {
    const microBatches = cutMicroBatches(16, 4);
    const plan = splitMicroBatches(microBatches, unmeasured([9, 2]));
    expect(plan.get(9)!.map((s) => s.id)).toEqual([0, 1]);
    expect(plan.get(2)!.map((s) => s.id)).toEqual([2, 3]);
  });

  it('splits a list of re-issued micro-batches with gaps in their ids', () => {
    const all = cutMicroBatches(40, 4);
    const orphans = [all[1]!, all[4]!, all[5]!, all[8]!, all[9]!];
    const workerIds = [3, 5];
    const plan = splitMicroBatches(orphans, unmeasured(workerIds));
    checkPlan(orphans, workerIds, plan);
  });
});

describe('splitMicroBatches by throughput', () => {
  const w = (
    workerId: number,
    samplesPerSecond: number | null,
    maxMicroBatches: number | null = null,
  ): SplitWorker => ({ workerId, samplesPerSecond, maxMicroBatches });
  const sizesOf = (plan: Map<number, unknown[]>, ids: number[]): number[] => ids.map((id) => plan.get(id)?.length ?? 0);

  it('is the equal split until some worker is measured', () => {
    const microBatches = cutMicroBatches(64, 8);
    expect(sizesOf(splitMicroBatches(microBatches, [w(1, null), w(2, null)], 'throughput'), [1, 2])).toEqual([4, 4]);
  });

  it('shares micro-batches in proportion to samples/s, in contiguous id order', () => {
    const microBatches = cutMicroBatches(16 * 4, 4);
    const plan = splitMicroBatches(microBatches, [w(1, 3000), w(2, 1000)], 'throughput');
    expect(sizesOf(plan, [1, 2])).toEqual([12, 4]);
    expect(plan.get(1)!.map((s) => s.id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(plan.get(2)!.map((s) => s.id)).toEqual([12, 13, 14, 15]);
  });

  it('keeps at least one micro-batch for a slower worker so it stays measured', () => {
    // 6 micro-batches, the third worker 5x slower: by throughput alone it would get none ([3, 3, 0]);
    // its one micro-batch takes 5 units against the others' 3, within FAR_SLOWER (2) times their step.
    const microBatches = cutMicroBatches(6 * 16, 16);
    const plan = splitMicroBatches(microBatches, [w(1, 400), w(2, 400), w(3, 80)], 'throughput');
    expect(sizesOf(plan, [1, 2, 3])).toEqual([2, 3, 1]);
  });

  it("gives a far slower worker nothing: its one micro-batch would outlast twice the others' whole step", () => {
    const microBatches = cutMicroBatches(8 * 4, 4);
    const sizes = (rate: number): number[] =>
      sizesOf(splitMicroBatches(microBatches, [w(1, 1000), w(2, rate)], 'throughput'), [1, 2]);
    // The other's step is 8 micro-batches at 1000/s: 8 ms. One micro-batch at 64/s takes 15.6 ms
    // (within 2 x 8 ms): one; at 60/s 16.7 ms: none. By throughput alone both would get none.
    expect(sizes(64)).toEqual([7, 1]);
    expect(sizes(60)).toEqual([8, 0]);
    const plan = splitMicroBatches(microBatches, [w(1, 10_000), w(2, 1)], 'throughput');
    expect([...plan.keys()]).toEqual([1]);
    // 1000x slower, as `--debug-slowdown 1,1000`: nothing, and the split still covers every micro-batch.
    const three = splitMicroBatches(microBatches, [w(1, 1000), w(2, 1), w(3, 1000)], 'throughput');
    expect(sizesOf(three, [1, 2, 3])).toEqual([4, 0, 4]);
    expect([...three.values()].flat().map((m) => m.id)).toEqual(microBatches.map((m) => m.id));
  });

  it('counts an unmeasured worker as the mean of the measured ones', () => {
    const microBatches = cutMicroBatches(12, 1);
    expect(
      sizesOf(splitMicroBatches(microBatches, [w(1, 100), w(2, 300), w(3, null)], 'throughput'), [1, 2, 3]),
    ).toEqual([2, 6, 4]);
  });

  it('caps a worker at its memory limit and gives the excess to the others', () => {
    const microBatches = cutMicroBatches(20, 1);
    const sizes = sizesOf(
      splitMicroBatches(microBatches, [w(1, 1000, 3), w(2, 100), w(3, 100)], 'throughput'),
      [1, 2, 3],
    );
    expect(sizes).toEqual([3, 9, 8]);
  });

  it('exceeds the caps only when every worker is full, and still covers every micro-batch', () => {
    const microBatches = cutMicroBatches(10, 1);
    const sizes = sizesOf(splitMicroBatches(microBatches, [w(1, 100, 2), w(2, 100, 3)], 'throughput'), [1, 2]);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(10);
    expect(sizes[0]).toBeGreaterThanOrEqual(2);
    expect(sizes[1]).toBeGreaterThanOrEqual(3);
  });

  it.each([
    [5, [1, 2, 3]],
    [17, [5, 0.5, 2, 9]],
    [64, [1, 1, 1, 1, 1, 1, 7]],
    [3, [1, 10, 100, 1000]],
  ])('covers all %i micro-batches exactly once for rates %j', (k, rates) => {
    const microBatches = cutMicroBatches(k * 2, 2);
    const workers = rates.map((r, j) => w(j + 1, r));
    const plan = splitMicroBatches(microBatches, workers, 'throughput');
    const ids = [...plan.values()].flat().map((s) => s.id);
    expect(ids).toEqual(microBatches.map((m) => m.id));
  });

  it('updates the throughput EMA from replies and ignores empty ones', () => {
    expect(updateThroughput(null, 100, 50)).toBe(2000);
    expect(updateThroughput(2000, 100, 100)).toBeCloseTo(2000 + 0.3 * (1000 - 2000));
    expect(updateThroughput(2000, 100, 0)).toBe(2000);
    expect(updateThroughput(null, 0, 10)).toBeNull();
  });
});
