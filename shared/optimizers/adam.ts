// Adam (Kingma & Ba 2015) with bias correction: m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2,
// w -= lr * m_hat / (sqrt(v_hat) + eps). eps defaults to 1e-8 (PyTorch), not tf.js's 1e-7.
// Weight decay is coupled (g += wd*w), as in torch.optim.Adam; adamw.ts decouples it.

import type { Optimizer, OptimizerConfig, OptimizerState } from './optimizer.js';
import { adamUpdate } from '../kernels/optimizer-kernels.js';
import { ensureStateArray, readMoments, snapshotMoments } from './optimizer-state.js';

/** State `{ t, m, v }`; `m` and `v` appear with the first step. */
export class Adam implements Optimizer {
  readonly name: string = 'adam';
  /** False: weight decay joins the gradient (Adam). True: it shrinks the weights (AdamW). */
  protected readonly decoupledDecay: boolean = false;
  private m: Float32Array | null = null;
  private v: Float32Array | null = null;
  private t = 0;
  constructor(private readonly config: OptimizerConfig) {}

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    const { beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd } = this.config;
    const m = (this.m = ensureStateArray(this.name, 'm', this.m, weights.length));
    const v = (this.v = ensureStateArray(this.name, 'v', this.v, weights.length));
    this.t += 1;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    const coupled = this.decoupledDecay ? 0 : wd;
    const shrink = this.decoupledDecay ? 1 - lr * wd : 1;
    // m_hat / (sqrt(v_hat) + eps) = (m / c1) / (sqrt(v) / sqrt(c2) + eps): one division and one
    // square root per parameter instead of three, two parameters per SIMD instruction.
    adamUpdate(weights, grad, m, v, { b1, b2, coupled, shrink, stepSize: lr / c1, invSqrtC2: 1 / Math.sqrt(c2), eps });
  }

  state(): OptimizerState {
    return snapshotMoments({ t: this.t, m: this.m, v: this.v });
  }

  loadState(state: OptimizerState): void {
    ({ t: this.t, m: this.m, v: this.v } = readMoments(this.name, state, null));
  }
}
