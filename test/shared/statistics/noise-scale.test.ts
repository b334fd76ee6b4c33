import { describe, expect, it } from 'vitest';
import {
  estimateStepNoise,
  NoiseScaleEstimator,
  temperatureOf,
  type NoiseScaleResult,
  type NoiseScaleStepInput,
} from '../../../shared/statistics/noise-scale.js';

/**
 * A step whose per-step estimates are exactly `sHat` and `g2Hat`: K equal micro-batches of `b`
 * samples, n = G2 + S/B and every s_k = A = n + S (K − 1)/B (inverting the estimator).
 */
function stepWith(
  sHat: number,
  g2Hat: number,
  opts: { k?: number; b?: number; lr?: number; momentum?: number } = {},
): NoiseScaleStepInput {
  const k = opts.k ?? 2;
  const b = opts.b ?? 8;
  const batch = k * b;
  const n = g2Hat + sHat / batch;
  const a = n + (sHat * (k - 1)) / batch;
  return {
    microBatches: Array.from({ length: k }, () => ({ samples: b, sqNorm: a })),
    globalSqNorm: n,
    lr: opts.lr ?? 0.1,
    globalBatchSize: batch,
    momentum: opts.momentum ?? 0.9,
  };
}

describe('estimateStepNoise', () => {
  it('gives no estimate from a single micro-batch and says why', () => {
    const r = estimateStepNoise([{ samples: 64, sqNorm: 2 }], 2);
    expect(r.estimable).toBe(false);
    if (!r.estimable) expect(r.reason).toMatch(/at least 2 micro-batch.*K = 1/);
  });

  it("reduces to McCandlish's B_small/B_big formulas for equal micro-batches", () => {
    const b = 16;
    const sqNorms = [3.1, 2.4, 2.9, 3.6];
    const n = 1.3;
    const bBig = b * sqNorms.length;
    const small = sqNorms.reduce((x, y) => x + y, 0) / sqNorms.length; // |G_small|^2 averaged over the K small batches
    const r = estimateStepNoise(
      sqNorms.map((s) => ({ samples: b, sqNorm: s })),
      n,
    );
    if (!r.estimable) throw new Error(r.reason);
    expect(r.g2Hat).toBeCloseTo((bBig * n - b * small) / (bBig - b), 12);
    expect(r.sHat).toBeCloseTo((small - n) / (1 / b - 1 / bBig), 12);
  });

  it('weights unequal micro-batches by their sample counts', () => {
    const r = estimateStepNoise(
      [
        { samples: 10, sqNorm: 4 },
        { samples: 30, sqNorm: 2 },
      ],
      1.5,
    );
    if (!r.estimable) throw new Error(r.reason);
    // A = (10·4 + 30·2)/40 = 2.5; S = 40 (2.5 − 1.5)/1 = 40; G2 = 1.5 − 40/40 = 0.5.
    expect(r.sHat).toBeCloseTo(40, 12);
    expect(r.g2Hat).toBeCloseTo(0.5, 12);
  });
});

