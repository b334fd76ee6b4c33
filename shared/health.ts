// What /healthz and /readyz judge. A check is a function that answers null when all is well and
// otherwise one line saying what is wrong. Every process checks that its event loop answers; the
// coordinator adds its training progress (coordinator/run-health.ts), a worker its connection.

import { performance } from 'node:perf_hooks';

/** null: fine; else a one-line reason. */
export type HealthCheck = () => string | null;

/** How often the event-loop timer ticks. */
export const EVENT_LOOP_TICK_MS = 500;
/** A tick later than this is a slow answer from the event loop. */
export const EVENT_LOOP_LAG_LIMIT_MS = 2000;
/** The loop is unresponsive when no tick has come within the limit for this long. */
export const EVENT_LOOP_WINDOW_MS = 10_000;

/**
 * The event loop's responsiveness, measured by a timer that should tick every EVENT_LOOP_TICK_MS.
 * A tick at most EVENT_LOOP_LAG_LIMIT_MS late is on time. The loop is unresponsive when no tick has
 * been on time for EVENT_LOOP_WINDOW_MS: a loop blocked that long, or late on every tick that long.
 * Once the loop answers on time again, it is healthy again.
 */
export class EventLoopLag {
  private lastTickMs: number;
  private lastOnTimeMs: number;
  private worstLagMs = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly now: () => number = () => performance.now()) {
    this.lastTickMs = this.lastOnTimeMs = now();
  }

  /** Starts the timer (unref'd: it keeps no process alive). */
  start(): this {
    this.timer ??= setInterval(() => this.tick(), EVENT_LOOP_TICK_MS).unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The timer fired (now): it is late by the time since the last tick beyond one period. */
  tick(): void {
    const now = this.now();
    const lagMs = Math.max(0, now - this.lastTickMs - EVENT_LOOP_TICK_MS);
    this.lastTickMs = now;
    if (lagMs <= EVENT_LOOP_LAG_LIMIT_MS) {
      this.lastOnTimeMs = now;
      this.worstLagMs = 0;
    } else this.worstLagMs = Math.max(this.worstLagMs, lagMs);
  }

  /** null, or why the loop counts as unresponsive. */
  check: HealthCheck = () => {
    const now = this.now();
    const sinceMs = now - this.lastOnTimeMs;
    if (sinceMs <= EVENT_LOOP_WINDOW_MS) return null;
    const worstMs = Math.max(this.worstLagMs, now - this.lastTickMs - EVENT_LOOP_TICK_MS);
    return (
      `event loop unresponsive: no timer tick within ${EVENT_LOOP_LAG_LIMIT_MS / 1000} s of its time ` +
      `for ${(sinceMs / 1000).toFixed(1)} s (limit ${EVENT_LOOP_WINDOW_MS / 1000} s; worst lag ${(worstMs / 1000).toFixed(1)} s)`
    );
  };
}

/** The first problem among `checks`, or null. */
export function firstProblem(checks: readonly HealthCheck[]): string | null {
  for (const check of checks) {
    const problem = check();
    if (problem !== null) return problem;
  }
  return null;
}
