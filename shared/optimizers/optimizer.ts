// The optimizer contract: an update rule over the flat Float32Array of weights, run on the
// coordinator. One rule per file; shared/optimizers/index.ts lists them.

/** Hyperparameters shared by the rules; each rule reads the ones it uses. */
export interface OptimizerConfig {
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  beta1: number;
  beta2: number;
  epsilon: number;
}

export const DEFAULT_OPTIMIZER_CONFIG: OptimizerConfig = {
  momentum: 0.9,
  nesterov: false,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
};

/** A stateful update rule. `apply` updates `weights` in place from the mean gradient `grad`. */
export interface Optimizer {
  readonly name: string;
  apply(weights: Float32Array, grad: Float32Array, lr: number): void;
}
