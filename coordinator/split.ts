// Assigning a step's micro-batches to live workers (docs/ARCHITECTURE.md, "Split"). Micro-batch ids and
// their sample ranges never change, so the split only decides *who* computes each one: the
// reduction, in id order, gives the same bits whatever the split. Workers get contiguous blocks
// in worker-id order; `throughput` sizes the blocks in proportion to each worker's measured
// samples/s (an EMA), capped by the micro-batches it says it can hold.

import type { MicroBatchSpec } from '../shared/protocol.js';

export type BalanceMode = 'throughput' | 'equal';
export const BALANCE_MODES: readonly BalanceMode[] = ['throughput', 'equal'];

/** What the split needs to know about a worker. */
export interface SplitWorker {
  workerId: number;
  /** Measured samples per second of compute (EMA); null until measured. */
  samplesPerSecond: number | null;
  /** Most micro-batches it takes per step (its memory limit); null: no limit. */
  maxMicroBatches: number | null;
}

/**
 * A worker left without micro-batches by the proportional split gets one anyway, unless one
 * micro-batch would take it more than this many times the others' step (it would only slow the step).
 */
export const FAR_SLOWER = 2;

/** Smoothing of the per-worker throughput EMA: weight of the newest measurement. */
export const THROUGHPUT_EMA_ALPHA = 0.3;

/** Folds one micro-batch's measured rate into a worker's EMA (null: first measurement). */
export function updateThroughput(previous: number | null, samples: number, computeMs: number): number | null {
  if (!(computeMs > 0) || !(samples > 0)) return previous;
  const rate = (samples * 1000) / computeMs;
  return previous === null ? rate : previous + THROUGHPUT_EMA_ALPHA * (rate - previous);
}

/**
 * Splits `microBatches` over `workers` (in the given order) in contiguous blocks. `equal`: block
 * sizes differ by at most one. `throughput`: sizes in proportion to each worker's samples/s
 * (unmeasured workers count as the mean of the measured ones; equal until any is measured),
 * each worker getting at least one micro-batch while there are enough (but for a worker more
 * than FAR_SLOWER times slower at one micro-batch than the others at their share), and no worker more than
 * its `maxMicroBatches` unless every worker is full (then the rest is shared by throughput).
 * Workers whose block is empty are left out of the plan.
 */
export function splitMicroBatches(
  microBatches: readonly MicroBatchSpec[],
  workers: readonly SplitWorker[],
  mode: BalanceMode = 'equal',
): Map<number, MicroBatchSpec[]> {
  const counts =
    mode === 'throughput'
      ? proportionalCounts(microBatches.length, workers)
      : equalCounts(microBatches.length, workers.length);
  const plan = new Map<number, MicroBatchSpec[]>();
  let start = 0;
  workers.forEach((worker, j) => {
    const share = microBatches.slice(start, start + counts[j]!);
    start += counts[j]!;
    if (share.length > 0) plan.set(worker.workerId, share);
  });
  return plan;
}

function equalCounts(k: number, n: number): number[] {
  return Array.from({ length: n }, (_, j) => Math.floor(((j + 1) * k) / n) - Math.floor((j * k) / n));
}

/** Largest-remainder apportionment of `k` items by `weights` (ties go to the lower index). */
function apportion(k: number, weights: readonly number[]): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  if (k === 0 || weights.length === 0) return weights.map(() => 0);
  if (!(total > 0)) return equalCounts(k, weights.length);
  const ideal = weights.map((w) => (k * w) / total);
  const counts = ideal.map(Math.floor);
  let left = k - counts.reduce((a, b) => a + b, 0);
  const order = ideal.map((x, j) => ({ j, frac: x - Math.floor(x) })).sort((a, b) => b.frac - a.frac || a.j - b.j);
  for (let i = 0; left > 0; i = (i + 1) % order.length, left--) counts[order[i]!.j]! += 1;
  return counts;
}

function proportionalCounts(k: number, workers: readonly SplitWorker[]): number[] {
  const n = workers.length;
  if (n === 0) return [];
  const measured = workers.map((w) => w.samplesPerSecond).filter((r): r is number => r !== null && r > 0);
  const fallback = measured.length > 0 ? measured.reduce((a, b) => a + b, 0) / measured.length : 1;
  const rates = workers.map((w) =>
    w.samplesPerSecond !== null && w.samplesPerSecond > 0 ? w.samplesPerSecond : fallback,
  );
  const caps = workers.map((w) => w.maxMicroBatches ?? Infinity);
  const counts: number[] = workers.map(() => 0);
  let left = k;
  // By throughput, filling capped workers up to their cap and re-sharing the excess.
  while (left > 0) {
    const open = workers.map((_, j) => counts[j]! < caps[j]!);
    if (!open.some(Boolean)) break;
    const extra = apportion(
      left,
      rates.map((r, j) => (open[j] ? r : 0)),
    );
    let placed = 0;
    extra.forEach((e, j) => {
      const take = Math.min(e, caps[j]! - counts[j]!);
      counts[j]! += take;
      placed += take;
    });
    left -= placed;
    if (placed === 0) break;
  }
  // Every worker is at its cap: share what is left by throughput regardless (the step must run).
  if (left > 0) apportion(left, rates).forEach((e, j) => (counts[j]! += e));
  // At least one each while there are enough, so every worker keeps being measured and one that
  // was slow once (warm-up, a noisy neighbour) is not starved for good; except a far slower
  // worker, whose one micro-batch would take longer than the others' whole step twice over.
  if (k >= n) {
    const others = Math.max(0, ...counts.map((c, j) => c / rates[j]!));
    for (let j = 0; j < n; j++) {
      if (counts[j]! > 0 || caps[j]! < 1) continue;
      if (1 / rates[j]! > FAR_SLOWER * others) continue;
      const donor = counts.indexOf(Math.max(...counts));
      if (counts[donor]! <= 1) break;
      counts[donor]! -= 1;
      counts[j] = 1;
    }
  }
  return counts;
}
