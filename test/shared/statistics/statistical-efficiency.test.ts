import { describe, expect, it } from 'vitest';
import {
  goodput,
  predictedExamplesRatio,
  predictedStepsRatio,
  statisticalEfficiency,
} from '../../../shared/statistics/statistical-efficiency.js';

describe('statistical efficiency', () => {
  it('is 1 at the base batch and (B_simple + B0)/(B_simple + B) elsewhere', () => {
    expect(statisticalEfficiency(200, 128, 128)).toBe(1);
    expect(statisticalEfficiency(200, 128, 1024)).toBeCloseTo(328 / 1224, 15);
    expect(statisticalEfficiency(200, 1024, 128)).toBeGreaterThan(1);
  });

  it('discounts throughput into goodput', () => {
    const eff = statisticalEfficiency(256, 64, 1024);
    expect(goodput(5000, eff)).toBeCloseTo(5000 * (320 / 1280), 10);
    expect(goodput(5000, NaN)).toBeNaN();
  });

  it('predicts steps and examples relative to their minima on the (S/S_min − 1)(E/E_min − 1) = 1 curve', () => {
    for (const batch of [8, 64, 512, 4096]) {
      const steps = predictedStepsRatio(64, batch);
      const examples = predictedExamplesRatio(64, batch);
      expect((steps - 1) * (examples - 1)).toBeCloseTo(1, 12);
    }
    expect(predictedStepsRatio(64, 64)).toBe(2);
    expect(predictedExamplesRatio(64, 64)).toBe(2);
  });

  it('returns NaN for a non-estimable noise scale or a batch that is not positive', () => {
    for (const bad of [null, NaN, -5, Infinity]) {
      expect(statisticalEfficiency(bad, 128, 256)).toBeNaN();
      expect(predictedStepsRatio(bad, 256)).toBeNaN();
      expect(predictedExamplesRatio(bad, 256)).toBeNaN();
    }
    expect(statisticalEfficiency(100, 0, 256)).toBeNaN();
    expect(predictedStepsRatio(100, -1)).toBeNaN();
    expect(goodput(-1, 0.5)).toBeNaN();
  });
});
