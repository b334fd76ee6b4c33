// Scaling efficiency, the two definitions batchlab uses (docs/METRICS.md):
// live = mean worker compute time / step wall time (per step, from one run);
// measured = throughput(N) / (N × throughput(1)) at the same per-worker micro-batch (from a sweep).

/**
 * Live estimate for one step: the fraction of the step's wall time the average worker spent
 * computing. 1 means no time was lost to communication, reduction or waiting. Clamped to [0, 1];
 * NaN when there is no worker or no time.
 */
export function liveScalingEfficiency(computeSecondsByWorker: readonly number[], wallSeconds: number): number {
  if (computeSecondsByWorker.length === 0 || !(wallSeconds > 0)) return NaN;
  const mean = computeSecondsByWorker.reduce((a, b) => a + b, 0) / computeSecondsByWorker.length;
  return Math.min(1, Math.max(0, mean / wallSeconds));
}

/**
 * Measured (systems) efficiency of N workers: throughput(N) / (N × throughput(1)), both in
 * samples per second at the same per-worker micro-batch. NaN when an input is missing.
 */
export function measuredScalingEfficiency(throughputN: number, workers: number, throughput1: number): number {
  if (!(throughputN >= 0) || !(workers >= 1) || !(throughput1 > 0)) return NaN;
  return throughputN / (workers * throughput1);
}
