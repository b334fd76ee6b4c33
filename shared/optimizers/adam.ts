// Adam (Kingma & Ba 2015) with bias correction: m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2,
// w -= lr * m_hat / (sqrt(v_hat) + eps). eps defaults to 1e-8 (PyTorch), not tf.js's 1e-7.

import type { Optimizer, OptimizerConfig } from './optimizer.js';

export class Adam implements Optimizer {
  readonly name = 'adam';
  private m: Float32Array | null = null;
  private v: Float32Array | null = null;
  private t = 0;
  constructor(private readonly config: OptimizerConfig) {}

  apply(weights: Float32Array, grad: Float32Array, lr: number): void {
    const { beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd } = this.config;
    const m = (this.m ??= new Float32Array(weights.length));
    const v = (this.v ??= new Float32Array(weights.length));
    this.t += 1;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    for (let i = 0; i < weights.length; i++) {
      const g = grad[i]! + wd * weights[i]!;
      const mi = b1 * m[i]! + (1 - b1) * g;
      const vi = b2 * v[i]! + (1 - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      weights[i] = weights[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
    }
  }
}
