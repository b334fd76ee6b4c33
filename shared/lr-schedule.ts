// Learning-rate schedules: a batch-size scaling rule relative to a base batch (Goyal et al. 2017:
// none, linear, sqrt), warmup (gradual: +constant per step from the base LR to the scaled LR;
// constant: base LR, then a jump), and decay after warmup (constant, step, cosine).

export const LR_SCALING_RULES = ['none', 'linear', 'sqrt'] as const;
export const WARMUP_KINDS = ['gradual', 'constant'] as const;
export const DECAY_KINDS = ['constant', 'step', 'cosine'] as const;
export type LrScaling = (typeof LR_SCALING_RULES)[number];
export type WarmupKind = (typeof WARMUP_KINDS)[number];
export type DecayKind = (typeof DECAY_KINDS)[number];

export interface LrScheduleConfig {
  /** η: the learning rate tuned at the base batch. */
  baseLr: number;
  /** B0, the batch η was tuned at. */
  baseBatch: number;
  globalBatchSize: number;
  scaling: LrScaling;
  /** W: steps of warmup (0: none). */
  warmupSteps: number;
  warmup: WarmupKind;
  decay: DecayKind;
  totalSteps: number;
  /** For `step` decay: steps (counted from 0) at which the LR is multiplied by `decayFactor`. */
  decayBoundaries: number[];
  decayFactor: number;
  /** Multiply the LR by `factor` for steps [start, end): temperature experiments (docs/EXPERIMENTS.md). */
  windows?: LrWindow[];
}

export interface LrWindow {
  start: number;
  end: number;
  factor: number;
}

/** The LR after the scaling rule: η, η·B/B0 or η·sqrt(B/B0). */
export function scaledLearningRate(
  config: Pick<LrScheduleConfig, 'baseLr' | 'baseBatch' | 'globalBatchSize' | 'scaling'>,
): number {
  const k = config.globalBatchSize / config.baseBatch;
  switch (config.scaling) {
    case 'none':
      return config.baseLr;
    case 'linear':
      return config.baseLr * k;
    case 'sqrt':
      return config.baseLr * Math.sqrt(k);
  }
}

/** The learning rate applied at `step` (0-based). */
export function learningRateAt(step: number, config: LrScheduleConfig): number {
  const target = scaledLearningRate(config);
  const w = config.warmupSteps;
  if (step < w) {
    // Gradual warmup reaches the target at step W, from η at step 0 (Goyal et al. §2.2).
    return config.warmup === 'gradual' ? config.baseLr + ((target - config.baseLr) * step) / w : config.baseLr;
  }
  switch (config.decay) {
    case 'constant':
      return target;
    case 'step':
      return target * config.decayFactor ** config.decayBoundaries.filter((b) => step >= b).length;
    case 'cosine': {
      const span = Math.max(1, config.totalSteps - w);
      return 0.5 * target * (1 + Math.cos((Math.PI * Math.min(span, step - w)) / span));
    }
  }
}

/** A schedule as a function of the step, with any LR windows applied on top. */
export function createLrSchedule(config: LrScheduleConfig): (step: number) => number {
  const windows = config.windows ?? [];
  return (step) =>
    windows.reduce((lr, w) => (step >= w.start && step < w.end ? lr * w.factor : lr), learningRateAt(step, config));
}
