// Worker loss, a worker joining mid-run, and coordinator restarts from a checkpoint all end with
// the weights of an undisturbed run, bit for bit: micro-batch ids fix the samples and the
// reduction order. Each case makes what it reads; only the undisturbed run is shared (beforeAll).

import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkpointFileName } from '../../coordinator/checkpoint.js';
import { runCli, startCli } from '../support/cli.js';
import { waitForStep, waitForText, watch } from '../support/processes.js';
import { freePort } from '../support/prometheus.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-resilience-'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const STEPS = 300;
const BATCH = 96;
const TOKEN = 'resilience-token';
const JOB = [
  '--dataset',
  'synthetic',
  '--hidden',
  '128,64',
  '--global-batch',
  String(BATCH),
  '--micro-batch',
  '16',
  '--steps',
  String(STEPS),
  '--optimizer',
  'adam',
  '--seed',
  '3',
  '--eval-every',
  '0',
  '--metrics-port',
  'off',
];

/** JOB with some option values replaced, e.g. { '--steps': '3' }. */
const jobWith = (values: Record<string, string>): string[] => JOB.map((arg, i) => values[JOB[i - 1]!] ?? arg);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The step a resumed coordinator says it continues from. */
function resumedAt(output: string): number {
  const m = /resuming from .* at step (\d+)/.exec(output);
  if (!m) throw new Error(`the coordinator did not resume; output:\n${output.slice(-3000)}`);
  return Number(m[1]);
}

/** The earliest progress line ("step N/M") in the output; a fresh run prints "step 1/M" first. */
function firstProgressStep(output: string): number {
  const steps = [...output.matchAll(/step +(\d+)\/\d+/g)].map((m) => Number(m[1]));
  if (steps.length === 0) throw new Error(`no progress line; output:\n${output.slice(-3000)}`);
  return Math.min(...steps);
}

let reference: Float32Array;
beforeAll(async () => {
  const result = await runCli(['local', '--workers', '2', ...JOB, '--save-model', join(dir, 'reference')], {}, 180_000);
  expect(result.code, result.stderr).toBe(0);
  reference = readSavedWeights(join(dir, 'reference'));
}, 180_000);

function startCoordinator(tag: string, extra: string[], port = 0, job = JOB) {
  const child = startCli([
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--token',
    TOKEN,
    '--heartbeat-interval',
    '1',
    ...job,
    '--report',
    join(dir, `${tag}.json`),
    '--save-model',
    join(dir, tag),
    ...extra,
  ]);
  children.push(child);
  return { child, ...watch(child) };
}

function worker(port: number, name: string, extra: string[] = []) {
  const child = startCli(
    ['worker', '--connect', `ws://127.0.0.1:${port}`, '--name', name, '--metrics-port', 'off', ...extra],
    { BATCHLAB_TOKEN: TOKEN },
  );
  children.push(child);
  return { child, ...watch(child) };
}

async function portOf(output: () => string): Promise<number> {
  return Number((await waitForText(output, /listening on wss?:\/\/127\.0\.0\.1:(\d+)/))[1]);
}

/** The run ended with the undisturbed weights, and under `reducer` (a sharded run that fell back would say star). */
function expectUndisturbedResult(tag: string, reducer = tag.endsWith('-sharded') ? 'sharded' : 'star'): void {
  const report = JSON.parse(readFileSync(join(dir, `${tag}.json`), 'utf8'));
  expect(report.reducer, `${tag}: the reducer at the end`).toBe(reducer);
  expect(report.steps).toBe(STEPS);
  expect(report.samples).toBe(STEPS * BATCH);
  expectBitIdentical(reference, readSavedWeights(join(dir, tag)), `${tag}: weights vs the undisturbed run`);
}

