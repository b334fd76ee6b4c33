// A straggler costs the step deadline once: a worker 1000x slower than the other, or one that
// handshakes and then never answers, is quarantined at its first missed deadline, later steps
// run without it, and one late --evict-after times in a row is evicted. The final weights are
// those of one worker computing everything, bit for bit.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runCli, startCli } from '../support/cli.js';
import { Rogue } from '../support/fuzz-client.js';
import { waitForText, watch } from '../support/processes.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-straggler-'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN = 'straggler-token';
/** Seconds: the least step deadline; the first step allows 3 times this (warm-up). */
const FLOOR_S = 2;
const JOB = [
  '--dataset',
  'synthetic',
  '--hidden',
  '64,32',
  '--global-batch',
  '96',
  '--micro-batch',
  '16',
  '--optimizer',
  'adam',
  '--seed',
  '5',
  '--eval-every',
  '0',
  '--metrics-port',
  'off',
];
const FLOOR = ['--step-deadline-floor', String(FLOOR_S)];

/** The weights of one worker computing every micro-batch of `steps` steps of JOB, trained once per length. */
const references = new Map<number, Promise<Float32Array>>();
function oneWorker(steps: number): Promise<Float32Array> {
  if (!references.has(steps)) {
    const out = join(dir, `one-${steps}`);
    const run = runCli(['local', '--workers', '1', ...JOB, '--steps', String(steps), '--save-model', out]).then(
      (result) => {
        if (result.code !== 0)
          throw new Error(`1-worker run exited with ${result.code}:\n${result.stderr.slice(-3000)}`);
        return readSavedWeights(out);
      },
    );
    references.set(steps, run);
  }
  return references.get(steps)!;
}

describe('stragglers', () => {
  it(`a 1000x slower worker costs the first step's deadline, not every step's (bound: ${FLOOR_S} s floor x 3 + 20 s)`, async () => {
    const out = join(dir, 'slow');
    const t0 = Date.now();
    const result = await runCli(
      ['local', '--workers', '2', '--debug-slowdown', '1,1000', ...JOB, ...FLOOR, '--steps', '8', '--save-model', out],
      {},
      180_000,
    );
    const seconds = (Date.now() - t0) / 1000;
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    // Before quarantine every step waited for the slow worker's deadline: 62 s here (75-93 s on other runs).
    expect(seconds, result.stderr.slice(-3000)).toBeLessThan(FLOOR_S * 3 + 20);
    expect(result.stderr).toMatch(/step 0: worker \d+ \(local-2\) did not answer micro-batches [\d,]+ within 6\.0 s/);
    // Late once only: no later step handed it work to miss.
    expect(result.stderr.match(/did not answer/g)).toHaveLength(1);
    expectBitIdentical(await oneWorker(8), readSavedWeights(out), 'weights with a 1000x slower worker vs 1 worker');
  }, 180_000);

  it('evicts the 1000x slower worker with --evict-after 1: its process exits 3 saying why, and the run goes on without waiting for a replacement', async () => {
    const out = join(dir, 'slow-evicted');
    const result = await runCli(
      [
        'local',
        ...['--workers', '2', '--debug-slowdown', '1,1000', '--evict-after', '1'],
        ...JOB,
        ...FLOOR,
        ...['--steps', '8', '--worker-wait', '30', '--save-model', out],
      ],
      {},
      180_000,
    );
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    expect(result.stderr).toMatch(/worker \d+ \(local-2\) evicted: late once \(step deadline 6\.0 s\)/);
    expect(result.stderr).toMatch(/\[worker 2\] \[EVICTED\] coordinator closed the connection: evicted: late once/);
    expect(result.stderr).toMatch(/worker 2 exited \(code 3\) before the run ended/);
    // --min-workers (2 in `local`) less one eviction: no step waited for a worker.
    expect(result.stderr).not.toMatch(/waiting for workers: 1 of/);
    expectBitIdentical(await oneWorker(8), readSavedWeights(out), 'weights after an eviction vs 1 worker');
  }, 180_000);

  it('evicts a worker that handshakes and never answers after 3 late deadlines; the run exits 0 with the bits of one worker', async () => {
    const steps = 400;
    const coordinator = startCli([
      'coordinator',
      ...['--host', '127.0.0.1', '--port', '0', '--token', TOKEN],
      ...['--min-workers', '2', '--evict-after', '3', '--step-deadline-floor', '1'],
      ...JOB,
      ...['--steps', String(steps), '--save-model', join(dir, 'stuck'), '--report', join(dir, 'stuck.json')],
    ]);
    children.push(coordinator);
    const c = watch(coordinator);
    const port = Number((await waitForText(c.output, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
    const url = `ws://127.0.0.1:${port}`;
    // The stuck one first, so that the first step (which waits for both) surely gives it work.
    const stuck = await Rogue.join(url, TOKEN, 'stuck');
    const honest = startCli(['worker', '--connect', url, '--name', 'honest', '--metrics-port', 'off'], {
      BATCHLAB_TOKEN: TOKEN,
    });
    children.push(honest);
    const h = watch(honest);
    expect(await c.exit, c.output().slice(-3000)).toBe(0);
    const id = stuck.welcome.workerId;
    expect(stuck.works.length).toBeGreaterThan(0);
    expect(c.output()).toMatch(new RegExp(`step 0: worker ${id} \\(stuck\\) did not answer micro-batches`));
    expect(c.output()).toMatch(
      new RegExp(`worker ${id} \\(stuck\\) evicted: late 3 times in a row \\(step deadline 1\\.0 s\\)`),
    );
    expect(c.output()).toMatch(new RegExp(`worker ${id} \\(stuck\\) lost: evicted: late 3 times in a row`));
    const ending = await stuck.closed;
    expect(ending.code).toBe(4408);
    expect(ending.errorCode).toBe('EVICTED');
    // Only the first step was handed to it: after that it was quarantined.
    expect(new Set(stuck.works.map((w) => w.step))).toEqual(new Set([0]));
    const report = JSON.parse(readFileSync(join(dir, 'stuck.json'), 'utf8'));
    expect(report).toMatchObject({ steps, samples: steps * 96 });
    expectBitIdentical(
      await oneWorker(steps),
      readSavedWeights(join(dir, 'stuck')),
      'weights after evicting vs 1 worker',
    );
    expect(await h.exit).toBe(0);
  }, 180_000);
});
