// Estimator correctness (docs/EXPERIMENTS.md, "Estimator correctness"): at frozen MLP weights, the
// per-step S_hat and G2_hat of simulated data-parallel steps average to the exact tr(Σ) and |G|^2
// computed from every per-example gradient of a finite population.
//
// What the estimator targets when micro-batches are drawn WITHOUT replacement from N examples
// (derivation): let G = mean_i g_i and S = Σ_i |g_i − G|^2 / (N − 1). A simple random sample of m
// examples has E|mean − G|^2 = (1 − m/N) S / m, so with micro-batches of b_k and B = Σ b_k:
//   E[s_k] = |G|^2 + S (1/b_k − 1/N),   E[A] = |G|^2 + S (K/B − 1/N),   E[n] = |G|^2 + S (1/B − 1/N)
//   E[S_hat]  = B E[A − n] / (K − 1) = S                     (the N − 1 normalization, exactly)
//   E[G2_hat] = E[n] − S/B = |G|^2 − S/N                     (the finite-population correction)
// So the test compares mean S_hat with S (1/(N − 1) form) and mean G2_hat with |G|^2 − S/N.

import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../../shared/backend.js';
import { embeddedSubsetDir, loadDataset, type Dataset } from '../../../shared/data/index.js';
import { createRandom, type SeededRandom } from '../../../shared/data/seeded-random.js';
import { buildModel } from '../../../shared/models/index.js';
import { paramSpecsOf, readWeights, writeWeights } from '../../../shared/param-layout.js';
import { EpochSampler } from '../../../shared/sampler.js';
import { estimateStepNoise } from '../../../shared/statistics/noise-scale.js';
import { initialWeights } from '../../../shared/weight-init.js';
import { computeMicroBatch, type GradientModel } from '../../../worker/gradient.js';

/** Population size: the first N training examples of the embedded Fashion-MNIST subset. */
const N = 2000;
const HIDDEN = [16];
/** A short SGD warm-up before freezing, so the weights are past the coherent start of training. */
const TRAIN_STEPS = 150;
const TRAIN_BATCH = 64;
const TRAIN_LR = 0.05;

/** Per-example gradients of the population, row i at [i*P, (i+1)*P). */
let perExample: Float32Array;
let params: number;
/** Exact |G|^2 and tr(Σ) with the 1/(N − 1) normalization, in float64. */
let exactG2: number;
let exactTrace: number;

function trainBriefly(gm: GradientModel, dataset: Dataset): void {
  const sampler = new EpochSampler(dataset.train.count, 5);
  const size = dataset.sampleShape.reduce((a, b) => a * b, 1);
  const images = new Float32Array(TRAIN_BATCH * size);
  const labels = new Int32Array(TRAIN_BATCH);
  for (let step = 0; step < TRAIN_STEPS; step++) {
    sampler.indicesFor(step, TRAIN_BATCH).forEach((index, j) => {
      images.set(dataset.train.images.subarray(index * size, (index + 1) * size), j * size);
      labels[j] = dataset.train.labels[index]!;
    });
    const { gradSum } = computeMicroBatch(gm, images, labels, TRAIN_BATCH);
    writeWeights(
      gm.model,
      readWeights(gm.model).map((w, i) => w - (TRAIN_LR / TRAIN_BATCH) * gradSum[i]!),
    );
  }
}

beforeAll(async () => {
  await selectBackend('cpu');
  const dataset = await loadDataset({ name: 'fashion-mnist', dataDir: embeddedSubsetDir()!, seed: 0 });
  const model = buildModel('mlp', { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden: HIDDEN });
  writeWeights(model, initialWeights(paramSpecsOf(model), 3));
  const gm = { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
  trainBriefly(gm, dataset);

  // computeMicroBatch on one example returns that example's gradient g_i (a sum of one).
  const size = dataset.sampleShape.reduce((a, b) => a * b, 1);
  for (let i = 0; i < N; i++) {
    const { gradSum } = computeMicroBatch(
      gm,
      dataset.train.images.subarray(i * size, (i + 1) * size),
      Int32Array.of(dataset.train.labels[i]!),
      1,
    );
    if (i === 0) {
      params = gradSum.length;
      perExample = new Float32Array(N * params);
    }
    perExample.set(gradSum, i * params);
  }
  model.dispose();

  const mean = new Float64Array(params);
  for (let i = 0; i < N; i++) addRow(mean, i);
  for (let j = 0; j < params; j++) mean[j]! /= N;
  exactG2 = squaredNorm(mean, 1);
  let deviations = 0;
  for (let i = 0; i < N; i++) {
    const row = i * params;
    for (let j = 0; j < params; j++) deviations += (perExample[row + j]! - mean[j]!) ** 2;
  }
  exactTrace = deviations / (N - 1);
}, 120_000);

function addRow(into: Float64Array, example: number): void {
  // Locals, not the module bindings, keep this hot loop fast.
  const rows = perExample;
  const p = into.length;
  const row = example * p;
  for (let j = 0; j < p; j++) into[j]! += rows[row + j]!;
}

/** |v / divisor|^2 */
function squaredNorm(v: Float64Array, divisor: number): number {
  let sq = 0;
  for (let j = 0; j < v.length; j++) sq += v[j]! * v[j]!;
  return sq / (divisor * divisor);
}

/** Draws `count` distinct examples uniformly (partial Fisher–Yates on a persistent permutation). */
function drawWithoutReplacement(pool: Uint32Array, count: number, random: SeededRandom): Uint32Array {
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(random.next() * (pool.length - i));
    const t = pool[i]!;
    pool[i] = pool[j]!;
    pool[j] = t;
  }
  return pool.subarray(0, count);
}

