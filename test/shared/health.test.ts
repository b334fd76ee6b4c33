// The event-loop check with a clock the test moves: one long block fails at most until the next
// tick on time; a loop late on every tick for the whole window fails until it answers on time again.

import { describe, expect, it } from 'vitest';
import {
  EVENT_LOOP_LAG_LIMIT_MS,
  EVENT_LOOP_TICK_MS,
  EVENT_LOOP_WINDOW_MS,
  EventLoopLag,
  firstProblem,
} from '../../shared/health.js';

function clocked() {
  let now = 1000;
  const lag = new EventLoopLag(() => now);
  return {
    lag,
    /** Moves the clock by `ms` and lets the timer fire once. */
    tickAfter(ms: number) {
      now += ms;
      lag.tick();
    },
    advance(ms: number) {
      now += ms;
    },
  };
}

describe('event-loop check', () => {
  it('passes while ticks come on time, and with ticks late by up to the limit', () => {
    const c = clocked();
    for (let i = 0; i < 100; i++) c.tickAfter(EVENT_LOOP_TICK_MS + (i % 2 ? EVENT_LOOP_LAG_LIMIT_MS : 0));
    expect(c.lag.check()).toBeNull();
  });

  it('fails when every tick for longer than the window was late past the limit, and passes at the next tick on time', () => {
    const c = clocked();
    c.tickAfter(EVENT_LOOP_TICK_MS);
    const late = EVENT_LOOP_TICK_MS + EVENT_LOOP_LAG_LIMIT_MS + 500;
    let elapsed = 0;
    while (elapsed <= EVENT_LOOP_WINDOW_MS - late) {
      c.tickAfter(late);
      elapsed += late;
      expect(c.lag.check()).toBeNull();
    }
    c.tickAfter(late);
    expect(c.lag.check()).toMatch(
      /^event loop unresponsive: no timer tick within 2 s of its time for 1\d\.\d s \(limit 10 s; worst lag 2\.5 s\)$/,
    );
    c.tickAfter(EVENT_LOOP_TICK_MS);
    expect(c.lag.check()).toBeNull();
  });

  it('fails while the loop is blocked past the window (no tick at all), naming how long', () => {
    const c = clocked();
    c.tickAfter(EVENT_LOOP_TICK_MS);
    c.advance(EVENT_LOOP_WINDOW_MS - 1);
    expect(c.lag.check()).toBeNull();
    c.advance(2000);
    expect(c.lag.check()).toMatch(/for 12\.0 s \(limit 10 s; worst lag 11\.5 s\)/);
  });

  it('a single block shorter than the window never fails it', () => {
    const c = clocked();
    c.tickAfter(EVENT_LOOP_TICK_MS);
    c.tickAfter(EVENT_LOOP_WINDOW_MS - 100);
    expect(c.lag.check()).toBeNull();
  });

  it('firstProblem gives the first failing check in order', () => {
    expect(firstProblem([() => null, () => 'b', () => 'c'])).toBe('b');
    expect(firstProblem([() => null])).toBeNull();
  });
});
