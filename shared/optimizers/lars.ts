// LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks", Algorithm 1),
// per layer l:  g' = g + wd*w;  trust = eta * |w| / (|g| + wd*|w|);  v = mu*v + lr*trust*g';  w -= v.
// Rank-1 tensors (biases, batch-norm gamma/beta; also scalars) are excluded: momentum SGD, v = mu*v + lr*g.

import type { ParamSpec } from '../protocol.js';
import { assertMatchesLayout, countLayoutValues, type LayerSegment, layerSegmentsOf } from './layer-segments.js';
import type { Optimizer, OptimizerConfig, OptimizerState } from './optimizer.js';
import { ensureStateArray, readVelocity, snapshotVelocity } from './optimizer-state.js';

/**
 * LARS over the layers `params` lay out. Choices, where implementations differ:
 * - Momentum is on the scaled update (the paper's Algorithm 1): the velocity accumulates
 *   lr * trust * g', so a change of lr (warmup, decay) applies to new updates only. NVIDIA
 *   Apex's LARC, which rescales the gradient under torch SGD, instead keeps v = mu*v + trust*g'
 *   and steps w -= lr*v, so a new lr also rescales the accumulated velocity.
 * - The trust ratio is not clipped (LARC's clip mode caps the layer's LR at lr) and has no eps
 *   in its denominator; when |w| or |g| is 0 it is 1, so the layer's LR is lr itself.
 * - Excluded tensors (`isExcludedFromTrust`: rank <= 1) get trust 1 and no weight decay.
 * - Reads momentum, weightDecay and trustCoefficient; nesterov is ignored.
 * Norms are accumulated in float64. State `{ velocity }`, allocated by the first step.
 */
export class Lars implements Optimizer {
  readonly name = 'lars';
  private readonly segments: LayerSegment[];
  private velocity: Float32Array | null = null;
  constructor(
    private readonly config: OptimizerConfig,
    params: readonly ParamSpec[],
  ) {
    this.segments = layerSegmentsOf(params);
  }

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    assertMatchesLayout(this.name, this.segments, weights, grad);
    const { momentum: mu, weightDecay: wd, trustCoefficient: eta } = this.config;
    const v = (this.velocity = ensureStateArray(this.name, 'velocity', this.velocity, weights.length));
    for (const { offset, size, isExcluded } of this.segments) {
      const end = offset + size;
      if (isExcluded) {
        for (let i = offset; i < end; i++) {
          const vi = mu * v[i]! + lr * grad[i]!;
          v[i] = vi;
          weights[i] = weights[i]! - vi;
        }
        continue;
      }
      // The trust ratio needs both norms before the first weight moves: a separate pass.
      let weightSquares = 0;
      let gradSquares = 0;
      for (let i = offset; i < end; i++) {
        weightSquares += weights[i]! * weights[i]!;
        gradSquares += grad[i]! * grad[i]!;
      }
      const weightNorm = Math.sqrt(weightSquares);
      const gradNorm = Math.sqrt(gradSquares);
      const trust = weightNorm > 0 && gradNorm > 0 ? (eta * weightNorm) / (gradNorm + wd * weightNorm) : 1;
      const localLr = lr * trust;
      for (let i = offset; i < end; i++) {
        const vi = mu * v[i]! + localLr * (grad[i]! + wd * weights[i]!);
        v[i] = vi;
        weights[i] = weights[i]! - vi;
      }
    }
  }

  state(): OptimizerState {
    return snapshotVelocity(this.velocity);
  }

  loadState(state: OptimizerState): void {
    this.velocity = readVelocity(this.name, state, countLayoutValues(this.segments));
  }
}
