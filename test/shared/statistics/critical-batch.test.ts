import { describe, expect, it } from 'vitest';
import { createRandom } from '../../../shared/data/seeded-random.js';
import { fitCriticalBatch, fitLine, type StepsToTargetPoint } from '../../../shared/statistics/critical-batch.js';

const BATCHES = [16, 32, 64, 128, 256, 512, 1024];
const lawSteps = (batch: number) => 100 + 6400 / batch;

describe('fitCriticalBatch', () => {
  it('recovers S_min, E_min and B_crit from exact points of S = 100 + 6400/B', () => {
    const fit = fitCriticalBatch(BATCHES.map((b) => ({ globalBatchSize: b, steps: lawSteps(b) })));
    if (!fit.fittable) throw new Error(fit.reason);
    expect(fit.sMin).toBeCloseTo(100, 9);
    expect(fit.eMin).toBeCloseTo(6400, 7);
    expect(fit.bCrit).toBeCloseTo(64, 9);
    expect(fit.r2).toBeCloseTo(1, 12);
  });

  it('stays close with 5% multiplicative noise and repeated seeds per batch', () => {
    const random = createRandom(11);
    const points: StepsToTargetPoint[] = [];
    for (const b of BATCHES) {
      for (let seed = 0; seed < 3; seed++)
        points.push({ globalBatchSize: b, steps: lawSteps(b) * (1 + 0.05 * random.normal()) });
    }
    const fit = fitCriticalBatch(points);
    if (!fit.fittable) throw new Error(fit.reason);
    // Bounds hold for seeds 1–199 of this setup (ranges seen: S_min 92–107, E_min 5890–7080, B_crit 55–77).
    expect(Math.abs(fit.sMin / 100 - 1)).toBeLessThan(0.1);
    expect(Math.abs(fit.eMin / 6400 - 1)).toBeLessThan(0.12);
    expect(Math.abs(fit.bCrit / 64 - 1)).toBeLessThan(0.2);
    expect(fit.r2).toBeGreaterThan(0.95);
  });

  it('cannot fit one point, or many points at one batch size, and says why', () => {
    const one = fitCriticalBatch([{ globalBatchSize: 64, steps: 200 }]);
    expect(one.fittable).toBe(false);
    if (!one.fittable) expect(one.reason).toMatch(/at least 2 distinct batch sizes, got 1/);
    expect(
      fitCriticalBatch([
        { globalBatchSize: 64, steps: 200 },
        { globalBatchSize: 64, steps: 210 },
      ]).fittable,
    ).toBe(false);
    expect(fitCriticalBatch([]).fittable).toBe(false);
  });

  it('refuses a negative S_min or E_min instead of reporting a meaningless B_crit', () => {
    // Steps halve exactly with each doubling and then some: the intercept is negative.
    const perfect = fitCriticalBatch([
      { globalBatchSize: 32, steps: 1000 },
      { globalBatchSize: 64, steps: 480 },
      { globalBatchSize: 128, steps: 200 },
    ]);
    expect(perfect.fittable).toBe(false);
    if (!perfect.fittable) expect(perfect.reason).toMatch(/S_min = -.* is not positive/);
    // Steps grow with the batch: the slope is negative.
    const growing = fitCriticalBatch([
      { globalBatchSize: 32, steps: 100 },
      { globalBatchSize: 256, steps: 150 },
    ]);
    expect(growing.fittable).toBe(false);
    if (!growing.fittable) expect(growing.reason).toMatch(/E_min = -.* is not positive/);
  });

  it('rejects a run that never reached the target, naming the point', () => {
    expect(() =>
      fitCriticalBatch([
        { globalBatchSize: 32, steps: 100 },
        { globalBatchSize: 64, steps: Infinity },
      ]),
    ).toThrow(/points\[1\]\.steps/);
  });
});

describe('fitLine', () => {
  it('fits y = 2 + 3x exactly and returns null without two distinct x', () => {
    const line = fitLine([0, 1, 2, 5], [2, 5, 8, 17]);
    expect(line!.slope).toBeCloseTo(3, 12);
    expect(line!.intercept).toBeCloseTo(2, 12);
    expect(line!.r2).toBeCloseTo(1, 12);
    expect(fitLine([1, 1], [2, 3])).toBeNull();
    expect(() => fitLine([1, 2], [1])).toThrow(/2 x values but 1 y values/);
  });
});
