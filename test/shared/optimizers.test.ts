import { describe, expect, it } from 'vitest';
import { BatchlabError } from '../../shared/errors.js';
import {
  createOptimizer,
  DEFAULT_OPTIMIZER_CONFIG,
  isExcludedFromTrust,
  OPTIMIZER_NAMES,
  type OptimizerConfig,
  type OptimizerName,
  type OptimizerState,
} from '../../shared/optimizers/index.js';
import type { ParamSpec } from '../../shared/protocol.js';

// One conformance suite for every update rule (in the style of hono's common.case.test.ts): a
// table of cases, each with a param layout, weights, the mean gradient of each step, a learning
// rate and the weights expected after each step. Expected values are derived by hand from the
// published formulas, in float64, never by calling the implementation. The implementation works in
// float32, so results are compared with a relative tolerance.

const RELATIVE_TOLERANCE = 1e-6;

interface Case {
  name: string;
  optimizer: OptimizerName;
  config: OptimizerConfig;
  /** The layout of `weights`; only LARS and LAMB read it. */
  params: ParamSpec[];
  weights: number[];
  /** The mean gradient handed to `apply` at each step. */
  grads: number[][];
  /** The learning rate, or one per step (a schedule). */
  lr: number | number[];
  /** Weights after step 1, 2, ... */
  expected: number[][];
}

const config = (patch: Partial<OptimizerConfig>): OptimizerConfig => ({ ...DEFAULT_OPTIMIZER_CONFIG, ...patch });
const sgd = (patch: Partial<OptimizerConfig>): OptimizerConfig =>
  config({ momentum: 0, nesterov: false, weightDecay: 0, ...patch });
const adam = (patch: Partial<OptimizerConfig> = {}): OptimizerConfig =>
  config({ beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, ...patch });
const lars = (patch: Partial<OptimizerConfig> = {}): OptimizerConfig =>
  config({ momentum: 0.9, weightDecay: 0, trustCoefficient: 0.001, ...patch });

/** One rank-1 tensor of `n` values: the layout for the element-wise rules' cases. */
const flatParams = (n: number): ParamSpec[] => [{ name: 'weights', shape: [n] }];
/** One rank-2 tensor: weight decay applies to it (a rank-1 one is left out). */
const kernelParams = (n: number): ParamSpec[] => [{ name: 'kernel', shape: [1, n] }];

// Shared SGD inputs: exactly representable in float32, chosen so no weight nears zero.
const W0 = [1, -2, 4];
const G = [
  [0.5, -0.25, 2],
  [-1, 0.5, 1],
  [0.25, 0.75, -0.5],
];

/**
 * Adam, Kingma & Ba (2015) Algorithm 1, in float64, with PyTorch's coupled weight decay
 * (g += wd*w) and eps added to sqrt(v_hat):
 *   m_t = b1*m + (1-b1)*g;  v_t = b2*v + (1-b2)*g^2
 *   m_hat = m_t / (1 - b1^t);  v_hat = v_t / (1 - b2^t)
 *   w -= lr * m_hat / (sqrt(v_hat) + eps)
 */
function adamByHand(weights: number[], grads: number[][], lr: number, c: OptimizerConfig): number[][] {
  const w = [...weights];
  const m = w.map(() => 0);
  const v = w.map(() => 0);
  return grads.map((g, k) => {
    const t = k + 1;
    for (let i = 0; i < w.length; i++) {
      const gi = g[i]! + c.weightDecay * w[i]!;
      m[i] = c.beta1 * m[i]! + (1 - c.beta1) * gi;
      v[i] = c.beta2 * v[i]! + (1 - c.beta2) * gi * gi;
      const mHat = m[i]! / (1 - c.beta1 ** t);
      const vHat = v[i]! / (1 - c.beta2 ** t);
      w[i] = w[i]! - (lr * mHat) / (Math.sqrt(vHat) + c.epsilon);
    }
    return [...w];
  });
}

/**
 * AdamW, Loshchilov & Hutter (2019) Algorithm 2 with PyTorch's lr-scaled decay, in float64:
 * Adam moments of the raw gradient, then w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w),
 * with the w on the right taken before the step. Weights from `decayedUpTo` on (a bias) are not decayed.
 */
function adamwByHand(
  weights: number[],
  grads: number[][],
  lr: number,
  c: OptimizerConfig,
  decayedUpTo = weights.length,
): number[][] {
  const w = [...weights];
  const m = w.map(() => 0);
  const v = w.map(() => 0);
  return grads.map((g, k) => {
    const t = k + 1;
    for (let i = 0; i < w.length; i++) {
      m[i] = c.beta1 * m[i]! + (1 - c.beta1) * g[i]!;
      v[i] = c.beta2 * v[i]! + (1 - c.beta2) * g[i]! * g[i]!;
      const mHat = m[i]! / (1 - c.beta1 ** t);
      const vHat = v[i]! / (1 - c.beta2 ** t);
      const wd = i < decayedUpTo ? c.weightDecay : 0;
      w[i] = w[i]! - lr * (mHat / (Math.sqrt(vHat) + c.epsilon) + wd * w[i]!);
    }
    return [...w];
  });
}

