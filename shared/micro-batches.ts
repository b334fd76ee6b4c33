// Cutting a global batch into micro-batches with fixed ids: id i always covers the same
// positions of the step's sample list, whichever worker computes it (docs/ARCHITECTURE.md, "One step's path").

import type { MicroBatchSpec } from './protocol.js';

/** A worker's `--max-chunk` when none is given: the most samples it computes in one pass. */
export const DEFAULT_MAX_CHUNK = 1024;

/** ceil(B/m) micro-batches of `microBatch` samples (the last may be smaller), ids 0..k-1. */
export function cutMicroBatches(globalBatchSize: number, microBatch: number): MicroBatchSpec[] {
  if (!Number.isSafeInteger(microBatch) || microBatch < 1)
    throw new RangeError(`micro-batch size must be a positive integer, got ${microBatch}`);
  const specs: MicroBatchSpec[] = [];
  for (let id = 0, start = 0; start < globalBatchSize; id++, start += microBatch) {
    specs.push({ id, start, end: Math.min(globalBatchSize, start + microBatch) });
  }
  return specs;
}
