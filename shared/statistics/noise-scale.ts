// The gradient noise scale B_simple = tr(Σ)/|G|^2, estimated for free from the micro-batch norms
// of data-parallel training: McCandlish, Kaplan, Amodei 2018 (arXiv:1812.06162), App. A.1, as
// restated in docs/EXPERIMENTS.md ("What batchlab measures").

/** One micro-batch (or worker) of a step: its sample count and the squared norm of its mean gradient. */
export interface MicroBatchNorm {
  /** b_k, the number of samples in the micro-batch. */
  samples: number;
  /** s_k = |g_k|^2, the squared norm of the micro-batch's mean-loss gradient (raw data loss). */
  sqNorm: number;
}

/** What the coordinator knows about one step, all taken before clipping or optimizer transforms. */
export interface NoiseScaleStepInput {
  microBatches: readonly MicroBatchNorm[];
  /** n = |gbar|^2, the squared norm of the b-weighted average gradient the optimizer receives. */
  globalSqNorm: number;
  /** Learning rate applied in this step. */
  lr: number;
  /** B; must equal the sum of `microBatches[k].samples`. */
  globalBatchSize: number;
  /** Momentum coefficient in [0, 1) (0 for plain SGD). */
  momentum: number;
}

/** The unbiased per-step estimates, or why a step gives none. */
export type StepNoiseEstimate =
  | {
      estimable: true;
      /** S_hat, an unbiased estimate of tr(Σ) (per-example gradient covariance). */
      sHat: number;
      /** G2_hat, an unbiased estimate of |G|^2; may be negative. */
      g2Hat: number;
    }
  | { estimable: false; reason: string };

/**
 * Unbiased per-step estimates of tr(Σ) and |G|^2 from K >= 2 micro-batch norms:
 *
 * ```
 * B = Σ b_k,  A = Σ b_k s_k / B,  n = |gbar|^2
 * S_hat  = B (A − n) / (K − 1)
 * G2_hat = n − S_hat / B
 * ```
 *
 * For i.i.d. samples E[s_k] = |G|^2 + tr(Σ)/b_k and E[n] = |G|^2 + tr(Σ)/B, which makes both
 * unbiased for any b_k. With equal b_k this is McCandlish's B_small/B_big form. Fewer than two
 * micro-batches give `{ estimable: false }` with the reason.
 */
export function estimateStepNoise(microBatches: readonly MicroBatchNorm[], globalSqNorm: number): StepNoiseEstimate {
  const k = microBatches.length;
  if (k < 2) {
    return {
      estimable: false,
      reason: `the noise scale needs at least 2 micro-batch gradients per step, got K = ${k}; use 2 or more workers or micro-batches per step`,
    };
  }
  let batch = 0;
  let weighted = 0;
  for (const { samples, sqNorm } of microBatches) {
    batch += samples;
    weighted += samples * sqNorm;
  }
  const a = weighted / batch;
  const sHat = (batch * (a - globalSqNorm)) / (k - 1);
  return { estimable: true, sHat, g2Hat: globalSqNorm - sHat / batch };
}

/**
 * The SGD temperature T = lr / (B (1 − momentum)) (McCandlish et al. 2018, with the momentum
 * correction; docs/EXPERIMENTS.md, "Temperature law"): the noise scale of a run scales as 1/T.
 */
export function temperatureOf(lr: number, globalBatchSize: number, momentum: number): number {
  return lr / (globalBatchSize * (1 - momentum));
}

/** Tuning of {@link NoiseScaleEstimator}; every field has a default. */
export interface NoiseScaleOptions {
  /** EMA decay for S_hat, G2_hat and G2_hat^2 (default 0.99, at most ~199 effective steps). */
  beta?: number;
  /** Largest relative standard error of the G2 EMA that still counts as reliable (default 0.5). */
  maxRelativeError?: number;
  /** Estimates needed since the last reset before the result can be reliable (default 10). */
  minSteps?: number;
  /** Reset the EMAs when lr, B or T differs from its value at the last reset by more than this factor (default 2). */
  resetFactor?: number;
}

