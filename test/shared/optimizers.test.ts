import { describe, expect, it } from 'vitest';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG, type OptimizerConfig, type OptimizerName } from '../../shared/optimizers/index.js';

// One conformance suite for every update rule (in the style of hono's common.case.test.ts): a
// table of cases, each with weights, the mean gradient of each step, a learning rate and the
// weights expected after each step. Expected values are derived by hand from the published
// formulas, in float64, never by calling the implementation. The implementation works in float32,
// so results are compared with a relative tolerance.

const RELATIVE_TOLERANCE = 1e-6;

interface Case {
  name: string;
  optimizer: OptimizerName;
  config: OptimizerConfig;
  weights: number[];
  /** The mean gradient handed to `apply` at each step. */
  grads: number[][];
  lr: number;
  /** Weights after step 1, 2, ... */
  expected: number[][];
}

const sgd = (patch: Partial<OptimizerConfig>): OptimizerConfig => ({ ...DEFAULT_OPTIMIZER_CONFIG, momentum: 0, nesterov: false, weightDecay: 0, ...patch });
const adam = (patch: Partial<OptimizerConfig> = {}): OptimizerConfig => ({ ...DEFAULT_OPTIMIZER_CONFIG, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, ...patch });

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
    weights: [1, -1, 2],
    grads: [
      [0.25, -4, 1e-3],
      [0.25, -4, 1e-3],
      [0.25, -4, 1e-3],
    ],
    lr: 0.01,
    // Constant g: m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2 exactly, so m_hat = g, v_hat = g^2.
    expected: [1, 2, 3].map((t) => [1 - (t * 0.01 * 0.25) / (0.25 + 1e-8), -1 + (t * 0.01 * 4) / (4 + 1e-8), 2 - (t * 0.01 * 1e-3) / (1e-3 + 1e-8)]),
  },
  {
    name: 'Adam with coupled weight decay 0.1, 3 steps',
    optimizer: 'adam',
    config: adam({ weightDecay: 0.1 }),
    weights: ADAM_W0,
    grads: ADAM_G,
    lr: 0.01,
    // The decayed weight gives the zero-gradient parameter a gradient: g = 0.1*0.5 = 0.05 at step 1,
    // so it moves by ~lr too: w1[3] ~ 0.49.
    expected: adamByHand(ADAM_W0, ADAM_G, 0.01, adam({ weightDecay: 0.1 })),
  },
];

function expectRelativelyClose(actual: Float32Array, expected: number[], where: string): void {
  expect(actual.length, where).toBe(expected.length);
  expected.forEach((e, i) => {
    const error = Math.abs(actual[i]! - e);
    expect(error <= RELATIVE_TOLERANCE * Math.abs(e), `${where}, weight ${i}: got ${actual[i]}, expected ${e}`).toBe(true);
  });
}

describe('optimizer conformance', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const optimizer = createOptimizer(c.optimizer, c.config);
    expect(optimizer.name).toBe(c.optimizer);
    const weights = Float32Array.from(c.weights);
    c.grads.forEach((g, step) => {
      optimizer.apply(weights, Float32Array.from(g), c.lr);
      expectRelativelyClose(weights, c.expected[step]!, `after step ${step + 1}`);
    });
  });

  it('moves each weight by about lr, against its gradient, on the first Adam step whatever the gradient size', () => {
    const lr = 0.01;
    const grads = [1e-3, -0.5, 7, -300, 0, 2e4];
    const weights = new Float32Array(grads.length).fill(1);
    createOptimizer('adam', adam()).apply(weights, Float32Array.from(grads), lr);
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

  it('keeps the default config at PyTorch defaults for Adam (eps 1e-8, betas 0.9/0.999)', () => {
    expect(DEFAULT_OPTIMIZER_CONFIG).toMatchObject({ beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, nesterov: false });
  });
});

describe.each(['sgd', 'adam'] as const)('%s optimizer instances', (name) => {
  const config = name === 'sgd' ? sgd({ momentum: 0.9 }) : adam();

  it('updates the weights array in place and leaves the gradient untouched', () => {
    const optimizer = createOptimizer(name, config);
    const weights = Float32Array.from([1, -2, 4]);
    const grad = Float32Array.from([0.5, -0.25, 2]);
    const returned = optimizer.apply(weights, grad, 0.1);
    expect(returned).toBeUndefined();
    expect(Array.from(weights)).not.toEqual([1, -2, 4]);
    expect(Array.from(grad)).toEqual([0.5, -0.25, 2]);
  });

  it('keeps state per instance: a fresh instance behaves as if no other had run', () => {
    const grad = Float32Array.from([0.5, -0.25, 2]);
    const used = createOptimizer(name, config);
    const usedWeights = Float32Array.from(W0);
    for (let i = 0; i < 3; i++) used.apply(usedWeights, grad, 0.1);

    const fresh = createOptimizer(name, config);
    const freshWeights = Float32Array.from(W0);
    fresh.apply(freshWeights, grad, 0.1);

    const reference = createOptimizer(name, config);
    const referenceWeights = Float32Array.from(W0);
    reference.apply(referenceWeights, grad, 0.1);
    expect(Array.from(freshWeights)).toEqual(Array.from(referenceWeights));

    // And the used instance still carries its own history, untouched by the fresh one, into its 4th step.
    used.apply(usedWeights, grad, 0.1);
    const solo = createOptimizer(name, config);
    const soloWeights = Float32Array.from(W0);
    for (let i = 0; i < 4; i++) solo.apply(soloWeights, grad, 0.1);
    expect(Array.from(usedWeights)).toEqual(Array.from(soloWeights));
  });

  it('interleaves two instances without either seeing the other\'s steps', () => {
    const gA = Float32Array.from([1, 1, 1]);
    const gB = Float32Array.from([-3, 0.5, 2]);
    const a = createOptimizer(name, config);
    const b = createOptimizer(name, config);
    const wA = Float32Array.from(W0);
    const wB = Float32Array.from(W0);
    for (let i = 0; i < 3; i++) {
      a.apply(wA, gA, 0.1);
      b.apply(wB, gB, 0.1);
    }
    const aloneA = createOptimizer(name, config);
    const wAloneA = Float32Array.from(W0);
    for (let i = 0; i < 3; i++) aloneA.apply(wAloneA, gA, 0.1);
    expect(Array.from(wA)).toEqual(Array.from(wAloneA));
  });
});
