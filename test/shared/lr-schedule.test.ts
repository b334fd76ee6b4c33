import { describe, expect, it } from 'vitest';
import {
  createLrSchedule,
  learningRateAt,
  scaledLearningRate,
  type LrScheduleConfig,
} from '../../shared/lr-schedule.js';

const base: LrScheduleConfig = {
  baseLr: 0.1,
  baseBatch: 128,
  globalBatchSize: 1024,
  scaling: 'linear',
  warmupSteps: 0,
  warmup: 'gradual',
  decay: 'constant',
  totalSteps: 100,
  decayBoundaries: [],
  decayFactor: 0.1,
};

describe('batch-size scaling rules (Goyal et al.)', () => {
  it('scales η by B/B0, sqrt(B/B0), or not at all', () => {
    expect(scaledLearningRate({ ...base, scaling: 'linear' })).toBeCloseTo(0.8, 12);
    expect(scaledLearningRate({ ...base, scaling: 'sqrt' })).toBeCloseTo(0.1 * Math.sqrt(8), 12);
    expect(scaledLearningRate({ ...base, scaling: 'none' })).toBe(0.1);
  });

  it('leaves η unchanged when B equals the base batch', () => {
    expect(scaledLearningRate({ ...base, globalBatchSize: 128 })).toBe(0.1);
  });
});

describe('warmup', () => {
  it('gradual: rises by a constant amount per step from η to the scaled LR, reached at step W', () => {
    const config = { ...base, warmupSteps: 10 };
    const lrs = Array.from({ length: 12 }, (_, s) => learningRateAt(s, config));
    expect(lrs[0]).toBeCloseTo(0.1, 12);
    for (let s = 1; s < 10; s++) expect(lrs[s]! - lrs[s - 1]!).toBeCloseTo(0.07, 12);
    expect(lrs[10]).toBeCloseTo(0.8, 12);
    expect(lrs[11]).toBeCloseTo(0.8, 12);
  });

  it('constant: holds η for W steps, then jumps to the scaled LR', () => {
    const config = { ...base, warmupSteps: 5, warmup: 'constant' as const };
    expect([0, 4, 5, 6].map((s) => learningRateAt(s, config))).toEqual([0.1, 0.1, 0.8, 0.8]);
  });
});

describe('decay after warmup', () => {
  it('step: multiplies by the factor at each boundary passed', () => {
    const config = { ...base, scaling: 'none' as const, decay: 'step' as const, decayBoundaries: [30, 60] };
    expect(learningRateAt(29, config)).toBeCloseTo(0.1, 12);
    expect(learningRateAt(30, config)).toBeCloseTo(0.01, 12);
    expect(learningRateAt(60, config)).toBeCloseTo(0.001, 12);
  });

  it('cosine: starts at the scaled LR after warmup, halves midway and reaches 0 at the last step', () => {
    const config = { ...base, decay: 'cosine' as const, warmupSteps: 20, totalSteps: 120 };
    expect(learningRateAt(20, config)).toBeCloseTo(0.8, 12);
    expect(learningRateAt(70, config)).toBeCloseTo(0.4, 12);
    expect(learningRateAt(120, config)).toBeCloseTo(0, 12);
  });
});

it('LR windows multiply the schedule for [start, end) only', () => {
  const lrAt = createLrSchedule({ ...base, scaling: 'none', windows: [{ start: 10, end: 20, factor: 0.25 }] });
  expect([9, 10, 19, 20].map(lrAt)).toEqual([0.1, 0.025, 0.025, 0.1]);
});
