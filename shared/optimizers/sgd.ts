// SGD with optional momentum and Nesterov momentum, in PyTorch's convention:
// v = mu*v + g;  w -= lr * v   (Nesterov: w -= lr * (g + mu*v)). Weight decay is coupled (g += wd*w).

import type { Optimizer, OptimizerConfig, OptimizerState } from './optimizer.js';
import { sgdMomentumUpdate } from '../kernels/optimizer-kernels.js';
import { ensureStateArray, readVelocity, snapshotVelocity } from './optimizer-state.js';

/** State `{ velocity }`, absent before the first step and when momentum is 0. */
export class Sgd implements Optimizer {
  readonly name = 'sgd';
  private velocity: Float32Array | null = null;
  constructor(private readonly config: OptimizerConfig) {}

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    const { momentum: mu, nesterov, weightDecay: wd } = this.config;
    if (mu === 0) {
      for (let i = 0; i < weights.length; i++) weights[i] = weights[i]! - lr * (grad[i]! + wd * weights[i]!);
      return;
    }
    const v = (this.velocity = ensureStateArray(this.name, 'velocity', this.velocity, weights.length));
    sgdMomentumUpdate(weights, grad, v, mu, wd, lr, nesterov);
  }

  state(): OptimizerState {
    return snapshotVelocity(this.velocity);
  }

  loadState(state: OptimizerState): void {
    this.velocity = readVelocity(this.name, state, null);
  }
}