describe('NoiseScaleEstimator', () => {
  it('returns a constant from the first step: the EMAs are bias-corrected', () => {
    const est = new NoiseScaleEstimator({ beta: 0.9 });
    for (let step = 1; step <= 5; step++) {
      const r = est.update(stepWith(80, 2));
      expect(r.sEma).toBeCloseTo(80, 10);
      expect(r.g2Ema).toBeCloseTo(2, 10);
      expect(r.bSimple).toBeCloseTo(40, 8);
      expect(r.stepsSinceReset).toBe(step);
    }
  });

  it('divides the EMAs instead of smoothing the per-step ratio', () => {
    const beta = 0.5;
    const est = new NoiseScaleEstimator({ beta });
    est.update(stepWith(10, 1)); // ratio 10
    const r = est.update(stepWith(10, 0.1)); // ratio 100
    // Bias-corrected weights after two steps: 1/3 and 2/3.
    const g2Ema = (1 / 3) * 1 + (2 / 3) * 0.1;
    const ratioEma = (1 / 3) * 10 + (2 / 3) * 100;
    expect(r.sEma).toBeCloseTo(10, 10);
    expect(r.g2Ema).toBeCloseTo(g2Ema, 10);
    expect(r.bSimple).toBeCloseTo(10 / g2Ema, 8); // 25
    expect(Math.abs(r.bSimple! - ratioEma)).toBeGreaterThan(40);
  });

  it('keeps negative per-step G2 estimates in the EMA and reports no B_simple while the EMA is not positive', () => {
    const est = new NoiseScaleEstimator({ beta: 0.5 });
    const first = est.update(stepWith(100, -3));
    expect(first.estimable).toBe(true);
    expect(first.g2Hat).toBeCloseTo(-3, 10);
    expect(first.g2Ema).toBeCloseTo(-3, 10);
    expect(first.bSimple).toBeNull();
    const second = est.update(stepWith(100, 5));
    // (1/3)(−3) + (2/3)(5) = 7/3: the negative value still pulls the mean down.
    expect(second.g2Ema).toBeCloseTo(7 / 3, 10);
    expect(second.bSimple).toBeCloseTo(100 / (7 / 3), 8);
  });

  it('reports no estimate for a step with one micro-batch and leaves the EMAs untouched', () => {
    const est = new NoiseScaleEstimator();
    est.update(stepWith(50, 1));
    const r = est.update({
      microBatches: [{ samples: 16, sqNorm: 9 }],
      globalSqNorm: 9,
      lr: 0.1,
      globalBatchSize: 16,
      momentum: 0.9,
    });
    expect(r.estimable).toBe(false);
    if (!r.estimable) expect(r.reason).toContain('K = 1');
    expect(r.sHat).toBeNull();
    expect(r.sEma).toBeCloseTo(50, 10);
    expect(r.stepsSinceReset).toBe(1);
  });

  it('exposes the temperature lr / (B (1 − momentum))', () => {
    expect(temperatureOf(0.4, 128, 0.9)).toBeCloseTo(0.4 / (128 * 0.1), 15);
    const r = new NoiseScaleEstimator().update(stepWith(10, 1, { k: 4, b: 32, lr: 0.4, momentum: 0.9 }));
    expect(r.temperature).toBeCloseTo(0.4 / 12.8, 15);
  });

  it('resets on a more than 2x learning-rate change but not on a 1.5x one', () => {
    const est = new NoiseScaleEstimator();
    for (let i = 0; i < 3; i++) est.update(stepWith(10, 1, { lr: 0.1 }));
    const mild = est.update(stepWith(10, 1, { lr: 0.15 }));
    expect(mild.reset).toBe(false);
    expect(mild.stepsSinceReset).toBe(4);
    const sharp = est.update(stepWith(40, 1, { lr: 0.025 }));
    expect(sharp.reset).toBe(true);
    expect(sharp.stepsSinceReset).toBe(1);
    expect(sharp.sEma).toBeCloseTo(40, 10); // nothing of the old regime is left
  });

  it('resets on a more than 2x batch change but not on a 1.5x one', () => {
    const est = new NoiseScaleEstimator();
    // lr scaled with B so the temperature stays put: only the batch rule is exercised.
    for (let i = 0; i < 3; i++) est.update(stepWith(10, 1, { b: 32, lr: 0.1 }));
    expect(est.update(stepWith(10, 1, { b: 48, lr: 0.15 })).reset).toBe(false);
    const r = est.update(stepWith(10, 1, { b: 128, lr: 0.4 }));
    expect(r.reset).toBe(true);
    expect(r.stepsSinceReset).toBe(1);
  });

  it('measures drift from the last reset, so two 1.5x changes reset on the second', () => {
    const est = new NoiseScaleEstimator();
    est.update(stepWith(10, 1, { lr: 0.1 }));
    expect(est.update(stepWith(10, 1, { lr: 0.15 })).reset).toBe(false);
    expect(est.update(stepWith(10, 1, { lr: 0.225 })).reset).toBe(true);
  });

  it('resets when a momentum change moves the temperature by more than 2x', () => {
    const est = new NoiseScaleEstimator();
    est.update(stepWith(10, 1, { momentum: 0.9 }));
    expect(est.update(stepWith(10, 1, { momentum: 0.99 })).reset).toBe(true);
  });

  it('is reliable for steady estimates after minSteps and unreliable while G2 is noisy', () => {
    const steady = new NoiseScaleEstimator({ minSteps: 5 });
    const results = Array.from({ length: 6 }, () => steady.update(stepWith(100, 1)));
    expect(results.map((r) => r.reliable)).toEqual([false, false, false, false, true, true]);
    expect(results[5]!.relativeError).toBeCloseTo(0, 6);

    const noisy = new NoiseScaleEstimator({ minSteps: 5 });
    let last: NoiseScaleResult | undefined;
    // G2 alternates between +21 and −19: mean 1, standard deviation 20 per step.
    for (let i = 0; i < 50; i++) last = noisy.update(stepWith(100, i % 2 === 0 ? 21 : -19, { b: 2 }));
    expect(last!.bSimple).not.toBeNull();
    expect(last!.relativeError!).toBeGreaterThan(0.5);
    expect(last!.reliable).toBe(false);
  });

  it('estimates the standard error of the G2 EMA from its effective number of steps', () => {
    const beta = 0.9;
    const est = new NoiseScaleEstimator({ beta, minSteps: 2 });
    const values = [3, 1, 4, 1, 5, 9, 2, 6];
    let last: NoiseScaleResult | undefined;
    for (const v of values) last = est.update(stepWith(10, v));
    // Direct computation with the bias-corrected weights w_i ∝ beta^(t−i).
    const t = values.length;
    const raw = values.map((_, i) => beta ** (t - 1 - i));
    const total = raw.reduce((a, b) => a + b, 0);
    const w = raw.map((x) => x / total);
    const mean = values.reduce((acc, v, i) => acc + w[i]! * v, 0);
    const biased = values.reduce((acc, v, i) => acc + w[i]! * (v - mean) ** 2, 0);
    const nEff = 1 / w.reduce((acc, x) => acc + x * x, 0);
    expect(last!.g2Ema).toBeCloseTo(mean, 10);
    expect(last!.relativeError).toBeCloseTo(Math.sqrt(biased / (nEff - 1)) / mean, 8);
  });

  it('resumes from a saved state exactly as if it had not stopped', () => {
    const inputs = [stepWith(30, 2), stepWith(45, -1), stepWith(60, 3), stepWith(20, 1.5, { lr: 0.12 })];
    const through = new NoiseScaleEstimator({ beta: 0.8 });
    const first = new NoiseScaleEstimator({ beta: 0.8 });
    for (const input of inputs.slice(0, 2)) {
      through.update(input);
      first.update(input);
    }
    const resumed = new NoiseScaleEstimator({ beta: 0.8 });
    resumed.loadState(JSON.parse(JSON.stringify(first.state())));
    expect(resumed.state()).toEqual(first.state());
    for (const input of inputs.slice(2)) expect(resumed.update(input)).toEqual(through.update(input));
  });

  it('refuses a state saved with another beta, naming both', () => {
    const state = new NoiseScaleEstimator({ beta: 0.9 }).state();
    expect(() => new NoiseScaleEstimator({ beta: 0.99 }).loadState(state)).toThrow(
      /beta 0\.9, this estimator uses 0\.99/,
    );
    expect(() =>
      new NoiseScaleEstimator().loadState({ ...new NoiseScaleEstimator().state(), g2Accumulator: NaN }),
    ).toThrow(/g2Accumulator/);
  });

  it('rejects a global batch size that is not the sum of the micro-batches', () => {
    const input = { ...stepWith(10, 1), globalBatchSize: 100 };
    expect(() => new NoiseScaleEstimator().update(input)).toThrow(/globalBatchSize 100 differs from the 16 samples/);
  });
});