// The same four faults under each reducer; each ends with the star's undisturbed weights.
describe.each(['star', 'sharded'] as const)('resilience with the %s reducer', (reducer) => {
  /** A coordinator of this reducer. */
  const coordinator = (tag: string, extra: string[], port = 0) =>
    startCoordinator(tag, ['--reducer', reducer, ...extra], port);

  it('completes with the undisturbed weights when a worker is killed with SIGKILL mid-run', async () => {
    const c = coordinator(`sigkill-${reducer}`, ['--min-workers', '2']);
    const port = await portOf(c.output);
    const workers = ['w1', 'w2', 'w3'].map((name) => worker(port, name));
    await waitForText(c.output, /worker \d+ joined \(w3,/);
    const joinedAt = Math.max(0, ...[...c.output().matchAll(/step +(\d+)\/\d+/g)].map((m) => Number(m[1])));
    await waitForStep(c.output, joinedAt + 30);
    // Frozen first, so that it surely dies holding work: every step gives each worker at least one
    // of its 6 micro-batches, so within a step's time w2 holds some that it never answers. (Killed
    // between two steps it would hold none, and there would be nothing to re-issue.) 0.8 s is far
    // below the 2 s of silence after which the heartbeat would drop it instead.
    workers[1]!.child.kill('SIGSTOP');
    await sleep(800);
    workers[1]!.child.kill('SIGKILL');
    expect(await c.exit, c.output().slice(-3000)).toBe(0);
    // Sharded: it owned a shard, so the survivors re-planned the exchange in that step.
    if (reducer === 'sharded') expect(c.output()).toMatch(/exchange restarted over 2 workers \(attempt 1\)/);
    // The micro-batches it held were handed to the others at once, in that step, because it was lost.
    expect(c.output()).toMatch(
      /step \d+: worker \d+ \(w2\) lost: connection closed[^\n]*; re-issuing micro-batches \d+/,
    );
    expectUndisturbedResult(`sigkill-${reducer}`);
    for (const w of [workers[0]!, workers[2]!]) expect(await w.exit, w.output().slice(-2000)).toBe(0);
  }, 180_000);

  it('lets a worker join mid-run and still ends with the undisturbed weights', async () => {
    const c = coordinator(`join-${reducer}`, ['--min-workers', '2']);
    const port = await portOf(c.output);
    worker(port, 'first');
    worker(port, 'second');
    await waitForStep(c.output, 20);
    const late = worker(port, 'late');
    expect(await c.exit, c.output().slice(-3000)).toBe(0);
    expect(c.output()).toMatch(/worker \d+ joined \(late,/);
    const report = JSON.parse(readFileSync(join(dir, `join-${reducer}.json`), 'utf8'));
    expect(report.workers).toBe(3);
    expectUndisturbedResult(`join-${reducer}`);
    expect(await late.exit).toBe(0);
  }, 180_000);

  it('resumes from a checkpoint after the coordinator is killed; workers reconnect by themselves', async () => {
    const port = await freePort();
    const checkpoints = join(dir, `restart-ckpt-${reducer}`);
    const first = coordinator(
      `restart-${reducer}`,
      ['--min-workers', '2', '--checkpoint-dir', checkpoints, '--checkpoint-every', '10'],
      port,
    );
    const workers = ['a', 'b'].map((name) => worker(port, name, ['--connect-timeout', '60']));
    await waitForText(first.output, /checkpoint at step 30 written/);
    first.child.kill('SIGKILL');
    await first.exit;
    const second = coordinator(
      `restart-${reducer}`,
      ['--min-workers', '2', '--checkpoint-dir', checkpoints, '--checkpoint-every', '10', '--resume'],
      port,
    );
    expect(await second.exit, second.output().slice(-3000)).toBe(0);
    expect(second.output()).toMatch(/resuming from .* at step (30|40|50)/);
    // It continued from there instead of starting over (a fresh run prints "step 1/300" first).
    expect(firstProgressStep(second.output())).toBeGreaterThan(resumedAt(second.output()));
    for (const w of workers) {
      expect(await w.exit).toBe(0);
      expect(w.output()).toMatch(/connection lost .*reconnecting/);
    }
    expectUndisturbedResult(`restart-${reducer}`);
  }, 180_000);

  it('writes a checkpoint and stops its workers on SIGTERM, and the resumed run ends with the undisturbed weights', async () => {
    const checkpoints = join(dir, `sigterm-ckpt-${reducer}`);
    const first = coordinator(`sigterm-${reducer}`, [
      '--min-workers',
      '1',
      '--checkpoint-dir',
      checkpoints,
      '--checkpoint-every',
      '0',
    ]);
    const port = await portOf(first.output);
    const w = worker(port, 'only');
    await waitForStep(first.output, 20);
    first.child.kill('SIGTERM');
    expect(await first.exit).toBe(130);
    const written = Number((first.output().match(/checkpoint at step (\d+) written/) ?? [])[1]);
    expect(written, first.output().slice(-3000)).toBeGreaterThanOrEqual(20);
    expect(existsSync(join(checkpoints, checkpointFileName(written)))).toBe(true);
    // The run did not complete: the worker says why and exits as the coordinator did.
    expect(await w.exit).toBe(130);
    expect(w.output()).toMatch(/coordinator says: \[INTERRUPTED\] run did not complete: interrupted by SIGTERM/);

    const second = coordinator(`sigterm-${reducer}`, ['--checkpoint-dir', checkpoints, '--resume']);
    const port2 = await portOf(second.output);
    worker(port2, 'again');
    expect(await second.exit, second.output().slice(-3000)).toBe(0);
    // It continued from the step the checkpoint holds instead of starting over.
    expect(resumedAt(second.output())).toBe(written);
    expect(firstProgressStep(second.output())).toBeGreaterThan(written);
    expectUndisturbedResult(`sigterm-${reducer}`);
  }, 180_000);
});

describe('resilience', () => {
  it('falls back to the star reducer when a joining worker cannot be reached by its peers, and the bits do not change', async () => {
    const c = startCoordinator('fallback', ['--reducer', 'sharded', '--min-workers', '2']);
    const port = await portOf(c.output);
    worker(port, 'first');
    worker(port, 'second');
    await waitForStep(c.output, 20);
    // It listens on 127.0.0.1 but tells its peers 127.0.0.2: nothing answers there.
    const unreachable = worker(port, 'unreachable', ['--advertise-address', '127.0.0.2']);
    expect(await c.exit, c.output().slice(-3000)).toBe(0);
    const fellBack =
      /worker \d+ cannot reach worker \d+ \(127\.0\.0\.2:\d+: [^)]*\)[^\n]*: falling back to the star reducer for the rest of this run/;
    expect(c.output()).toMatch(fellBack);
    // Sharded steps ran before (the fallback came with the join, after step 20).
    const before = c.output().slice(0, c.output().search(fellBack));
    expect(Math.max(...[...before.matchAll(/step +(\d+)\/\d+/g)].map((m) => Number(m[1])))).toBeGreaterThanOrEqual(20);
    expectUndisturbedResult('fallback');
    expect(await unreachable.exit).toBe(0);
  }, 180_000);

  it('tells its workers when a run fails, and they exit non-zero with its reason instead of 0', async () => {
    // SGD at lr 90 diverges within a few steps: the run stops with NON_FINITE (exit 5).
    const c = startCoordinator('diverged', ['--lr', '90'], 0, jobWith({ '--optimizer': 'sgd' }));
    const port = await portOf(c.output);
    const w = worker(port, 'only');
    expect(await c.exit, c.output().slice(-3000)).toBe(5);
    expect(c.output()).toMatch(/\[NON_FINITE\]/);
    expect(await w.exit, w.output().slice(-3000)).toBe(5);
    expect(w.output()).toMatch(/coordinator says: \[NON_FINITE\] run did not complete: /);
    expect(w.output()).not.toMatch(/run finished/);
  }, 120_000);

  it('refuses to resume from a checkpoint of a different run, naming what differs', { timeout: 120_000 }, async () => {
    // A checkpoint of this job, written at the end of a short run.
    const checkpoints = join(dir, 'other-run-ckpt');
    const short = await runCli([
      'local',
      '--workers',
      '1',
      ...jobWith({ '--steps': '3' }),
      '--checkpoint-dir',
      checkpoints,
    ]);
    expect(short.code, short.stderr.slice(-3000)).toBe(0);
    expect(existsSync(join(checkpoints, checkpointFileName(3)))).toBe(true);
    const result = await runCli([
      'coordinator',
      '--port',
      '0',
      '--insecure',
      ...jobWith({ '--global-batch': '64' }),
      '--checkpoint-dir',
      checkpoints,
      '--resume',
    ]);
    expect(result.code, result.stderr.slice(-3000)).toBe(5);
    expect(result.stderr).toMatch(/different run: globalBatchSize: checkpoint 96, this run 64/);
  });

  it('gives up with a clear message when the coordinator cannot be reached within --connect-timeout', async () => {
    const port = await freePort();
    const result = await runCli([
      'worker',
      '--connect',
      `ws://127.0.0.1:${port}`,
      '--connect-timeout',
      '1.5',
      '--metrics-port',
      'off',
    ]);
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(new RegExp(`could not reach ws://127.0.0.1:${port} within 2 s`));
  });
});