/** One step's result: the per-step estimates (when estimable) and the smoothed noise scale. */
export type NoiseScaleResult = (
  { estimable: true; sHat: number; g2Hat: number } | { estimable: false; reason: string; sHat: null; g2Hat: null }
) & {
  /** Bias-corrected EMA of S_hat since the last reset; null before the first estimate. */
  sEma: number | null;
  /** Bias-corrected EMA of G2_hat since the last reset; null before the first estimate. */
  g2Ema: number | null;
  /** sEma / g2Ema, a heuristic for the critical batch size; null when g2Ema <= 0 or sEma < 0. */
  bSimple: number | null;
  /** Standard error of g2Ema over |g2Ema|; null until it can be estimated (2+ estimates). */
  relativeError: number | null;
  /** True when enough steps are in the EMAs and relativeError <= maxRelativeError. */
  reliable: boolean;
  /** lr / (B (1 − momentum)) of this step. */
  temperature: number;
  /** Estimates folded into the EMAs since the last reset (non-estimable steps do not count). */
  stepsSinceReset: number;
  /** True when this step reset the EMAs (first step, or lr, B or T moved by more than resetFactor). */
  reset: boolean;
};

/** Everything needed to resume the estimator from a checkpoint; plain JSON. */
export interface NoiseScaleState {
  version: 1;
  beta: number;
  /** Uncorrected EMA accumulators (start at 0). */
  sAccumulator: number;
  g2Accumulator: number;
  g2SquareAccumulator: number;
  stepsSinceReset: number;
  /** lr, B and T at the last reset; null before the first step. */
  anchor: { lr: number; globalBatchSize: number; temperature: number } | null;
}

/**
 * Smooths the per-step estimates of {@link estimateStepNoise} into B_simple = ema(S)/ema(G2).
 *
 * - Separate bias-corrected EMAs (Adam-style: accumulator / (1 − beta^t)) of S_hat and G2_hat,
 *   so a constant input is returned exactly from the first step. The ratio is never smoothed:
 *   E[ratio] is biased, the ratio of unbiased means is consistent. Negative G2_hat values are
 *   kept because dropping them would bias G2 upwards.
 * - Reliability: an EMA of G2_hat^2 gives the weighted variance v of G2_hat; the EMA's weights
 *   w_t have 1/Σw^2 = n_eff = (1+β)(1−β^t) / ((1−β)(1+β^t)) effective samples, so the standard
 *   error of the G2 EMA is sqrt(v / (n_eff − 1)) (steps taken as independent). Unreliable while
 *   fewer than `minSteps` estimates are in, g2Ema <= 0, or SE/|g2Ema| > `maxRelativeError`.
 * - Reset: the noise scale scales as 1/T, T = lr / (B (1 − momentum)), so the EMAs restart when
 *   lr, B or T leaves [x/f, x·f] around its value x at the last reset (f = `resetFactor`).
 *   Drift is measured from the last reset, so two 1.5× steps reset on the second one.
 *
 * The default beta is 0.99 rather than 0.95: at B well below the noise scale, one step's G2_hat
 * has a standard deviation of several times |G|^2, and 0.95 (n_eff <= 39) rarely gets the relative
 * error below 0.5. Present B_simple as a heuristic for the critical batch size, not as it.
 */
export class NoiseScaleEstimator {
  readonly beta: number;
  readonly maxRelativeError: number;
  readonly minSteps: number;
  readonly resetFactor: number;
  private sAccumulator = 0;
  private g2Accumulator = 0;
  private g2SquareAccumulator = 0;
  private stepsSinceReset = 0;
  private anchor: NoiseScaleState['anchor'] = null;

  /** @throws RangeError when an option is outside its range (named in the message) */
  constructor(options: NoiseScaleOptions = {}) {
    this.beta = options.beta ?? 0.99;
    this.maxRelativeError = options.maxRelativeError ?? 0.5;
    this.minSteps = options.minSteps ?? 10;
    this.resetFactor = options.resetFactor ?? 2;
    if (!(this.beta > 0 && this.beta < 1))
      throw new RangeError(`noise scale: beta must be in (0, 1), got ${this.beta}`);
    if (!(this.maxRelativeError > 0))
      throw new RangeError(`noise scale: maxRelativeError must be > 0, got ${this.maxRelativeError}`);
    if (!(Number.isInteger(this.minSteps) && this.minSteps >= 2))
      throw new RangeError(`noise scale: minSteps must be an integer >= 2, got ${this.minSteps}`);
    if (!(this.resetFactor > 1)) throw new RangeError(`noise scale: resetFactor must be > 1, got ${this.resetFactor}`);
  }

