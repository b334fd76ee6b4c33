// The coordinator's own liveness check: once training has started, no step completed for
// STALL_FACTOR × --step-deadline-cap while stepping (counted from the last completed step, or from
// the dispatch after something else) means the run is stuck.
// Waiting for workers, evaluating, writing a checkpoint and finishing never count: a liveness
// probe must not restart a coordinator that is slow for a good reason, or one that only lacks workers.

import { performance } from 'node:perf_hooks';
import type { HealthCheck } from '../shared/health.js';
import type { TrainerActivity, TrainerObserver } from './trainer-observer.js';

/** A step that runs this many step-deadline caps without completing is a stalled run. */
export const STALL_FACTOR = 3;

export class TrainingHealth implements TrainerObserver {
  private activity: TrainerActivity | 'starting' | 'finishing' = 'starting';
  private sinceMs: number;
  private stepsDone = 0;

  constructor(
    private readonly stepDeadlineCapMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.sinceMs = now();
  }

  onActivity(activity: TrainerActivity): void {
    if (activity === this.activity) return;
    this.activity = activity;
    this.sinceMs = this.now();
  }

  /** A step completed: progress, whatever comes next. */
  onStep(): void {
    this.stepsDone += 1;
    this.sinceMs = this.now();
  }

  /** Training is over (final checkpoint, report, model): nothing more to judge. */
  finish(): void {
    this.activity = 'finishing';
  }

  check: HealthCheck = () => {
    if (this.activity !== 'stepping') return null;
    const limitMs = STALL_FACTOR * this.stepDeadlineCapMs;
    const ms = this.now() - this.sinceMs;
    if (ms <= limitMs) return null;
    return (
      `training stalled: no step completed for ${(ms / 1000).toFixed(1)} s while stepping ` +
      `(limit ${STALL_FACTOR} × --step-deadline-cap = ${limitMs / 1000} s; ${this.stepsDone} steps completed in this session)`
    );
  };
}
