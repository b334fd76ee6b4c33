// Worker memory with real processes: the report's per-worker peaks, --max-chunk auto under a
// --memory-limit (the same weights as that chunk given by hand), and a worker whose memory cannot
// hold one sample leaving with OUT_OF_MEMORY while the run completes with the other.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startCli } from '../support/cli.js';
import { waitForStep, waitForText, watch } from '../support/processes.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-memory-'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const STEPS = 6;
const JOB = [
  '--dataset',
  'synthetic',
  '--model',
  'cnn',
  '--hidden',
  '4,8',
  '--global-batch',
  '64',
  '--micro-batch',
  '32',
  '--steps',
  String(STEPS),
  '--seed',
  '5',
  '--eval-every',
  '0',
  '--metrics-port',
  'off',
];

function coordinator(tag: string, minWorkers: number, job = JOB) {
  const child = startCli([
    'coordinator',
    '--insecure',
    '--port',
    '0',
    ...job,
    '--min-workers',
    String(minWorkers),
    '--report',
    join(dir, `${tag}.json`),
    '--save-model',
    join(dir, tag),
  ]);
  children.push(child);
  return { child, ...watch(child) };
}

function worker(port: number, name: string, extra: string[]) {
  const child = startCli([
    'worker',
    '--connect',
    `ws://127.0.0.1:${port}`,
    '--name',
    name,
    '--backend',
    'wasm',
    ...(extra.includes('--metrics-port') ? [] : ['--metrics-port', 'off']),
    ...extra,
  ]);
  children.push(child);
  return { child, ...watch(child) };
}