function meanAndStandardError(values: readonly number[]): { mean: number; se: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1);
  return { mean, se: Math.sqrt(variance / values.length) };
}

/**
 * Simulates data-parallel steps at the frozen weights: each step draws Σ b_k distinct examples,
 * splits them into micro-batches of `sizes`, builds g_k and gbar in float64 and runs the estimator.
 * With every b_k = 1 it also returns the largest relative gap between S_hat and the sample
 * variance Σ |g_i − gbar|^2 / (K − 1) of the step's K examples.
 */
function simulate(sizes: readonly number[], steps: number, seed: number) {
  const random = createRandom(seed);
  const pool = Uint32Array.from({ length: N }, (_, i) => i);
  const batch = sizes.reduce((a, b) => a + b, 0);
  const sHats: number[] = [];
  const g2Hats: number[] = [];
  let worstVarianceGap = 0;
  const global = new Float64Array(params);
  const local = new Float64Array(params);
  for (let step = 0; step < steps; step++) {
    const drawn = drawWithoutReplacement(pool, batch, random);
    global.fill(0);
    const microBatches = [];
    let offset = 0;
    for (const b of sizes) {
      local.fill(0);
      for (let i = offset; i < offset + b; i++) addRow(local, drawn[i]!);
      for (let j = 0; j < params; j++) global[j]! += local[j]!;
      microBatches.push({ samples: b, sqNorm: squaredNorm(local, b) });
      offset += b;
    }
    const estimate = estimateStepNoise(microBatches, squaredNorm(global, batch));
    if (!estimate.estimable) throw new Error(estimate.reason);
    sHats.push(estimate.sHat);
    g2Hats.push(estimate.g2Hat);
    if (sizes.every((b) => b === 1)) {
      let deviations = 0;
      for (const example of drawn) {
        const row = example * params;
        for (let j = 0; j < params; j++) deviations += (perExample[row + j]! - global[j]! / batch) ** 2;
      }
      const sampleVariance = deviations / (sizes.length - 1);
      worstVarianceGap = Math.max(worstVarianceGap, Math.abs(estimate.sHat - sampleVariance) / sampleVariance);
    }
  }
  return { s: meanAndStandardError(sHats), g2: meanAndStandardError(g2Hats), worstVarianceGap };
}

/** Steps per configuration: many where a step is cheap (b = 1), fewer where it sums 128–256 rows. */
const CONFIGS: { name: string; sizes: number[]; steps: number; seed: number }[] = [
  { name: 'K = 2, b = 1', sizes: [1, 1], steps: 2000, seed: 1001 },
  { name: 'K = 4, b = 1', sizes: [1, 1, 1, 1], steps: 2000, seed: 1002 },
  { name: 'K = 2, b = 16', sizes: [16, 16], steps: 400, seed: 1003 },
  { name: 'K = 4, b = 16', sizes: [16, 16, 16, 16], steps: 400, seed: 1004 },
  { name: 'K = 2, b = 64', sizes: [64, 64], steps: 400, seed: 1005 },
  { name: 'K = 4, b = 64', sizes: [64, 64, 64, 64], steps: 300, seed: 1006 },
  { name: 'K = 3, unequal b = 8, 24, 32', sizes: [8, 24, 32], steps: 400, seed: 1007 },
];

describe('noise-scale estimator against exact per-example statistics (Fashion-MNIST MLP, N = 2000)', () => {
  it.for(CONFIGS)(
    'averages to tr(Σ) and |G|^2 − tr(Σ)/N within 3 standard errors ($name)',
    { timeout: 30_000 },
    async ({ sizes, steps, seed }, { annotate }) => {
      const { s, g2, worstVarianceGap } = simulate(sizes, steps, seed);
      const g2Target = exactG2 - exactTrace / N;
      await annotate(
        `tr(Σ) exact ${exactTrace.toFixed(3)}, S_hat mean ${s.mean.toFixed(3)} ± ${s.se.toFixed(3)}; ` +
          `|G|^2 − tr(Σ)/N exact ${g2Target.toFixed(4)} (|G|^2 ${exactG2.toFixed(4)}), G2_hat mean ${g2.mean.toFixed(4)} ± ${g2.se.toFixed(4)}` +
          (sizes.every((b) => b === 1)
            ? `; max |S_hat − sample variance| / variance ${worstVarianceGap.toExponential(2)}`
            : ''),
      );
      expect(Math.abs(s.mean - exactTrace)).toBeLessThan(3 * s.se);
      expect(Math.abs(g2.mean - g2Target)).toBeLessThan(3 * g2.se);
      // The comparisons are informative: SE(S) is under 5% of tr(Σ), and SE(G2) under 15% of
      // |G|^2 once b >= 16 (at b = 1 one step's G2_hat is dominated by tr(Σ)/B, 34–68 |G|^2 here).
      expect(s.se).toBeLessThan(0.05 * exactTrace);
      if (Math.min(...sizes) >= 16) expect(g2.se).toBeLessThan(0.15 * exactG2);
      if (sizes.every((b) => b === 1)) expect(worstVarianceGap).toBeLessThan(1e-9);
    },
  );
});
