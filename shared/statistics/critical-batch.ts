// The critical batch size from measured steps to a target: a least-squares fit of McCandlish's
// steps–examples law S = S_min + E_min / B, B_crit = E_min / S_min (McCandlish, Kaplan, Amodei
// 2018, arXiv:1812.06162; Shallue et al. 2019 measure the same curves; docs/EXPERIMENTS.md).

/** One run of the "steps to target" experiment. */
export interface StepsToTargetPoint {
  globalBatchSize: number;
  /** Optimization steps until the target was first reached. */
  steps: number;
}

/** An ordinary least-squares line y = intercept + slope * x. */
export interface LineFit {
  slope: number;
  intercept: number;
  /** Coefficient of determination 1 − SS_res/SS_tot (1 when every y is equal and fitted exactly). */
  r2: number;
}

/** A successful fit of S = S_min + E_min / B. */
export interface CriticalBatchFit {
  fittable: true;
  /** Steps needed at infinite batch. */
  sMin: number;
  /** Examples needed at batch size 1 (the small-batch limit). */
  eMin: number;
  /** E_min / S_min: the batch size at which S = 2 S_min and E = 2 E_min. */
  bCrit: number;
  /** R^2 of the fit in steps. */
  r2: number;
}

/** Why the points do not determine the law. */
export interface CriticalBatchUnfittable {
  fittable: false;
  reason: string;
}

/**
 * Ordinary least squares of `ys` on `xs`. Returns null when there are fewer than 2 points or
 * all x are equal (the slope is undetermined).
 * @throws RangeError when the arrays differ in length
 */
export function fitLine(xs: readonly number[], ys: readonly number[]): LineFit | null {
  if (xs.length !== ys.length)
    throw new RangeError(`fitLine: ${xs.length} x values but ${ys.length} y values; pass one y per x`);
  const n = xs.length;
  if (n < 2) return null;
  const meanX = xs.reduce((a, b) => a + b, 0) / n;
  const meanY = ys.reduce((a, b) => a + b, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i]! - meanX;
    const dy = ys[i]! - meanY;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (sxx === 0) return null;
  const slope = sxy / sxx;
  const intercept = meanY - slope * meanX;
  let residual = 0;
  for (let i = 0; i < n; i++) {
    const r = ys[i]! - (intercept + slope * xs[i]!);
    residual += r * r;
  }
  const r2 = syy === 0 ? (residual === 0 ? 1 : 0) : 1 - residual / syy;
  return { slope, intercept, r2 };
}

/**
 * Fits S = S_min + E_min / B by ordinary least squares of steps on x = 1/B (residuals in steps).
 * Repeated batch sizes (seeds, an LR grid's best runs) are fine; at least 2 distinct sizes are
 * needed. A fit with S_min <= 0 or E_min <= 0 is not the law's shape and is returned unfittable
 * with the reason, as is a fit from too few batch sizes.
 * @throws RangeError when a point's batch size or steps is not a finite positive number (drop
 *   runs that never reached the target before fitting)
 */
export function fitCriticalBatch(points: readonly StepsToTargetPoint[]): CriticalBatchFit | CriticalBatchUnfittable {
  points.forEach((p, i) => {
    if (!(Number.isFinite(p.globalBatchSize) && p.globalBatchSize > 0)) {
      throw new RangeError(
        `fitCriticalBatch: points[${i}].globalBatchSize must be a finite number > 0, got ${p.globalBatchSize}`,
      );
    }
    if (!(Number.isFinite(p.steps) && p.steps > 0)) {
      throw new RangeError(
        `fitCriticalBatch: points[${i}].steps must be a finite number > 0, got ${p.steps}; drop runs that never reached the target`,
      );
    }
  });
  const distinct = new Set(points.map((p) => p.globalBatchSize)).size;
  if (distinct < 2) {
    return {
      fittable: false,
      reason: `the fit needs at least 2 distinct batch sizes, got ${distinct} (${points.length} points)`,
    };
  }
  const line = fitLine(
    points.map((p) => 1 / p.globalBatchSize),
    points.map((p) => p.steps),
  )!;
  const sMin = line.intercept;
  const eMin = line.slope;
  if (!(sMin > 0)) {
    return {
      fittable: false,
      reason: `fitted S_min = ${sMin.toPrecision(4)} is not positive: steps fall at least as fast as 1/B over the range measured (B_crit above the largest batch, or the points are too noisy)`,
    };
  }
  if (!(eMin > 0)) {
    return {
      fittable: false,
      reason: `fitted E_min = ${eMin.toPrecision(4)} is not positive: steps do not fall with B over the range measured`,
    };
  }
  return { fittable: true, sMin, eMin, bCrit: eMin / sMin, r2: line.r2 };
}