async function portOf(output: () => string): Promise<number> {
  return Number((await waitForText(output, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
}

/** One coordinator and its workers (name → extra options) to the end; their outputs and the report. */
async function run(tag: string, workers: Record<string, string[]>) {
  const c = coordinator(tag, Object.keys(workers).length);
  const port = await portOf(c.output);
  const ws = Object.entries(workers).map(([name, extra]) => ({ name, ...worker(port, name, extra) }));
  const code = await c.exit;
  expect(code, c.output().slice(-3000)).toBe(0);
  const exits = await Promise.all(ws.map((w) => w.exit));
  return {
    coordinator: c.output(),
    workers: Object.fromEntries(ws.map((w, i) => [w.name, { output: w.output(), exit: exits[i] }])),
    report: JSON.parse(readFileSync(join(dir, `${tag}.json`), 'utf8')),
  };
}

/** The peaks of `max chunk auto: … (…; peak tensor bytes 1: N B, 2: …; …)`, by chunk. */
function probedPeaks(output: string): Map<number, number> {
  const line = /max chunk auto: .*/.exec(output)?.[0];
  if (!line) throw new Error(`no probe line in:\n${output.slice(-2000)}`);
  return new Map([...line.matchAll(/(\d+): (\d+) B/g)].map((m) => [Number(m[1]), Number(m[2])]));
}

/** The value of an unlabelled (but for role) series in a Prometheus text exposition. */
function sample(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in:\n${text.slice(0, 3000)}`);
  return Number(m[1]);
}

describe('worker memory', () => {
  it('is served as worker metrics: bytes above zero, tensors and tensor bytes the same from step to step', async () => {
    const c = coordinator(
      'metrics',
      1,
      JOB.map((arg, i) => (JOB[i - 1] === '--steps' ? '60' : arg)),
    );
    const port = await portOf(c.output);
    // Slowed so that the run lasts long enough to be scraped at two different steps.
    const w = worker(port, 'scraped', ['--metrics-port', '0', '--metrics-host', '127.0.0.1', '--debug-slowdown', '4']);
    const url = (await waitForText(w.output, /metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/))[1]!;
    const scrape = async (step: number) => {
      await waitForStep(c.output, step);
      return (await fetch(url)).text();
    };
    const early = await scrape(10);
    const late = await scrape(40);
    for (const text of [early, late]) {
      expect(sample(text, 'batchlab_worker_peak_tensor_bytes')).toBeGreaterThan(sample(text, 'batchlab_tensor_bytes'));
      expect(sample(text, 'batchlab_tensor_bytes')).toBeGreaterThan(0);
      expect(sample(text, 'batchlab_worker_wasm_heap_bytes')).toBeGreaterThanOrEqual(
        sample(text, 'batchlab_worker_peak_tensor_bytes'),
      );
      expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(sample(text, 'batchlab_worker_max_chunk')).toBe(1024);
    }
    expect(sample(late, 'batchlab_worker_step')).toBeGreaterThan(sample(early, 'batchlab_worker_step'));
    // No leak: what stays live between micro-batches does not grow.
    expect(sample(late, 'batchlab_tensors')).toBe(sample(early, 'batchlab_tensors'));
    expect(sample(late, 'batchlab_tensor_bytes')).toBe(sample(early, 'batchlab_tensor_bytes'));
    expect(sample(late, 'batchlab_worker_peak_tensor_bytes')).toBe(sample(early, 'batchlab_worker_peak_tensor_bytes'));
    expect(await c.exit, c.output().slice(-3000)).toBe(0);
    expect(await w.exit).toBe(0);
  }, 180_000);

  let unlimited: Awaited<ReturnType<typeof run>>;

  it('reports each worker peak, probes up to the micro-batch without a limit, and the run peak is the micro-batch one', async () => {
    unlimited = await run('auto-unlimited', { probe: ['--max-chunk', 'auto'] });
    const peaks = probedPeaks(unlimited.workers.probe!.output);
    expect([...peaks.keys()]).toEqual([1, 2, 4, 8, 16, 32]);
    const values = [...peaks.values()];
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThan(values[i - 1]!);
    expect(unlimited.workers.probe!.output).toMatch(/max chunk auto: 32 samples \(micro-batch;/);
    expect(unlimited.coordinator).toMatch(/worker 1 joined \(probe, backend wasm, device [^,]+, max chunk 32\)/);
    const { report } = unlimited;
    // Computing a 32-sample micro-batch in training peaks where the probe's 32-sample chunk did.
    expect(report.peakMemoryBytes).toBe(peaks.get(32));
    expect(report.workerMemory).toHaveLength(1);
    const [w] = report.workerMemory;
    expect(w.workerId).toBe(1);
    expect(w.peakTensorBytes).toBe(report.peakMemoryBytes);
    expect(w.peakRssBytes).toBe(report.peakRssBytes);
    expect(w.peakRssBytes).toBeGreaterThan(w.peakTensorBytes);
    expect(w.wasmHeapBytes).toBeGreaterThanOrEqual(w.peakTensorBytes);
    expect(w.tensors).toBeGreaterThan(0);
  }, 180_000);

  it('auto under --memory-limit picks the largest doubling within it less the margin, and trains the weights of that --max-chunk', async () => {
    const peaks = probedPeaks(unlimited.workers.probe!.output);
    // Between the peak of 8 samples (plus the 10% margin) and that of 16: 16 fails, 8 fits.
    const limit = Math.floor((peaks.get(8)! / 0.9 + peaks.get(16)!) / 2);
    const auto = await run('auto-limited', { probe: ['--max-chunk', 'auto', '--memory-limit', String(limit)] });
    expect(auto.workers.probe!.output).toMatch(
      new RegExp(`max chunk auto: 8 samples \\(allocation-failure;.* 16: failed; --memory-limit ${limit} bytes\\)`),
    );
    expect(auto.coordinator).toMatch(/max chunk 8\)/);
    expect(auto.report.peakMemoryBytes).toBe(peaks.get(8));
    const fixed = await run('fixed-8', { fixed: ['--max-chunk', '8'] });
    expectBitIdentical(
      readSavedWeights(join(dir, 'fixed-8')),
      readSavedWeights(join(dir, 'auto-limited')),
      'auto (8) vs --max-chunk 8',
    );
    expect(fixed.report.peakMemoryBytes).toBe(peaks.get(8));
  }, 180_000);

  it('a worker that cannot hold one sample says so, exits 3, and the run completes with the other', async () => {
    const result = await run('one-sample', {
      healthy: [],
      // Less than the model's weights (2,346 float32 parameters).
      small: ['--max-chunk', '1', '--memory-limit', '4000'],
    });
    const small = result.workers.small!;
    expect(small.exit, small.output.slice(-2000)).toBe(3);
    expect(small.output).toMatch(
      /\[OUT_OF_MEMORY\] backend wasm with --memory-limit 4000 bytes cannot hold one sample: computing it needs \d+ bytes of tensors \(/,
    );
    expect(result.coordinator).toMatch(/worker \d+ \(small\) reported \[OUT_OF_MEMORY\]/);
    expect(result.coordinator).toMatch(/worker \d+ \(small\) lost: [^\n]*; re-issuing micro-batches \d+/);
    expect(result.workers.healthy!.exit).toBe(0);
    expect(result.report.steps).toBe(STEPS);
    // The healthy worker computed everything, unchunked: the weights of the 1-worker run above.
    expectBitIdentical(
      readSavedWeights(join(dir, 'auto-unlimited')),
      readSavedWeights(join(dir, 'one-sample')),
      'after the re-issue vs one worker',
    );
  }, 180_000);
});
