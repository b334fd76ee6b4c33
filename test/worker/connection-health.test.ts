// A worker's liveness by its coordinator connection: connected is alive; connecting or
// reconnecting is alive within --connect-timeout plus the margin (the worker exits after the
// timeout, so one still without a connection past both is not re-establishing it).

import { describe, expect, it } from 'vitest';
import { connectionProblem, RECONNECT_MARGIN_MS } from '../../worker/worker.js';

const TIMEOUT_MS = 60_000;

describe('worker connection liveness', () => {
  it.each(['connected', 'ready'] as const)('%s is alive however long', (state) => {
    expect(connectionProblem({ state, sinceMs: 0 }, TIMEOUT_MS, 1e9)).toBeNull();
  });

  it.each(['connecting', 'reconnecting'] as const)('%s is alive until --connect-timeout + the margin', (state) => {
    const limit = TIMEOUT_MS + RECONNECT_MARGIN_MS;
    expect(connectionProblem({ state, sinceMs: 1000 }, TIMEOUT_MS, 1000 + limit)).toBeNull();
    expect(connectionProblem({ state, sinceMs: 1000 }, TIMEOUT_MS, 1000 + limit + 100)).toBe(
      `no coordinator connection for 90.1 s (${state}; limit --connect-timeout + 30 s = 90 s)`,
    );
  });
});
