// LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
// Algorithm 2) per layer: Adam moments with bias correction, r = m_hat / (sqrt(v_hat) + eps),
// u = r + wd*w, trust = |w| / |u| (1 where either is 0), w -= lr * trust * u. Rank-1 tensors (and
// scalars) are excluded: trust 1, no decay.

import type { ParamSpec } from '../protocol.js';
import { assertMatchesLayout, countLayoutValues, type LayerSegment, layerSegmentsOf } from './layer-segments.js';
import type { Optimizer, OptimizerConfig, OptimizerState } from './optimizer.js';
import { ensureStateArray, readMoments, snapshotMoments } from './optimizer-state.js';

/**
 * LAMB over the layers `params` lay out. Choices, where implementations differ:
 * - The scaling function phi of the paper is the identity: the trust ratio is not clamped
 *   (cybertronai/pytorch-lamb, for one, clamps |w| to [0, 10]); it is 1 when |w| or |u| is 0.
 * - Moments are bias-corrected, as in the published Algorithm 2 (some implementations, following
 *   an earlier version of the paper, drop it).
 * - Excluded tensors (`isExcludedFromTrust`: rank <= 1) get trust 1 and no weight decay, i.e.
 *   a plain Adam step.
 * - Reads beta1, beta2, epsilon (shared default 1e-8; reference LAMB code often uses 1e-6) and
 *   weightDecay; momentum and nesterov are ignored.
 * Norms are accumulated in float64. State `{ t, m, v }`, as Adam's; the arrays appear with the
 * first step, together with a scratch buffer for one layer's u (not part of the state).
 */
export class Lamb implements Optimizer {
  readonly name = 'lamb';
  private readonly segments: LayerSegment[];
  private m: Float32Array | null = null;
  private v: Float32Array | null = null;
  private t = 0;
  /** u of the current layer, kept in float64 between the norm pass and the update pass. */
  private layerUpdate: Float64Array | null = null;
  constructor(
    private readonly config: OptimizerConfig,
    params: readonly ParamSpec[],
  ) {
    this.segments = layerSegmentsOf(params);
  }

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    assertMatchesLayout(this.name, this.segments, weights, grad);
    const { beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd } = this.config;
    const m = (this.m = ensureStateArray(this.name, 'm', this.m, weights.length));
    const v = (this.v = ensureStateArray(this.name, 'v', this.v, weights.length));
    const u = (this.layerUpdate ??= new Float64Array(
      Math.max(0, ...this.segments.map((s) => (s.isExcluded ? 0 : s.size))),
    ));
    this.t += 1;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    for (const { offset, size, isExcluded } of this.segments) {
      const end = offset + size;
      if (isExcluded) {
        // Trust 1 and no decay: an Adam step, done in the same pass as the moments.
        for (let i = offset; i < end; i++) {
          const g = grad[i]!;
          const mi = b1 * m[i]! + (1 - b1) * g;
          const vi = b2 * v[i]! + (1 - b2) * g * g;
          m[i] = mi;
          v[i] = vi;
          weights[i] = weights[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
        }
        continue;
      }
      // |u| is known only after the whole layer's moments: keep u, then step in a second pass.
      let weightSquares = 0;
      let updateSquares = 0;
      for (let i = offset; i < end; i++) {
        const g = grad[i]!;
        const w = weights[i]!;
        const mi = b1 * m[i]! + (1 - b1) * g;
        const vi = b2 * v[i]! + (1 - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const ui = mi / c1 / (Math.sqrt(vi / c2) + eps) + wd * w;
        u[i - offset] = ui;
        weightSquares += w * w;
        updateSquares += ui * ui;
      }
      const trust = weightSquares > 0 && updateSquares > 0 ? Math.sqrt(weightSquares) / Math.sqrt(updateSquares) : 1;
      const stepSize = lr * trust;
      for (let i = offset; i < end; i++) weights[i] = weights[i]! - stepSize * u[i - offset]!;
    }
  }

  state(): OptimizerState {
    return snapshotMoments({ t: this.t, m: this.m, v: this.v });
  }

  loadState(state: OptimizerState): void {
    ({ t: this.t, m: this.m, v: this.v } = readMoments(this.name, state, countLayoutValues(this.segments)));
  }
}
