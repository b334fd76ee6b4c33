// Statistical efficiency of a batch size from the gradient noise scale: predicted steps and
// examples relative to their minima, efficiency against a base batch, and goodput.
// McCandlish, Kaplan, Amodei 2018 (arXiv:1812.06162); docs/EXPERIMENTS.md "What batchlab measures".

/** True for a usable noise scale: a finite number >= 0 (null and NaN are "not estimable"). */
function isUsableNoiseScale(bSimple: number | null): bSimple is number {
  return bSimple !== null && Number.isFinite(bSimple) && bSimple >= 0;
}

function isPositiveBatch(batch: number): boolean {
  return Number.isFinite(batch) && batch > 0;
}

/**
 * Statistical efficiency of batch `batch` relative to `baseBatch`: the fraction of the base
 * batch's per-example progress kept, `(B_simple + B0) / (B_simple + B)` (1 at B = B0, below 1
 * for larger batches). NaN when `bSimple` is null, NaN or negative, or a batch is not positive.
 */
export function statisticalEfficiency(bSimple: number | null, baseBatch: number, batch: number): number {
  if (!isUsableNoiseScale(bSimple) || !isPositiveBatch(baseBatch) || !isPositiveBatch(batch)) return NaN;
  return (bSimple + baseBatch) / (bSimple + batch);
}

/**
 * Goodput: throughput discounted by statistical efficiency, `samplesPerSecond * efficiency`,
 * in base-batch-equivalent samples per second. NaN when either input is NaN or negative.
 */
export function goodput(samplesPerSecond: number, efficiency: number): number {
  if (!(samplesPerSecond >= 0) || !(efficiency >= 0)) return NaN;
  return samplesPerSecond * efficiency;
}

/**
 * Predicted optimization steps relative to the minimum (infinite batch): S/S_min = 1 + B_simple/B.
 * NaN for a non-estimable noise scale or a non-positive batch.
 */
export function predictedStepsRatio(bSimple: number | null, batch: number): number {
  if (!isUsableNoiseScale(bSimple) || !isPositiveBatch(batch)) return NaN;
  return 1 + bSimple / batch;
}

/**
 * Predicted training examples relative to the minimum (batch 1 limit): E/E_min = 1 + B/B_simple
 * (Infinity when B_simple is 0: a noiseless gradient gains nothing from more examples per step).
 * NaN for a non-estimable noise scale or a non-positive batch.
 */
export function predictedExamplesRatio(bSimple: number | null, batch: number): number {
  if (!isUsableNoiseScale(bSimple) || !isPositiveBatch(batch)) return NaN;
  return 1 + batch / bSimple;
}
