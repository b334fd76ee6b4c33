import { describe, expect, it } from 'vitest';
import { stepDeadline } from '../../coordinator/trainer.js';

describe('step deadline', () => {
  it('is 5 × the median of recent step times', () => {
    expect(stepDeadline([100, 300, 200], 10, 10_000)).toBe(1000);
  });

  it('stays within the floor and the cap', () => {
    expect(stepDeadline([1, 1, 1], 500, 10_000)).toBe(500);
    expect(stepDeadline([60_000], 500, 30_000)).toBe(30_000);
  });

  it('allows 3 × the floor for the first step, which includes warm-up', () => {
    expect(stepDeadline([], 2000, 300_000)).toBe(6000);
    expect(stepDeadline([], 2000, 5000)).toBe(5000);
  });
});
