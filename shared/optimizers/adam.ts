// Adam (Kingma & Ba 2015) with bias correction: m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2,
// w -= lr * m_hat / (sqrt(v_hat) + eps). eps defaults to 1e-8 (PyTorch), not tf.js's 1e-7.
// Weight decay is coupled (g += wd*w), as in torch.optim.Adam; adamw.ts decouples it. Either way
// it skips tensors of rank <= 1 (biases, batch-norm scales and offsets), as for every optimizer.

import type { Optimizer, OptimizerConfig, OptimizerState } from './optimizer.js';
import { adamUpdate } from '../kernels/optimizer-kernels.js';
import { ensureStateArray, readMoments, snapshotMoments } from './optimizer-state.js';
import { decayRanges, decaySegments, type DecaySegment } from './layer-segments.js';
import type { ParamSpec } from '../protocol.js';

/** State `{ t, m, v }`; `m` and `v` appear with the first step. */
export class Adam implements Optimizer {
  readonly name: string = 'adam';
  /** False: weight decay joins the gradient (Adam). True: it shrinks the weights (AdamW). */
  protected readonly decoupledDecay: boolean = false;
  private m: Float32Array | null = null;
  private v: Float32Array | null = null;
  private t = 0;
  private readonly segments: readonly DecaySegment[];
  constructor(
    private readonly config: OptimizerConfig,
    params: readonly ParamSpec[] = [],
  ) {
    this.segments = decaySegments(params);
  }

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    const { beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd } = this.config;
    const m = (this.m = ensureStateArray(this.name, 'm', this.m, weights.length));
    const v = (this.v = ensureStateArray(this.name, 'v', this.v, weights.length));
    this.t += 1;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    for (const { start, end, decayed } of decayRanges(this.segments, weights.length, wd)) {
      const decay = decayed ? wd : 0;
      const coupled = this.decoupledDecay ? 0 : decay;
      const shrink = this.decoupledDecay ? 1 - lr * decay : 1;
      const part = (a: Float32Array) => a.subarray(start, end);
      // m_hat / (sqrt(v_hat) + eps) = (m / c1) / (sqrt(v) / sqrt(c2) + eps): one division and one
      // square root per parameter instead of three, two parameters per SIMD instruction.
      const c = { b1, b2, coupled, shrink, stepSize: lr / c1, invSqrtC2: 1 / Math.sqrt(c2), eps };
      adamUpdate(part(weights), part(grad), part(m), part(v), c);
    }
  }

  state(): OptimizerState {
    return snapshotMoments({ t: this.t, m: this.m, v: this.v });
  }

  loadState(state: OptimizerState): void {
    ({ t: this.t, m: this.m, v: this.v } = readMoments(this.name, state, null));
  }
}