  /**
   * Folds in one step and returns the current estimate. A step with K < 2 micro-batches adds
   * nothing to the EMAs but still resets them when lr, B or T moved by more than `resetFactor`.
   * @throws RangeError when the input is malformed: sample counts not positive integers, norms
   *   negative or not finite, `globalBatchSize` not the sum of the samples, lr < 0, momentum outside [0, 1)
   */
  update(input: NoiseScaleStepInput): NoiseScaleResult {
    validateInput(input);
    const temperature = temperatureOf(input.lr, input.globalBatchSize, input.momentum);
    const reset = this.anchor === null || this.movedTooFar(input.lr, input.globalBatchSize, temperature);
    if (reset) {
      this.reset();
      this.anchor = { lr: input.lr, globalBatchSize: input.globalBatchSize, temperature };
    }
    const step = estimateStepNoise(input.microBatches, input.globalSqNorm);
    if (step.estimable) {
      const { beta } = this;
      this.sAccumulator = beta * this.sAccumulator + (1 - beta) * step.sHat;
      this.g2Accumulator = beta * this.g2Accumulator + (1 - beta) * step.g2Hat;
      this.g2SquareAccumulator = beta * this.g2SquareAccumulator + (1 - beta) * step.g2Hat * step.g2Hat;
      this.stepsSinceReset += 1;
    }
    const perStep = step.estimable ? step : { ...step, sHat: null, g2Hat: null };
    return { ...perStep, ...this.smoothed(), temperature, stepsSinceReset: this.stepsSinceReset, reset };
  }

  /** Clears the EMAs; the next step becomes the new reference for lr, B and T. */
  reset(): void {
    this.sAccumulator = 0;
    this.g2Accumulator = 0;
    this.g2SquareAccumulator = 0;
    this.stepsSinceReset = 0;
    this.anchor = null;
  }

  /** A JSON-safe snapshot for checkpoints (reverse of {@link NoiseScaleEstimator.loadState}). */
  state(): NoiseScaleState {
    return {
      version: 1,
      beta: this.beta,
      sAccumulator: this.sAccumulator,
      g2Accumulator: this.g2Accumulator,
      g2SquareAccumulator: this.g2SquareAccumulator,
      stepsSinceReset: this.stepsSinceReset,
      anchor: this.anchor === null ? null : { ...this.anchor },
    };
  }

  /**
   * Restores a snapshot taken by {@link NoiseScaleEstimator.state} (reverse of it).
   * @throws RangeError when the snapshot is malformed or was taken with a different beta
   */
  loadState(state: NoiseScaleState): void {
    const s = state as Partial<NoiseScaleState> | null;
    if (s === null || typeof s !== 'object' || s.version !== 1) {
      throw new RangeError(
        `noise scale state: expected an object with version 1, got ${JSON.stringify(s?.version ?? s)}`,
      );
    }
    if (s.beta !== this.beta) {
      throw new RangeError(
        `noise scale state was saved with beta ${s.beta}, this estimator uses ${this.beta}; construct it with { beta: ${s.beta} }`,
      );
    }
    for (const key of ['sAccumulator', 'g2Accumulator', 'g2SquareAccumulator'] as const) {
      if (!Number.isFinite(s[key]))
        throw new RangeError(`noise scale state: ${key} must be a finite number, got ${s[key]}`);
    }
    if (!(Number.isInteger(s.stepsSinceReset) && s.stepsSinceReset! >= 0)) {
      throw new RangeError(
        `noise scale state: stepsSinceReset must be a non-negative integer, got ${s.stepsSinceReset}`,
      );
    }
    const anchor = s.anchor;
    if (
      anchor !== null &&
      !(anchor && [anchor.lr, anchor.globalBatchSize, anchor.temperature].every(Number.isFinite))
    ) {
      throw new RangeError(
        `noise scale state: anchor must be null or { lr, globalBatchSize, temperature } numbers, got ${JSON.stringify(anchor)}`,
      );
    }
    this.sAccumulator = s.sAccumulator!;
    this.g2Accumulator = s.g2Accumulator!;
    this.g2SquareAccumulator = s.g2SquareAccumulator!;
    this.stepsSinceReset = s.stepsSinceReset!;
    this.anchor =
      anchor === null
        ? null
        : { lr: anchor.lr, globalBatchSize: anchor.globalBatchSize, temperature: anchor.temperature };
  }

