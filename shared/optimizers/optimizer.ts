// The optimizer contract: an update rule over the flat Float32Array of weights, run on the
// coordinator. One rule per file; shared/optimizers/index.ts lists them.

/** Hyperparameters shared by the rules; each rule reads the ones it uses (see its file header). */
export interface OptimizerConfig {
  /** Momentum coefficient (SGD, LARS). */
  momentum: number;
  /** Nesterov momentum (SGD only). */
  nesterov: boolean;
  /** Weight decay: coupled in SGD and Adam, decoupled in AdamW, inside the trust ratio in LARS and LAMB. */
  weightDecay: number;
  /** First-moment decay (Adam, AdamW, LAMB). */
  beta1: number;
  /** Second-moment decay (Adam, AdamW, LAMB). */
  beta2: number;
  /** Added to sqrt(v_hat) in the denominator (Adam, AdamW, LAMB). */
  epsilon: number;
  /** LARS trust coefficient eta (You et al. 2017): the layer's LR is lr * eta * |w| / (|g| + wd * |w|). */
  trustCoefficient: number;
}

export const DEFAULT_OPTIMIZER_CONFIG: OptimizerConfig = {
  momentum: 0.9,
  nesterov: false,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  trustCoefficient: 0.001,
};

/**
 * A snapshot of an optimizer's state for checkpoints: its moment or velocity arrays (as long as
 * the weights) and scalars such as the step counter `t`. Arrays are present once allocated by
 * the first `apply`. The snapshot does not name the rule (adam, adamw and lamb use the same
 * keys), so a checkpoint must store the optimizer name beside it.
 */
export type OptimizerState = Record<string, Float32Array | number>;

/** A stateful update rule. `apply` updates `weights` in place from the mean gradient `grad`. */
export interface Optimizer {
  readonly name: string;
  apply(weights: Float32Array, grad: Float32Array, lr: number): void;
  /** A copy of the state; later steps do not change it (reverse of `loadState`). */
  state(): OptimizerState;
  /**
   * Replaces the state with a copy of `state`, so that the next `apply` continues bit-identically
   * from the instance that produced it (reverse of `state`). Throws a `BatchlabError`
   * (`SHAPE_MISMATCH`) when `state` has keys, types or lengths this rule does not use.
   */
  loadState(state: OptimizerState): void;
}
