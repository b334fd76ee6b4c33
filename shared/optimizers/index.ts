// The list of optimizers, by the name `--optimizer` accepts.

import { Adam } from './adam.js';
import type { Optimizer, OptimizerConfig } from './optimizer.js';
import { Sgd } from './sgd.js';

export { DEFAULT_OPTIMIZER_CONFIG, type Optimizer, type OptimizerConfig } from './optimizer.js';

export const OPTIMIZERS = {
  sgd: (config: OptimizerConfig) => new Sgd(config),
  adam: (config: OptimizerConfig) => new Adam(config),
} as const;

export type OptimizerName = keyof typeof OPTIMIZERS;
export const OPTIMIZER_NAMES = Object.keys(OPTIMIZERS) as OptimizerName[];

/** A fresh optimizer (no state) of the named rule. */
export function createOptimizer(name: OptimizerName, config: OptimizerConfig): Optimizer {
  return OPTIMIZERS[name](config);
}