const lrOf = (lr: number | number[], step: number): number => (typeof lr === 'number' ? lr : lr[step]!);

/** Index ranges of each param in the flat vector, and whether it is a rank-1 (bias-like) tensor. */
function layersOf(params: ParamSpec[]): { indices: number[]; isBiasLike: boolean }[] {
  let offset = 0;
  return params.map((p) => {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const indices = Array.from({ length: size }, (_, j) => offset + j);
    offset += size;
    return { indices, isBiasLike: p.shape.length === 1 };
  });
}

const norm = (values: number[]): number => Math.sqrt(values.reduce((s, x) => s + x * x, 0));

/**
 * LARS, You et al. (2017) Algorithm 1, in float64, per layer:
 *   trust = eta * |w| / (|g| + wd * |w|)   (1 when |w| or |g| is 0)
 *   v = mu * v + lr * trust * (g + wd * w);  w -= v
 * Rank-1 tensors: v = mu * v + lr * g;  w -= v (trust 1, no decay).
 */
function larsByHand(
  params: ParamSpec[],
  weights: number[],
  grads: number[][],
  lrs: number | number[],
  c: OptimizerConfig,
): number[][] {
  const w = [...weights];
  const v = w.map(() => 0);
  return grads.map((g, k) => {
    const lr = lrOf(lrs, k);
    for (const { indices, isBiasLike } of layersOf(params)) {
      if (isBiasLike) {
        for (const i of indices) {
          v[i] = c.momentum * v[i]! + lr * g[i]!;
          w[i] = w[i]! - v[i];
        }
        continue;
      }
      const wNorm = norm(indices.map((i) => w[i]!));
      const gNorm = norm(indices.map((i) => g[i]!));
      const trust = wNorm === 0 || gNorm === 0 ? 1 : (c.trustCoefficient * wNorm) / (gNorm + c.weightDecay * wNorm);
      for (const i of indices) {
        v[i] = c.momentum * v[i]! + lr * trust * (g[i]! + c.weightDecay * w[i]!);
        w[i] = w[i]! - v[i];
      }
    }
    return [...w];
  });
}

/**
 * LAMB, You et al. (2019) Algorithm 2, in float64, per layer: Adam moments with bias correction,
 *   r = m_hat / (sqrt(v_hat) + eps);  u = r + wd * w;  trust = |w| / |u| (1 when either is 0)
 *   w -= lr * trust * u
 * Rank-1 tensors: w -= lr * r (trust 1, no decay).
 */
function lambByHand(
  params: ParamSpec[],
  weights: number[],
  grads: number[][],
  lr: number,
  c: OptimizerConfig,
): number[][] {
  const w = [...weights];
  const m = w.map(() => 0);
  const v = w.map(() => 0);
  return grads.map((g, k) => {
    const t = k + 1;
    for (const { indices, isBiasLike } of layersOf(params)) {
      const u = indices.map((i) => {
        m[i] = c.beta1 * m[i]! + (1 - c.beta1) * g[i]!;
        v[i] = c.beta2 * v[i]! + (1 - c.beta2) * g[i]! * g[i]!;
        const r = m[i] / (1 - c.beta1 ** t) / (Math.sqrt(v[i] / (1 - c.beta2 ** t)) + c.epsilon);
        return isBiasLike ? r : r + c.weightDecay * w[i]!;
      });
      const wNorm = norm(indices.map((i) => w[i]!));
      const uNorm = norm(u);
      const trust = isBiasLike || wNorm === 0 || uNorm === 0 ? 1 : wNorm / uNorm;
      indices.forEach((i, j) => {
        w[i] = w[i]! - lr * trust * u[j]!;
      });
    }
    return [...w];
  });
}

// The layer-wise rules' layout: a dense kernel [2, 3] (6 values, its own trust ratio) then its
// bias [3] (rank 1: excluded from the trust ratio and weight decay). Values are exact in float32.
const LAYOUT: ParamSpec[] = [
  { name: 'dense/kernel', shape: [2, 3] },
  { name: 'dense/bias', shape: [3] },
];
const L_W0 = [0.5, -1, 1.5, -2, 0.25, 1, /* bias */ 0.5, -0.75, 1];
const L_G = [
  [0.25, -0.5, 1, 0.125, -0.75, 0.5, /* bias */ 0.0625, -0.03125, 0.015625],
  [-0.5, 0.25, 0.75, -0.25, 0.5, -1, /* bias */ -0.03125, 0.0625, 0.0078125],
  [0.125, 0.375, -0.5, 1, -0.25, 0.25, /* bias */ 0.015625, -0.015625, -0.0078125],
];
// The same layout with a kernel of zeros at first, and a kernel gradient of zero at step 2: both
// norms the trust ratio divides by are 0 once.
const ZERO_KERNEL_W0 = [0, 0, 0, 0, 0, 0, 0.5, -0.75, 1];
const ZERO_KERNEL_G = [L_G[0]!, [0, 0, 0, 0, 0, 0, ...L_G[1]!.slice(6)], L_G[2]!];
// Small gradients (L_G / 64, still exact), so that LARS's eta*|w|/|g| exceeds 1.
const SMALL_G = L_G.map((g) => g.map((x) => x / 64));
// Large weights (L_W0 * 16), so that LAMB's |w|/|u| exceeds 10.
const LARGE_W0 = L_W0.map((w) => w * 16);

