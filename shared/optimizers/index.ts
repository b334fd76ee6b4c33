// The list of optimizers, by the name `--optimizer` accepts.

import type { ParamSpec } from '../protocol.js';
import { Adam } from './adam.js';
import { AdamW } from './adamw.js';
import { Lamb } from './lamb.js';
import { Lars } from './lars.js';
import type { Optimizer, OptimizerConfig } from './optimizer.js';
import { Sgd } from './sgd.js';

export { isExcludedFromTrust } from './layer-segments.js';
export { DEFAULT_OPTIMIZER_CONFIG, type Optimizer, type OptimizerConfig, type OptimizerState } from './optimizer.js';

/** Each rule's constructor; sgd, adam and adamw use `params` only to leave rank-1 tensors out of weight decay. */
export const OPTIMIZERS = {
  sgd: (config: OptimizerConfig, params: readonly ParamSpec[]) => new Sgd(config, params),
  adam: (config: OptimizerConfig, params: readonly ParamSpec[]) => new Adam(config, params),
  adamw: (config: OptimizerConfig, params: readonly ParamSpec[]) => new AdamW(config, params),
  lars: (config: OptimizerConfig, params: readonly ParamSpec[]) => new Lars(config, params),
  lamb: (config: OptimizerConfig, params: readonly ParamSpec[]) => new Lamb(config, params),
} as const satisfies Record<string, (config: OptimizerConfig, params: readonly ParamSpec[]) => Optimizer>;

export type OptimizerName = keyof typeof OPTIMIZERS;
export const OPTIMIZER_NAMES = Object.keys(OPTIMIZERS) as OptimizerName[];

/**
 * A fresh optimizer (no state) of the named rule over the flat vector that `params` lay out
 * (their concatenation, in order). LARS and LAMB use `params` for their per-layer trust ratios and
 * throw a `BatchlabError` (`SHAPE_MISMATCH`) from `apply` when the weights do not match them.
 */
export function createOptimizer(name: OptimizerName, config: OptimizerConfig, params: readonly ParamSpec[]): Optimizer {
  return OPTIMIZERS[name](config, params);
}
