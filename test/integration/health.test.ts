// /healthz and /readyz of real processes through their states: a worker waiting for a coordinator
// is alive but not ready, and ready once welcomed; a coordinator is ready while it listens; its
// only worker frozen with SIGSTOP mid-run (heartbeats too slow to drop it, no eviction) leaves a
// step open past 3 × --step-deadline-cap, and /healthz answers 503 naming the stall until SIGCONT
// lets the step complete; a worker whose coordinator was killed is reconnecting: alive, not ready;
// a coordinator whose only worker died waits for one past that limit and stays healthy.

import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { startCli } from '../support/cli.js';
import { waitForText, watch } from '../support/processes.js';
import { freePort } from '../support/prometheus.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

const TOKEN = 'health-token';

function start(args: string[]) {
  const child = startCli(args, { BATCHLAB_TOKEN: TOKEN });
  children.push(child);
  return { child, ...watch(child) };
}

interface Answer {
  code: number;
  body: Record<string, unknown>;
}

async function get(base: string, path: string): Promise<Answer> {
  const response = await fetch(`${base}${path}`);
  return { code: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Polls `path` until `accept` holds (generous bound: the states come within seconds). */
async function until(base: string, path: string, accept: (a: Answer) => boolean, timeoutMs = 30_000): Promise<Answer> {
  const deadline = Date.now() + timeoutMs;
  let last: Answer | null = null;
  while (Date.now() < deadline) {
    last = await get(base, path);
    if (accept(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${path} never reached the expected state; last answer ${JSON.stringify(last)}`);
}

/** Waits until the coordinator at `base` has applied `steps` steps (progress lines off a terminal are sparse). */
async function stepsPast(base: string, steps: number): Promise<void> {
  for (let done = 0; done < steps; await new Promise((r) => setTimeout(r, 100))) {
    const text = await (await fetch(`${base}/metrics`)).text();
    done = Number(/^batchlab_steps_total(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0);
  }
}

async function metricsBase(output: () => string, prefix = ''): Promise<string> {
  const m = await waitForText(output, new RegExp(`${prefix}metrics at (http://127\\.0\\.0\\.1:\\d+)/metrics`));
  return m[1]!;
}

describe('health and readiness endpoints', () => {
  it(
    'follow a worker and a coordinator through waiting, training, a stalled step, and a lost coordinator',
    { timeout: 120_000 },
    async () => {
      const port = await freePort();
      const worker = start([
        'worker',
        '--connect',
        `ws://127.0.0.1:${port}`,
        '--name',
        'w1',
        '--metrics-port',
        '0',
        '--metrics-host',
        '127.0.0.1',
        '--connect-timeout',
        '60',
      ]);
      const workerBase = await metricsBase(worker.output);
      // No coordinator yet: retrying is healthy, but not ready.
      expect(await get(workerBase, '/healthz')).toMatchObject({ code: 200, body: { status: 'ok', role: 'worker' } });
      expect(await get(workerBase, '/readyz')).toMatchObject({
        code: 503,
        body: { status: 'not ready', reason: 'not ready: connecting' },
      });

      const coordinatorArgs = [
        'coordinator',
        '--host',
        '127.0.0.1',
        '--port',
        String(port),
        '--dataset',
        'synthetic',
        '--hidden',
        '32',
        '--global-batch',
        '32',
        '--micro-batch',
        '16',
        '--steps',
        '1000000',
        '--eval-every',
        '0',
        '--checkpoint-every',
        '0',
        '--metrics-port',
        '0',
        '--heartbeat-interval',
        '600',
        '--step-deadline-floor',
        '0.2',
        '--step-deadline-cap',
        '1',
        '--evict-after',
        '0',
      ];
      const coordinator = start(coordinatorArgs);
      const base = await metricsBase(coordinator.output);
      expect(await get(base, '/readyz')).toMatchObject({ code: 200, body: { status: 'ready', role: 'coordinator' } });
      await stepsPast(base, 20);
      expect(await get(base, '/healthz')).toMatchObject({ code: 200, body: { status: 'ok', workers: 1 } });
      expect(await until(workerBase, '/readyz', (a) => a.code === 200)).toMatchObject({
        body: { status: 'ready', connection: 'ready' },
      });

      // Its only worker frozen: the open step cannot complete, and nothing re-issues or evicts.
      worker.child.kill('SIGSTOP');
      const stalled = await until(base, '/healthz', (a) => a.code === 503);
      expect(stalled.body).toMatchObject({ status: 'unhealthy', role: 'coordinator' });
      expect(stalled.body.reason).toMatch(
        /^training stalled: no step completed for \d+\.\d s while stepping \(limit 3 × --step-deadline-cap = 3 s; \d+ steps completed in this session\)$/,
      );
      expect(await get(base, '/readyz')).toMatchObject({ code: 200 });
      worker.child.kill('SIGCONT');
      await until(base, '/healthz', (a) => a.code === 200);

      // The coordinator gone: the worker retries (alive) and is no longer ready.
      coordinator.child.kill('SIGKILL');
      await coordinator.exit;
      const reconnecting = await until(workerBase, '/readyz', (a) => a.code === 503);
      expect(reconnecting.body).toMatchObject({ reason: 'not ready: reconnecting', connection: 'reconnecting' });
      expect(await get(workerBase, '/healthz')).toMatchObject({ code: 200 });

      // A new coordinator whose only worker dies mid-step: it waits for one to join, which is no stall,
      // however long past the limit (3 s here) it lasts.
      const second = start(coordinatorArgs);
      const secondBase = await metricsBase(second.output);
      await stepsPast(secondBase, 5);
      worker.child.kill('SIGKILL');
      await waitForText(
        second.output,
        /no live worker for micro-batches .*; paused until one joins|waiting for workers: 0 of 1/,
      );
      await new Promise((r) => setTimeout(r, 5000));
      expect(await get(secondBase, '/healthz')).toMatchObject({ code: 200, body: { status: 'ok', workers: 0 } });
    },
  );
});