// Adam inputs: gradients of very different magnitudes, and one parameter that never gets a gradient.
const ADAM_W0 = [1, -2, 4, 0.5];
const ADAM_G = [
  [0.5, -0.001, 200, 0],
  [-1, 0.002, 100, 0],
  [0.25, 0.003, -50, 0],
];

const CASES: Case[] = [
  {
    name: 'plain SGD: w -= lr*g',
    optimizer: 'sgd',
    config: sgd({}),
    params: flatParams(W0.length),
    weights: W0,
    grads: G,
    lr: 0.1,
    expected: [
      // w1 = [1 - 0.05, -2 + 0.025, 4 - 0.2]
      [0.95, -1.975, 3.8],
      // w2 = [0.95 + 0.1, -1.975 - 0.05, 3.8 - 0.1]
      [1.05, -2.025, 3.7],
      // w3 = [1.05 - 0.025, -2.025 - 0.075, 3.7 + 0.05]
      [1.025, -2.1, 3.75],
    ],
  },
  {
    name: 'SGD with momentum 0.9: v = mu*v + g, w -= lr*v',
    optimizer: 'sgd',
    config: sgd({ momentum: 0.9 }),
    params: flatParams(W0.length),
    weights: W0,
    grads: G,
    lr: 0.1,
    expected: [
      // v1 = g1 = [0.5, -0.25, 2];             w1 = [0.95, -1.975, 3.8]
      [0.95, -1.975, 3.8],
      // v2 = 0.9*v1 + g2 = [-0.55, 0.275, 2.8]; w2 = w1 - 0.1*v2 = [1.005, -2.0025, 3.52]
      [1.005, -2.0025, 3.52],
      // v3 = 0.9*v2 + g3 = [-0.245, 0.9975, 2.02]; w3 = w2 - 0.1*v3 = [1.0295, -2.10225, 3.318]
      [1.0295, -2.10225, 3.318],
    ],
  },
  {
    name: 'SGD with Nesterov momentum 0.9: v = mu*v + g, w -= lr*(g + mu*v)',
    optimizer: 'sgd',
    config: sgd({ momentum: 0.9, nesterov: true }),
    params: flatParams(W0.length),
    weights: W0,
    grads: G,
    lr: 0.1,
    expected: [
      // v1 = [0.5, -0.25, 2];   d1 = g1 + 0.9*v1 = [0.95, -0.475, 3.8];     w1 = [0.905, -1.9525, 3.62]
      [0.905, -1.9525, 3.62],
      // v2 = [-0.55, 0.275, 2.8]; d2 = g2 + 0.9*v2 = [-1.495, 0.7475, 3.52]; w2 = [1.0545, -2.02725, 3.268]
      [1.0545, -2.02725, 3.268],
      // v3 = [-0.245, 0.9975, 2.02]; d3 = g3 + 0.9*v3 = [0.0295, 1.64775, 1.318]; w3 = [1.05155, -2.192025, 3.1362]
      [1.05155, -2.192025, 3.1362],
    ],
  },
  {
    name: 'SGD with coupled weight decay 0.1: g += wd*w',
    optimizer: 'sgd',
    config: sgd({ weightDecay: 0.1 }),
    params: kernelParams(W0.length),
    weights: W0,
    grads: G,
    lr: 0.1,
    expected: [
      // g1' = g1 + 0.1*w0 = [0.6, -0.45, 2.4];           w1 = [0.94, -1.955, 3.76]
      [0.94, -1.955, 3.76],
      // g2' = g2 + 0.1*w1 = [-0.906, 0.3045, 1.376];     w2 = [1.0306, -1.98545, 3.6224]
      [1.0306, -1.98545, 3.6224],
      // g3' = g3 + 0.1*w2 = [0.35306, 0.551455, -0.13776]; w3 = [0.995294, -2.0405955, 3.636176]
      [0.995294, -2.0405955, 3.636176],
    ],
  },
  {
    name: 'SGD with momentum 0.9 and weight decay 0.1: decay enters the velocity',
    optimizer: 'sgd',
    config: sgd({ momentum: 0.9, weightDecay: 0.1 }),
    params: kernelParams(W0.length),
    weights: W0,
    grads: G,
    lr: 0.1,
    expected: [
      // g1' = [0.6, -0.45, 2.4] = v1;                                 w1 = [0.94, -1.955, 3.76]
      [0.94, -1.955, 3.76],
      // g2' = [-0.906, 0.3045, 1.376]; v2 = 0.9*v1 + g2' = [-0.366, -0.1005, 3.536]; w2 = [0.9766, -1.94495, 3.4064]
      [0.9766, -1.94495, 3.4064],
      // g3' = g3 + 0.1*w2 = [0.34766, 0.555505, -0.15936]; v3 = [0.01826, 0.465055, 3.02304]; w3 = [0.974774, -1.9914555, 3.104096]
      [0.974774, -1.9914555, 3.104096],
    ],
  },
  {
    name: 'Adam with bias correction, 3 steps',
    optimizer: 'adam',
    config: adam(),
    params: flatParams(ADAM_W0.length),
    weights: ADAM_W0,
    grads: ADAM_G,
    lr: 0.01,
    // Step 1, any g != 0: m_hat = g, v_hat = g^2, so w1 = w0 - lr*g/(|g| + eps) ~ w0 - 0.01*sign(g):
    //   [0.99, -1.99, 3.99, 0.5] (the last never moves: m = v = 0 gives 0/(0 + eps) = 0).
    // Step 2, parameter 0: m2 = 0.9*0.05 + 0.1*(-1) = -0.055, v2 = 0.999*0.00025 + 0.001*1 = 0.00124975,
    //   m_hat = -0.055/0.19 = -0.28947, v_hat = 0.00124975/0.001999 = 0.62519, sqrt = 0.79069,
    //   w2 = 0.99 + 0.01*0.28947/0.79069 = 0.993661.
    expected: adamByHand(ADAM_W0, ADAM_G, 0.01, adam()),
  },
  {
    name: 'Adam with a constant gradient moves every weight by lr*|g|/(|g| + eps) per step',
    optimizer: 'adam',
    config: adam(),
    params: flatParams(3),
    weights: [1, -1, 2],
    grads: [
      [0.25, -4, 1e-3],
      [0.25, -4, 1e-3],
      [0.25, -4, 1e-3],
    ],
    lr: 0.01,
    // Constant g: m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2 exactly, so m_hat = g, v_hat = g^2.
    expected: [1, 2, 3].map((t) => [
      1 - (t * 0.01 * 0.25) / (0.25 + 1e-8),
      -1 + (t * 0.01 * 4) / (4 + 1e-8),
      2 - (t * 0.01 * 1e-3) / (1e-3 + 1e-8),
    ]),
  },
  {
    name: 'Adam with coupled weight decay 0.1, 3 steps',
    optimizer: 'adam',
    config: adam({ weightDecay: 0.1 }),
    params: kernelParams(ADAM_W0.length),
    weights: ADAM_W0,
    grads: ADAM_G,
    lr: 0.01,
    // The decayed weight gives the zero-gradient parameter a gradient: g = 0.1*0.5 = 0.05 at step 1,
    // so it moves by ~lr too: w1[3] ~ 0.49.
    expected: adamByHand(ADAM_W0, ADAM_G, 0.01, adam({ weightDecay: 0.1 })),
  },
  {
    name: 'AdamW with decoupled weight decay 0.1: w -= lr*(m_hat/(sqrt(v_hat) + eps) + wd*w), the bias not decayed',
    optimizer: 'adamw',
    config: adam({ weightDecay: 0.1 }),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    lr: 0.01,
    // Step 1, weight 0: m_hat = g = 0.25, v_hat = g^2, so w1 = 0.5 - 0.01*(0.25/(0.25 + 1e-8) + 0.1*0.5) ~ 0.4895.
    expected: adamwByHand(L_W0, L_G, 0.01, adam({ weightDecay: 0.1 }), 6),
  },
  {
    name: 'AdamW decays a weight whose gradient is zero, where coupled Adam would move it by ~lr',
    optimizer: 'adamw',
    config: adam({ weightDecay: 0.5 }),
    params: kernelParams(ADAM_W0.length),
    weights: ADAM_W0,
    grads: ADAM_G,
    lr: 0.01,
    // The last weight has g = 0 throughout: m = v = 0, so only the decay acts: w_t = 0.5 * (1 - 0.005)^t.
    expected: adamwByHand(ADAM_W0, ADAM_G, 0.01, adam({ weightDecay: 0.5 })),
  },
  {
    name: 'AdamW without weight decay is Adam',
    optimizer: 'adamw',
    config: adam(),
    params: flatParams(ADAM_W0.length),
    weights: ADAM_W0,
    grads: ADAM_G,
    lr: 0.01,
    expected: adamByHand(ADAM_W0, ADAM_G, 0.01, adam()),
  },
  {
    name: 'LARS, momentum 0.9, eta 0.001, no decay: the kernel steps by lr*eta*|w|/|g| * g, the bias by momentum SGD',
    optimizer: 'lars',
    config: lars(),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    lr: 1,
    // Step 1, kernel: |w| = sqrt(8.5625) = 2.92617 = 2*|g|, so trust = 0.001*2 = 0.002 and
    //   w1[0] = 0.5 - 0.002*0.25 = 0.4995. Bias: v1 = lr*g, w1[6] = 0.5 - 0.0625 = 0.4375.
    expected: larsByHand(LAYOUT, L_W0, L_G, 1, lars()),
  },
  {
    name: 'LARS with weight decay 0.05 in the trust ratio and the velocity; the bias is not decayed',
    optimizer: 'lars',
    config: lars({ weightDecay: 0.05, trustCoefficient: 0.02 }),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    lr: 1,
    // Step 1, kernel: trust = 0.02*|w|/(|w|/2 + 0.05*|w|) = 0.02/0.55 = 0.0363636; w1[0] = 0.5 - 0.0363636*(0.25 + 0.05*0.5) = 0.49.
    expected: larsByHand(LAYOUT, L_W0, L_G, 1, lars({ weightDecay: 0.05, trustCoefficient: 0.02 })),
  },
  {
    name: 'LARS without momentum steps by the local LR alone',
    optimizer: 'lars',
    config: lars({ momentum: 0, weightDecay: 0.05, trustCoefficient: 0.02 }),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    lr: 1,
    expected: larsByHand(LAYOUT, L_W0, L_G, 1, lars({ momentum: 0, weightDecay: 0.05, trustCoefficient: 0.02 })),
  },
  {
    name: 'LARS keeps momentum on the scaled update: a new lr applies to new updates only',
    optimizer: 'lars',
    config: lars({ weightDecay: 0.05, trustCoefficient: 0.02 }),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    // A warmup. With v = mu*v + trust*g' and w -= lr*v (LARC's form) the old velocity would be rescaled too.
    lr: [0.25, 0.5, 1],
    expected: larsByHand(LAYOUT, L_W0, L_G, [0.25, 0.5, 1], lars({ weightDecay: 0.05, trustCoefficient: 0.02 })),
  },
  {
    name: 'LARS does not clip the trust ratio (eta*|w|/|g| = 1.28 here)',
    optimizer: 'lars',
    config: lars({ trustCoefficient: 0.01 }),
    params: LAYOUT,
    weights: L_W0,
    grads: SMALL_G,
    lr: 1,
    // Step 1, kernel: |w| = 2*|g|*64, trust = 0.01*128 = 1.28 (LARC's clip mode would use 1): w1[0] = 0.5 - 1.28*0.25/64 = 0.495.
    expected: larsByHand(LAYOUT, L_W0, SMALL_G, 1, lars({ trustCoefficient: 0.01 })),
  },
  {
    name: 'LARS uses trust 1 for a layer whose weights or gradient are all zero',
    optimizer: 'lars',
    config: lars({ weightDecay: 0.05 }),
    params: LAYOUT,
    weights: ZERO_KERNEL_W0,
    grads: ZERO_KERNEL_G,
    lr: 1,
    // Step 1, |w| = 0: v1 = lr*g, the kernel becomes -g. Step 2, |g| = 0: v2 = 0.9*v1 + lr*wd*w1.
    expected: larsByHand(LAYOUT, ZERO_KERNEL_W0, ZERO_KERNEL_G, 1, lars({ weightDecay: 0.05 })),
  },
  {
    name: 'LAMB without weight decay: the kernel steps by lr*|w| along r, the bias by an Adam step',
    optimizer: 'lamb',
    config: adam(),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    lr: 0.05,
    // Step 1: r = g/(|g| + eps) ~ sign(g), |r| ~ sqrt(6) for the kernel, trust = 2.92617/2.44949 = 1.19461,
    //   w1[0] ~ 0.5 - 0.05*1.19461 = 0.440270; the bias moves by ~lr: w1[6] ~ 0.45.
    expected: lambByHand(LAYOUT, L_W0, L_G, 0.05, adam()),
  },
  {
    name: 'LAMB with weight decay 0.1 in u = r + wd*w; the bias is not decayed',
    optimizer: 'lamb',
    config: adam({ weightDecay: 0.1 }),
    params: LAYOUT,
    weights: L_W0,
    grads: L_G,
    lr: 0.05,
    expected: lambByHand(LAYOUT, L_W0, L_G, 0.05, adam({ weightDecay: 0.1 })),
  },
  {
    name: 'LAMB does not clamp the trust ratio (|w|/|u| ~ 19 here)',
    optimizer: 'lamb',
    config: adam(),
    params: LAYOUT,
    weights: LARGE_W0,
    grads: L_G,
    lr: 0.05,
    // Step 1: |w| = 16*2.92617 = 46.8188, |u| ~ sqrt(6), trust ~ 19.1137 (a clamp to 10 would halve the step):
    //   w1[0] ~ 8 - 0.05*19.1137 = 7.04431.
    expected: lambByHand(LAYOUT, LARGE_W0, L_G, 0.05, adam()),
  },
  {
    name: 'LAMB uses trust 1 for a layer of zero weights, and keeps stepping on its moments when the gradient is zero',
    optimizer: 'lamb',
    config: adam({ weightDecay: 0.1 }),
    params: LAYOUT,
    weights: ZERO_KERNEL_W0,
    grads: ZERO_KERNEL_G,
    lr: 0.05,
    // Step 1, |w| = 0: w1 = -lr*r ~ -0.05*sign(g) in the kernel.
    expected: lambByHand(LAYOUT, ZERO_KERNEL_W0, ZERO_KERNEL_G, 0.05, adam({ weightDecay: 0.1 })),
  },
];