  private movedTooFar(lr: number, globalBatchSize: number, temperature: number): boolean {
    const anchor = this.anchor!;
    return (
      isBeyondFactor(lr, anchor.lr, this.resetFactor) ||
      isBeyondFactor(globalBatchSize, anchor.globalBatchSize, this.resetFactor) ||
      isBeyondFactor(temperature, anchor.temperature, this.resetFactor)
    );
  }

  private smoothed(): Pick<NoiseScaleResult, 'sEma' | 'g2Ema' | 'bSimple' | 'relativeError' | 'reliable'> {
    const t = this.stepsSinceReset;
    if (t === 0) return { sEma: null, g2Ema: null, bSimple: null, relativeError: null, reliable: false };
    const correction = 1 - this.beta ** t;
    const sEma = this.sAccumulator / correction;
    const g2Ema = this.g2Accumulator / correction;
    const g2SquareEma = this.g2SquareAccumulator / correction;
    const bSimple = g2Ema > 0 && sEma >= 0 ? sEma / g2Ema : null;
    let relativeError: number | null = null;
    if (t >= 2) {
      const bt = this.beta ** t;
      const effectiveSteps = ((1 + this.beta) * (1 - bt)) / ((1 - this.beta) * (1 + bt));
      // Weighted (biased) variance; dividing by n_eff − 1 rather than n_eff removes the bias.
      const variance = Math.max(0, g2SquareEma - g2Ema * g2Ema);
      const standardError = Math.sqrt(variance / (effectiveSteps - 1));
      relativeError = g2Ema === 0 ? Infinity : standardError / Math.abs(g2Ema);
    }
    const reliable =
      t >= this.minSteps && g2Ema > 0 && relativeError !== null && relativeError <= this.maxRelativeError;
    return { sEma, g2Ema, bSimple, relativeError, reliable };
  }
}

/** True when `value` is outside [anchor / factor, anchor * factor] (a zero against a non-zero is). */
function isBeyondFactor(value: number, anchor: number, factor: number): boolean {
  if (value === anchor) return false;
  if (value <= 0 || anchor <= 0) return true;
  return value > anchor * factor || value * factor < anchor;
}

function validateInput(input: NoiseScaleStepInput): void {
  let sum = 0;
  input.microBatches.forEach(({ samples, sqNorm }, k) => {
    if (!(Number.isInteger(samples) && samples > 0))
      throw new RangeError(`noise scale: microBatches[${k}].samples must be a positive integer, got ${samples}`);
    if (!(Number.isFinite(sqNorm) && sqNorm >= 0))
      throw new RangeError(`noise scale: microBatches[${k}].sqNorm must be a finite number >= 0, got ${sqNorm}`);
    sum += samples;
  });
  if (!(Number.isFinite(input.globalSqNorm) && input.globalSqNorm >= 0)) {
    throw new RangeError(`noise scale: globalSqNorm must be a finite number >= 0, got ${input.globalSqNorm}`);
  }
  if (!(Number.isInteger(input.globalBatchSize) && input.globalBatchSize > 0)) {
    throw new RangeError(`noise scale: globalBatchSize must be a positive integer, got ${input.globalBatchSize}`);
  }
  if (input.microBatches.length > 0 && sum !== input.globalBatchSize) {
    throw new RangeError(
      `noise scale: globalBatchSize ${input.globalBatchSize} differs from the ${sum} samples of the micro-batches; pass the norms of every micro-batch averaged into gbar`,
    );
  }
  if (!(Number.isFinite(input.lr) && input.lr >= 0))
    throw new RangeError(`noise scale: lr must be a finite number >= 0, got ${input.lr}`);
  if (!(input.momentum >= 0 && input.momentum < 1))
    throw new RangeError(`noise scale: momentum must be in [0, 1), got ${input.momentum}`);
}
