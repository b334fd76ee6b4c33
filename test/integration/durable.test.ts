// A long run that dies leaves what it had: `batchlab local --resume auto` killed with SIGKILL
// halfway (its workers too) leaves an --events line for every step it applied and the report of
// its last checkpoint; the same command run again continues from that checkpoint and ends with the
// weights of an undisturbed run, bit for bit. The first run of a --resume auto command, on an
// empty directory, says it starts fresh.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { checkpointFileName } from '../../coordinator/checkpoint.js';
import { CLI, cleanEnv, runCli } from '../support/cli.js';
import { watch } from '../support/processes.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-durable-'));
const pids: number[] = [];
afterEach(() => {
  for (const pid of pids.splice(0)) killQuietly(pid);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const STEPS = 60;
const EVERY = 10;
const JOB = [
  'local',
  '--workers',
  '2',
  '--dataset',
  'synthetic',
  '--hidden',
  '64,32',
  '--global-batch',
  '64',
  '--micro-batch',
  '16',
  '--steps',
  String(STEPS),
  '--optimizer',
  'adam',
  '--seed',
  '5',
  '--eval-every',
  '20',
  '--metrics-port',
  'off',
];

function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** The direct children of `pid`, from /proc (every thread's children file). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

/** True while `pid` exists and is not a zombie. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every line of an --events file, parsed (a torn last line fails the parse). */
function readEvents(path: string): Record<string, unknown>[] {
  const text = readFileSync(path, 'utf8');
  expect(text.endsWith('\n'), 'the events file ends with a whole line').toBe(true);
  return text
    .split('\n')
    .slice(0, -1)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const stepsOf = (events: Record<string, unknown>[]): number[] =>
  events.filter((e) => e.type === 'step').map((e) => e.step as number);

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('a --resume auto run killed with SIGKILL halfway', () => {
  it(
    'leaves every step in --events and the report of its last checkpoint; run again, it ends bit-identical to an undisturbed run',
    { timeout: 300_000 },
    async () => {
      const reference = await runCli([...JOB, '--save-model', join(dir, 'reference')], {}, 120_000);
      expect(reference.code, reference.stderr.slice(-3000)).toBe(0);

      const ckpt = join(dir, 'checkpoints');
      const events = join(dir, 'events.jsonl');
      const report = join(dir, 'report.json');
      const args = [
        CLI,
        ...JOB,
        '--checkpoint-dir',
        ckpt,
        '--checkpoint-every',
        String(EVERY),
        '--resume',
        'auto',
        '--events',
        events,
        '--report',
        report,
        '--save-model',
        join(dir, 'model'),
      ];
      // Its own process group, as a shell would start it; `local` starts each worker in a group of its own.
      const first = spawn(process.execPath, args, {
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      pids.push(first.pid!);
      const firstRun = watch(first);
      for (;;) {
        // While the run writes, the file may be empty or end mid-line: count whole lines only.
        const whole = existsSync(events) ? readFileSync(events, 'utf8').split('\n').slice(0, -1) : [];
        if (stepsOf(whole.map((line) => JSON.parse(line))).some((s) => s >= STEPS / 2)) break;
        expect(first.exitCode, firstRun.output().slice(-3000)).toBeNull();
        await sleep(20);
      }
      const workers = childrenOf(first.pid!);
      expect(workers, 'local has started its two workers').toHaveLength(2);
      pids.push(...workers);
      killQuietly(-first.pid!);
      for (const pid of workers) killQuietly(pid);
      await firstRun.exit;
      for (let i = 0; i < 100 && workers.some(isRunning); i++) await sleep(50);
      expect(workers.filter(isRunning), 'no worker outlives the kill').toEqual([]);
      expect(firstRun.output()).toContain(`--resume auto: no checkpoint in ${ckpt}; starting a new run at step 0`);

      // What the killed run left: every step it applied, contiguous from 1, after its configuration.
      const killedEvents = readEvents(events);
      expect(killedEvents[0]).toMatchObject({ type: 'config', steps: STEPS, globalBatchSize: 64, seed: 5 });
      expect(killedEvents[0]).not.toHaveProperty('token');
      const killedSteps = stepsOf(killedEvents);
      const reached = killedSteps[killedSteps.length - 1]!;
      expect(reached).toBeGreaterThanOrEqual(STEPS / 2);
      expect(reached).toBeLessThan(STEPS);
      expect(killedSteps).toEqual(range(1, reached));
      expect(killedEvents.filter((e) => e.type === 'eval').map((e) => e.step)).toEqual(
        [20, 40].filter((s) => s <= reached),
      );
      // …its checkpoints (the kill may have come between the step and its checkpoint)…
      const written = readdirSync(ckpt).filter((n) => /^checkpoint-\d+\.batchlab$/.test(n));
      const checkpointed = Math.max(...written.map((n) => Number(/\d+/.exec(n)![0])));
      const lastDue = Math.floor(reached / EVERY) * EVERY;
      expect(lastDue === reached ? [reached, reached - EVERY] : [lastDue]).toContain(checkpointed);
      // …and the report as of a checkpoint (the last, or the one before when the kill came between the two writes), marked incomplete.
      const interim = JSON.parse(readFileSync(report, 'utf8'));
      expect([checkpointed, checkpointed - EVERY]).toContain(interim.steps);
      expect(interim.steps).toBeGreaterThanOrEqual(EVERY);
      expect(interim).toMatchObject({ complete: false, samples: interim.steps * 64, trainAccuracy: null });

      // The same command again: it continues from that checkpoint and ends as if never stopped.
      const second = await runCli(args.slice(1), {}, 120_000);
      expect(second.code, second.stderr.slice(-3000)).toBe(0);
      expect(second.stderr).toMatch(
        new RegExp(
          `--resume auto: resuming from ${ckpt} at step ${checkpointed} \\(${checkpointFileName(checkpointed)}`,
        ),
      );
      expectBitIdentical(
        readSavedWeights(join(dir, 'reference')),
        readSavedWeights(join(dir, 'model')),
        'weights after the kill and --resume auto vs the undisturbed run',
      );
      const final = JSON.parse(readFileSync(report, 'utf8'));
      expect(final).toMatchObject({ complete: true, steps: STEPS, samples: STEPS * 64 });
      // The events file was appended to: the killed run's lines, a resume line, then the rest.
      const all = readEvents(events);
      expect(all.slice(0, killedEvents.length)).toEqual(killedEvents);
      expect(all[killedEvents.length]).toMatchObject({ type: 'resume', step: checkpointed });
      expect(stepsOf(all.slice(killedEvents.length))).toEqual(range(checkpointed + 1, STEPS));
      expect(all.filter((e) => e.type === 'config')).toHaveLength(1);
    },
  );
});