function expectRelativelyClose(actual: Float32Array, expected: number[], where: string): void {
  expect(actual.length, where).toBe(expected.length);
  expected.forEach((e, i) => {
    const error = Math.abs(actual[i]! - e);
    expect(error <= RELATIVE_TOLERANCE * Math.abs(e), `${where}, weight ${i}: got ${actual[i]}, expected ${e}`).toBe(
      true,
    );
  });
}

/** The float32 bit patterns of `a`: equal arrays of these mean bit-identical weights. */
const bitsOf = (a: Float32Array): number[] => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/** Euclidean norm of after - before over [offset, offset + size), in float64. */
function stepNorm(before: Float32Array, after: Float32Array, offset: number, size: number): number {
  return norm(Array.from(after.subarray(offset, offset + size), (x, j) => x - before[offset + j]!));
}

/** Deterministic gradients in [-1, 1) from a fixed-seed linear congruential generator. */
function seededGrads(steps: number, length: number, seed = 12345): number[][] {
  let state = seed;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 31 - 1;
  };
  return Array.from({ length: steps }, () => Array.from({ length }, next));
}

describe('optimizer conformance', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const optimizer = createOptimizer(c.optimizer, c.config, c.params);
    expect(optimizer.name).toBe(c.optimizer);
    const weights = Float32Array.from(c.weights);
    c.grads.forEach((g, step) => {
      optimizer.apply(weights, Float32Array.from(g), lrOf(c.lr, step));
      expectRelativelyClose(weights, c.expected[step]!, `after step ${step + 1}`);
    });
  });

  it('moves each weight by about lr, against its gradient, on the first Adam step whatever the gradient size', () => {
    const lr = 0.01;
    const grads = [1e-3, -0.5, 7, -300, 0, 2e4];
    const weights = new Float32Array(grads.length).fill(1);
    createOptimizer('adam', adam(), flatParams(grads.length)).apply(weights, Float32Array.from(grads), lr);
    grads.forEach((g, i) => {
      const delta = 1 - weights[i]!;
      if (g === 0) {
        expect(delta, `weight ${i}`).toBe(0);
      } else {
        expect(Math.sign(delta), `weight ${i}`).toBe(Math.sign(g));
        // |g|/(|g| + eps) >= 1 - 1e-5 here; float32 rounding of w near 1 adds ~6e-8/lr.
        expect(Math.abs(Math.abs(delta) - lr) / lr, `weight ${i}`).toBeLessThan(1e-4);
      }
    });
  });

  it('moves a layer by lr*eta*|w| on the first LARS step without momentum or decay, and the bias by lr*g', () => {
    const lr = 10;
    const eta = DEFAULT_OPTIMIZER_CONFIG.trustCoefficient;
    const weights = Float32Array.from(L_W0);
    const before = weights.slice();
    createOptimizer('lars', lars({ momentum: 0 }), LAYOUT).apply(weights, Float32Array.from(L_G[0]!), lr);
    // The step is 1e-2 of |w|, so float32 rounding of each weight (~6e-8 of it) is ~1e-5 of the step.
    const expected = lr * eta * norm(L_W0.slice(0, 6));
    expect(Math.abs(stepNorm(before, weights, 0, 6) - expected) / expected).toBeLessThan(1e-4);
    expectRelativelyClose(
      weights.subarray(6),
      [6, 7, 8].map((i) => L_W0[i]! - lr * L_G[0]![i]!),
      'bias',
    );
  });

  it('moves every non-excluded layer by lr*|w| on every LAMB step (the trust ratio), whatever the gradient', () => {
    const params: ParamSpec[] = [...LAYOUT, { name: 'dense_1/kernel', shape: [3, 2] }];
    const lr = 0.1;
    const grads = seededGrads(6, 15);
    const optimizer = createOptimizer('lamb', adam({ weightDecay: 0.1 }), params);
    const weights = Float32Array.from([...L_W0, 2, -1.5, 0.75, 1, -0.5, 3]);
    for (const [step, g] of grads.entries()) {
      const before = weights.slice();
      optimizer.apply(weights, Float32Array.from(g), lr);
      for (const [offset, size] of [
        [0, 6],
        [9, 6],
      ] as const) {
        const expected = lr * norm(Array.from(before.subarray(offset, offset + size)));
        // The step is ~lr of |w|: float32 rounding of the weights is ~1e-6 of it.
        expect(
          Math.abs(stepNorm(before, weights, offset, size) - expected) / expected,
          `step ${step + 1}, layer at ${offset}`,
        ).toBeLessThan(1e-5);
      }
    }
  });

  it('decays weights by (1 - lr*wd) per AdamW step when the gradient is zero', () => {
    const lr = 0.01;
    const wd = 0.5;
    const optimizer = createOptimizer('adamw', adam({ weightDecay: wd }), LAYOUT);
    const weights = Float32Array.from(L_W0);
    const zero = new Float32Array(L_W0.length);
    for (let t = 1; t <= 5; t++) {
      optimizer.apply(weights, zero, lr);
      expectRelativelyClose(
        weights,
        // The bias (the last three values, rank 1) is not decayed.
        L_W0.map((w, i) => (i < 6 ? w * (1 - lr * wd) ** t : w)),
        `after step ${t}`,
      );
    }
  });

  it.each(['sgd', 'adam', 'adamw'] as const)(
    '%s: weight decay leaves rank-1 tensors (biases, batch-norm scale and offset) alone',
    (name) => {
      const config = { ...DEFAULT_OPTIMIZER_CONFIG, momentum: 0.9, weightDecay: 0.5 };
      const optimizer = createOptimizer(name, config, LAYOUT);
      const weights = Float32Array.from(L_W0);
      // Zero gradients: only the decay moves a weight (Adam's coupled decay through the moments).
      for (let t = 0; t < 3; t++) optimizer.apply(weights, new Float32Array(L_W0.length), 0.01);
      expect([...weights.subarray(6)]).toEqual(L_W0.slice(6));
      weights.subarray(0, 6).forEach((w, i) => expect(Math.abs(w)).toBeLessThan(Math.abs(L_W0[i]!)));
    },
  );

  it('excludes rank-1 tensors (biases, batch-norm scale and offset) and scalars from the trust ratio', () => {
    expect(isExcludedFromTrust({ name: 'dense/bias', shape: [10] })).toBe(true);
    expect(isExcludedFromTrust({ name: 'batch_normalization/gamma', shape: [32] })).toBe(true);
    expect(isExcludedFromTrust({ name: 'batch_normalization/beta', shape: [32] })).toBe(true);
    expect(isExcludedFromTrust({ name: 'dense/kernel', shape: [784, 10] })).toBe(false);
    expect(isExcludedFromTrust({ name: 'scalar', shape: [] })).toBe(true);
    expect(isExcludedFromTrust({ name: 'conv2d/kernel', shape: [3, 3, 1, 8] })).toBe(false);
  });

  it('refuses weights that do not match the params given to LARS and LAMB', () => {
    for (const name of ['lars', 'lamb'] as const) {
      const optimizer = createOptimizer(name, config({}), LAYOUT);
      const apply = (): void => optimizer.apply(new Float32Array(8), new Float32Array(8), 0.1);
      expect(apply, name).toThrow(BatchlabError);
      expect(apply, name).toThrow(/^(lars|lamb): weights have 8 values and the gradient 8, but the 2 params .* hold 9/);
    }
  });

  it('lists every optimizer by its --optimizer name', () => {
    expect(OPTIMIZER_NAMES).toEqual(['sgd', 'adam', 'adamw', 'lars', 'lamb']);
  });

  it('keeps the default config at PyTorch defaults for Adam (eps 1e-8, betas 0.9/0.999) and eta 0.001 for LARS', () => {
    expect(DEFAULT_OPTIMIZER_CONFIG).toMatchObject({
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-8,
      weightDecay: 0,
      nesterov: false,
      trustCoefficient: 0.001,
    });
  });
});

