// Assigning a step's micro-batches to live workers. Equal contiguous shares for now; the
// throughput-proportional split (DESIGN.md "split") replaces this function without touching callers.

import type { MicroBatchSpec } from '../shared/protocol.js';

/**
 * Splits `microBatches` over `workerIds` in contiguous blocks whose sizes differ by at most one.
 * Workers beyond the micro-batch count get nothing. Order of `workerIds` decides who gets which block.
 */
export function splitMicroBatches(microBatches: readonly MicroBatchSpec[], workerIds: readonly number[]): Map<number, MicroBatchSpec[]> {
  const plan = new Map<number, MicroBatchSpec[]>();
  const k = microBatches.length;
  const n = workerIds.length;
  if (n === 0) return plan;
  workerIds.forEach((workerId, j) => {
    const share = microBatches.slice(Math.floor((j * k) / n), Math.floor(((j + 1) * k) / n));
    if (share.length > 0) plan.set(workerId, share);
  });
  return plan;
}
