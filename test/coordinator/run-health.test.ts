// The coordinator's liveness check with a clock the test moves: only a step that runs
// STALL_FACTOR × the step-deadline cap without completing fails it; waiting for workers,
// evaluating, checkpointing and finishing never do, however long.

import { describe, expect, it } from 'vitest';
import { STALL_FACTOR, TrainingHealth } from '../../coordinator/run-health.js';

const CAP_MS = 1000;
const LIMIT_MS = STALL_FACTOR * CAP_MS;

function clocked() {
  let now = 0;
  const health = new TrainingHealth(CAP_MS, () => now);
  return { health, advance: (ms: number) => (now += ms) };
}

describe('training liveness', () => {
  it('fails when a step runs past 3 × the cap, and passes again once a step completes', () => {
    const { health, advance } = clocked();
    health.onActivity('stepping');
    advance(LIMIT_MS);
    expect(health.check()).toBeNull();
    advance(1);
    expect(health.check()).toBe(
      'training stalled: no step completed for 3.0 s while stepping (limit 3 × --step-deadline-cap = 3 s; 0 steps completed in this session)',
    );
    health.onStep();
    expect(health.check()).toBeNull();
  });

  it('counts from the last completed step, not from the dispatch of the next one', () => {
    const { health, advance } = clocked();
    health.onActivity('stepping');
    advance(LIMIT_MS - 10);
    health.onStep();
    health.onActivity('stepping');
    advance(LIMIT_MS - 10);
    expect(health.check()).toBeNull();
    advance(20);
    expect(health.check()).toMatch(/1 steps completed/);
  });

  it('is not reset by "stepping" again within the step (work re-issued after a wait)', () => {
    const { health, advance } = clocked();
    health.onActivity('stepping');
    advance(LIMIT_MS - 10);
    health.onActivity('stepping');
    advance(20);
    expect(health.check()).not.toBeNull();
  });

  it.each(['waiting-for-workers', 'evaluating', 'checkpointing'] as const)(
    'never fails while %s, and the step clock starts anew after it',
    (activity) => {
      const { health, advance } = clocked();
      health.onActivity('stepping');
      advance(LIMIT_MS - 10);
      health.onActivity(activity);
      advance(100 * LIMIT_MS);
      expect(health.check()).toBeNull();
      health.onActivity('stepping');
      advance(LIMIT_MS);
      expect(health.check()).toBeNull();
      advance(1);
      expect(health.check()).not.toBeNull();
    },
  );

  it('never fails before training starts or after it finishes', () => {
    const { health, advance } = clocked();
    advance(100 * LIMIT_MS);
    expect(health.check()).toBeNull();
    health.onActivity('stepping');
    health.finish();
    advance(100 * LIMIT_MS);
    expect(health.check()).toBeNull();
  });
});