/** A config per rule that exercises its state: momentum, decay, and the trust ratio. */
const INSTANCE_CONFIGS: Record<OptimizerName, OptimizerConfig> = {
  sgd: sgd({ momentum: 0.9 }),
  adam: adam(),
  adamw: adam({ weightDecay: 0.1 }),
  lars: lars({ weightDecay: 0.05, trustCoefficient: 0.02 }),
  lamb: adam({ weightDecay: 0.1 }),
};

describe.each(OPTIMIZER_NAMES)('%s optimizer instances', (name) => {
  const optimizerConfig = INSTANCE_CONFIGS[name];
  const create = () => createOptimizer(name, optimizerConfig, LAYOUT);
  const grad = Float32Array.from(L_G[0]!);

  it('updates the weights array in place and leaves the gradient untouched', () => {
    const weights = Float32Array.from(L_W0);
    const returned = create().apply(weights, grad, 0.1);
    expect(returned).toBeUndefined();
    expect(Array.from(weights)).not.toEqual(L_W0);
    expect(Array.from(grad)).toEqual(L_G[0]);
  });

  it('keeps state per instance: a fresh instance behaves as if no other had run', () => {
    const used = create();
    const usedWeights = Float32Array.from(L_W0);
    for (let i = 0; i < 3; i++) used.apply(usedWeights, grad, 0.1);

    const fresh = create();
    const freshWeights = Float32Array.from(L_W0);
    fresh.apply(freshWeights, grad, 0.1);

    const reference = create();
    const referenceWeights = Float32Array.from(L_W0);
    reference.apply(referenceWeights, grad, 0.1);
    expect(bitsOf(freshWeights)).toEqual(bitsOf(referenceWeights));

    // And the used instance still carries its own history, untouched by the fresh one, into its 4th step.
    used.apply(usedWeights, grad, 0.1);
    const solo = create();
    const soloWeights = Float32Array.from(L_W0);
    for (let i = 0; i < 4; i++) solo.apply(soloWeights, grad, 0.1);
    expect(bitsOf(usedWeights)).toEqual(bitsOf(soloWeights));
  });

  it("interleaves two instances without either seeing the other's steps", () => {
    const gA = new Float32Array(L_W0.length).fill(1);
    const gB = Float32Array.from(L_G[1]!);
    const a = create();
    const b = create();
    const wA = Float32Array.from(L_W0);
    const wB = Float32Array.from(L_W0);
    for (let i = 0; i < 3; i++) {
      a.apply(wA, gA, 0.1);
      b.apply(wB, gB, 0.1);
    }
    const aloneA = create();
    const wAloneA = Float32Array.from(L_W0);
    for (let i = 0; i < 3; i++) aloneA.apply(wAloneA, gA, 0.1);
    expect(bitsOf(wA)).toEqual(bitsOf(wAloneA));
  });

  it('continues bit-identically in a fresh instance loaded with the saved state', () => {
    const grads = seededGrads(5, L_W0.length, 7).map((g) => Float32Array.from(g));
    const original = create();
    const weights = Float32Array.from(L_W0);
    grads.slice(0, 2).forEach((g) => original.apply(weights, g, 0.1));

    const saved = original.state();
    const restored = create();
    restored.loadState(saved);
    const restoredWeights = weights.slice();
    for (const g of grads.slice(2)) {
      original.apply(weights, g, 0.1);
      restored.apply(restoredWeights, g, 0.1);
      expect(bitsOf(restoredWeights)).toEqual(bitsOf(weights));
    }
    expect(restored.state()).toEqual(original.state());
  });

  it('saves a copy of the state and loads a copy, so later steps and edits do not leak between them', () => {
    const optimizer = create();
    const weights = Float32Array.from(L_W0);
    optimizer.apply(weights, grad, 0.1);
    const saved = optimizer.state();
    const snapshot = structuredClone(saved);
    optimizer.apply(weights, grad, 0.1);
    expect(saved).toEqual(snapshot);

    const restored = create();
    restored.loadState(saved);
    for (const value of Object.values(saved)) if (value instanceof Float32Array) value.fill(123);
    expect(restored.state()).toEqual(snapshot);
  });

  it('resets to a fresh instance when loaded with the state of one that has not stepped', () => {
    const used = create();
    const usedWeights = Float32Array.from(L_W0);
    for (let i = 0; i < 3; i++) used.apply(usedWeights, grad, 0.1);
    used.loadState(create().state());

    const weights = Float32Array.from(L_W0);
    const fresh = create();
    const freshWeights = Float32Array.from(L_W0);
    used.apply(weights, grad, 0.1);
    fresh.apply(freshWeights, grad, 0.1);
    expect(bitsOf(weights)).toEqual(bitsOf(freshWeights));
  });

  it('refuses a state saved by another kind of optimizer or for another model', () => {
    const other: OptimizerState =
      name === 'sgd' || name === 'lars'
        ? { t: 1, m: new Float32Array(9), v: new Float32Array(9) }
        : { velocity: new Float32Array(9) };
    expect(() => create().loadState(other)).toThrow(BatchlabError);
    expect(() => create().loadState(other)).toThrow(/unexpected keys/);

    const optimizer = create();
    optimizer.apply(Float32Array.from(L_W0), grad, 0.1);
    const short = Object.fromEntries(
      Object.entries(optimizer.state()).map(([key, value]) => [
        key,
        value instanceof Float32Array ? value.subarray(1) : value,
      ]),
    );
    // LARS and LAMB know the model size and refuse at load; the element-wise rules at the next step.
    const restored = create();
    expect(() => {
      restored.loadState(short);
      restored.apply(Float32Array.from(L_W0), grad, 0.1);
    }).toThrow(/holds 8 values/);
  });

  if (name === 'adam' || name === 'adamw' || name === 'lamb') {
    it('refuses a step counter that is not a count, or moments without a step', () => {
      expect(() => create().loadState({ t: -1 })).toThrow(/"t" must be a step count/);
      expect(() => create().loadState({ t: 1.5, m: new Float32Array(9), v: new Float32Array(9) })).toThrow(
        /"t" must be a step count/,
      );
      expect(() => create().loadState({ t: 0, m: new Float32Array(9), v: new Float32Array(9) })).toThrow(
        /present exactly when/,
      );
      expect(() => create().loadState({ t: 2, m: new Float32Array(9) })).toThrow(/present exactly when/);
    });
  }
});
