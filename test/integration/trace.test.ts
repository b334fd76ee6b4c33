// `--trace FILE` from a 2-worker run is valid Chrome-trace JSON with a coordinator track, one
// track per worker, and spans for every step and every worker in it.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { TraceEvent } from '../../coordinator/trace.js';
import { runCli } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-trace-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A small synthetic job of `steps` steps. */
const job = (steps: number): string[] => [
  ...['--dataset', 'synthetic', '--hidden', '32', '--global-batch', '64', '--micro-batch', '16'],
  ...['--steps', String(steps)],
];

it('writes a Chrome trace with spans for every worker and every step', async () => {
  const file = join(dir, 'trace.json');
  const steps = 6;
  const result = await runCli([
    'local',
    '--workers',
    '2',
    ...job(steps),
    // Every worker computes in every step. With the throughput split, a loaded machine can
    // measure one worker as far slower once and leave it without micro-batches.
    '--balance',
    'equal',
    '--eval-every',
    '3',
    '--metrics-port',
    'off',
    '--trace',
    file,
  ]);
  expect(result.code, result.stderr).toBe(0);
  const trace = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] };
  expect(Array.isArray(trace.traceEvents)).toBe(true);
  for (const e of trace.traceEvents) {
    expect(['X', 'M']).toContain(e.ph);
    expect(Number.isFinite(e.ts)).toBe(true);
    if (e.ph === 'X') expect(e.dur).toBeGreaterThanOrEqual(0);
  }

  const threadNames = new Map(
    trace.traceEvents.filter((e) => e.name === 'thread_name').map((e) => [e.tid, String(e.args!.name)]),
  );
  expect(threadNames.get(0)).toBe('coordinator');
  const workerTids = [...threadNames.keys()].filter((t) => t !== 0).sort();
  expect(workerTids).toHaveLength(2);
  for (const tid of workerTids) expect(threadNames.get(tid)).toMatch(new RegExp(`^worker ${tid} \\(local-\\d\\)$`));

  const spans = trace.traceEvents.filter((e) => e.ph === 'X');
  for (let step = 0; step < steps; step++) {
    const stepSpan = spans.find((e) => e.tid === 0 && e.cat === 'step' && e.args!.step === step);
    expect(stepSpan, `step ${step} span`).toBeDefined();
    const phases = spans.filter((e) => e.tid === 0 && e.cat === 'phase' && e.args!.step === step).map((e) => e.name);
    expect(phases).toEqual(['dispatch', 'gather-wait', 'reduce', 'apply']);
    // 4 micro-batches of 16 over 2 workers: the throughput split may give 1 and 3 or 2 and 2, but
    // every micro-batch once, and every worker at least one.
    const perStep = spans.filter((e) => e.tid !== 0 && e.cat === 'compute' && e.args!.step === step);
    expect(perStep, `step ${step}`).toHaveLength(4);
    for (const tid of workerTids) {
      const computes = spans.filter((e) => e.tid === tid && e.cat === 'compute' && e.args!.step === step);
      expect(computes.length, `worker ${tid} step ${step}`).toBeGreaterThanOrEqual(1);
      for (const c of computes) {
        // A micro-batch is computed inside its step (1 ms of rounding allowed).
        expect(c.ts).toBeGreaterThanOrEqual(stepSpan!.ts - 1000);
        expect(c.ts + c.dur!).toBeLessThanOrEqual(stepSpan!.ts + stepSpan!.dur! + 1000);
      }
    }
  }
  expect(spans.filter((e) => e.name === 'eval')).toHaveLength(2);
  expect(result.stderr).toMatch(/trace written to/);
}, 120_000);

it('gives the sharded exchange its own track: reduce-scatter then all-gather inside each step', async () => {
  const file = join(dir, 'sharded-trace.json');
  const steps = 4;
  const result = await runCli([
    'local',
    '--workers',
    '2',
    '--reducer',
    'sharded',
    ...job(steps),
    '--eval-every',
    '0',
    '--metrics-port',
    'off',
    '--trace',
    file,
  ]);
  expect(result.code, result.stderr).toBe(0);
  const events = (JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] }).traceEvents;
  const track = events.find((e) => e.ph === 'M' && e.args?.name === 'sharded exchange (slowest worker)');
  expect(track, 'the exchange track is named').toBeDefined();
  for (let step = 0; step < steps; step++) {
    const stepSpan = events.find((e) => e.name === `step ${step}` && e.cat === 'step')!;
    const exchange = events.filter((e) => e.tid === track!.tid && e.args?.step === step && e.ph === 'X');
    expect(exchange.map((e) => e.name).sort(), `step ${step}`).toEqual(['all-gather', 'reduce-scatter']);
    const [scatter, gather] = ['reduce-scatter', 'all-gather'].map((n) => exchange.find((e) => e.name === n)!);
    // Back to back, all-gather last, both within the step (timestamps are whole microseconds).
    expect(Math.abs(scatter!.ts + scatter!.dur! - gather!.ts)).toBeLessThanOrEqual(2);
    expect(scatter!.ts).toBeGreaterThanOrEqual(stepSpan.ts - 2);
    expect(gather!.ts + gather!.dur!).toBeLessThanOrEqual(stepSpan.ts + stepSpan.dur! + 2);
  }
  // The coordinator's own phases stay the four it runs.
  const phases = events.filter((e) => e.cat === 'phase' && e.args?.step === 0).map((e) => e.name);
  expect(phases).toEqual(['dispatch', 'gather-wait', 'reduce', 'apply']);
}, 120_000);
