// SGD with optional momentum and Nesterov momentum, in PyTorch's convention:
// v = mu*v + g;  w -= lr * v   (Nesterov: w -= lr * (g + mu*v)). Weight decay is coupled (g += wd*w)
// and, as for every optimizer here, skips tensors of rank <= 1 (biases, batch-norm scales and
// offsets): the "no bias decay" of Goyal et al. (2017) and He et al. (2019), one rule for all.

import type { Optimizer, OptimizerConfig, OptimizerState } from './optimizer.js';
import { sgdMomentumUpdate } from '../kernels/optimizer-kernels.js';
import { ensureStateArray, readVelocity, snapshotVelocity } from './optimizer-state.js';
import { decayRanges, decaySegments, type DecaySegment } from './layer-segments.js';
import type { ParamSpec } from '../protocol.js';

/** State `{ velocity }`, absent before the first step and when momentum is 0. */
export class Sgd implements Optimizer {
  readonly name = 'sgd';
  private velocity: Float32Array | null = null;
  private readonly segments: readonly DecaySegment[];
  constructor(
    private readonly config: OptimizerConfig,
    params: readonly ParamSpec[] = [],
  ) {
    this.segments = decaySegments(params);
  }

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    const { momentum: mu, nesterov, weightDecay } = this.config;
    const v =
      mu === 0 ? null : (this.velocity = ensureStateArray(this.name, 'velocity', this.velocity, weights.length));
    for (const { start, end, decayed } of decayRanges(this.segments, weights.length, weightDecay)) {
      const wd = decayed ? weightDecay : 0;
      if (!v) {
        for (let i = start; i < end; i++) weights[i] = weights[i]! - lr * (grad[i]! + wd * weights[i]!);
        continue;
      }
      const part = (a: Float32Array) => a.subarray(start, end);
      sgdMomentumUpdate(part(weights), part(grad), part(v), mu, wd, lr, nesterov);
    }
  }

  state(): OptimizerState {
    return snapshotVelocity(this.velocity);
  }

  loadState(state: OptimizerState): void {
    this.velocity = readVelocity(this.name, state, null);
  }
}
