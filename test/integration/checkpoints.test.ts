// Checkpoints on a real `batchlab local` run: writes that fail for lack of space (a 4 MB tmpfs)
// are logged and counted while the run goes on and the last good checkpoint stays usable; a run
// without --resume refuses a directory holding checkpoints (and --fresh moves them aside, bytes
// intact); a resume with changed LR settings is refused unless --allow-schedule-change.
// The tmpfs cases need root (mount); without it they are skipped, with the reason in their
// names. Under CI=true they fail instead.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkpointFileName,
  CheckpointWriteError,
  loadCheckpoint,
  saveCheckpoint,
  type Checkpoint,
} from '../../coordinator/checkpoint.js';
import { runCli } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-checkpoints-'));
const mounts: string[] = [];
afterAll(() => {
  for (const m of mounts.splice(0)) execFileSync('umount', [m]);
  rmSync(dir, { recursive: true, force: true });
});

const inCi = process.env.CI === 'true';
const isRoot = process.getuid?.() === 0;
const skipped = (what: string): string => (isRoot || inCi ? what : `${what} (skipped: mounting a tmpfs needs root)`);

/** A tmpfs of `size` (mount -o size=…) at a new directory; unmounted after the file's tests. */
function mountTmpfs(name: string, options: string): string {
  expect(isRoot, 'root is required under CI=true to mount a tmpfs').toBe(true);
  const at = join(dir, name);
  mkdirSync(at);
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', at]);
  mounts.push(at);
  return at;
}

/** A small job: synthetic data, one worker, no metrics endpoint. */
const job = (steps: number, extra: string[]): string[] => [
  'local',
  '--workers',
  '1',
  '--dataset',
  'synthetic',
  '--global-batch',
  '32',
  '--micro-batch',
  '16',
  '--steps',
  String(steps),
  '--optimizer',
  'adam',
  '--lr',
  '0.001',
  '--seed',
  '3',
  '--eval-every',
  '0',
  '--metrics-port',
  'off',
  ...extra,
];

/** sha256 of every file in `path` (not in subdirectories), by name. */
function hashes(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(path, { withFileTypes: true }))
    if (e.isFile())
      out[e.name] = createHash('sha256')
        .update(readFileSync(join(path, e.name)))
        .digest('hex');
  return out;
}

const report = (path: string) => JSON.parse(readFileSync(path, 'utf8'));

describe('checkpoints on a full disk', () => {
  // The default MLP (235,146 parameters, Adam) makes a 2.7 MB checkpoint: 4 MB holds one, not two.
  it.skipIf(!isRoot && !inCi)(
    skipped('a 4 MB tmpfs: failed writes are logged, the run exits 0, and --resume continues from the last good one'),
    { timeout: 180_000 },
    async () => {
      const small = mountTmpfs('full', 'size=4m');
      const first = await runCli(
        job(20, ['--checkpoint-dir', small, '--checkpoint-every', '5', '--report', join(dir, 'full.json')]),
      );
      expect(first.code, first.stderr.slice(-3000)).toBe(0);
      expect(first.stderr).toMatch(/checkpoint at step 5 written to .*checkpoint-000000005\.batchlab/);
      // Warned before the first write: 4 MB free, less than two checkpoints.
      expect(first.stderr).toMatch(/warning: 4\.00 MB free in .*, less than two checkpoints \(2 × 2\.69 MB\)/);
      expect(first.stderr.indexOf('warning:')).toBeLessThan(first.stderr.indexOf('checkpoint at step 5 written'));
      for (const step of [10, 15])
        expect(first.stderr).toMatch(
          new RegExp(
            `checkpoint at step ${step} failed \\(no_space\\): .*ENOSPC.*earlier checkpoints kept \\(newest of this session: step 5\\); the run goes on`,
          ),
        );
      expect(first.stderr).toMatch(
        /error: the final checkpoint \(step 20\) was not written \(no_space\): .*ENOSPC.*; --resume would continue from step 5/,
      );
      expect(report(join(dir, 'full.json')).checkpoints).toEqual({ lastStep: 5, failures: 3, finalWritten: false });
      // The good checkpoint is whole and alone: no truncated file, no temp file left taking the space.
      expect(readdirSync(small)).toEqual(['checkpoint-000000005.batchlab']);

      const second = await runCli(job(20, ['--checkpoint-dir', small, '--checkpoint-every', '5', '--resume']));
      expect(second.code, second.stderr.slice(-3000)).toBe(0);
      expect(second.stderr).toMatch(/resuming from .* at step 5 \(checkpoint-000000005\.batchlab/);
    },
  );

  it.skipIf(!isRoot && !inCi)(
    skipped('a write that does not fit fails as no_space, leaving the earlier checkpoint whole and no temp file'),
    async () => {
      const small = mountTmpfs('direct', 'size=1m');
      const weights = new Float32Array(100_000).map((_, i) => Math.sin(i));
      const state = (stepsDone: number): Checkpoint => ({
        identity: {
          model: 'm',
          params: [{ name: 'w', shape: [100_000] }],
          datasetFingerprint: 'f',
          globalBatchSize: 1,
          optimizer: 'sgd',
          seed: 1,
        },
        schedule: null,
        runId: 'r',
        stepsDone,
        samples: stepsDone,
        weights,
        optimizerState: {},
        noiseState: null,
        writtenAt: '2026-12-06T00:00:00.000Z',
      });
      // 400 kB each: a 1 MB volume holds two, and the third write runs out of space part-way.
      await saveCheckpoint(small, state(1), 3);
      await saveCheckpoint(small, state(2), 3);
      const before = hashes(small);
      const failed = saveCheckpoint(small, state(3), 3);
      await expect(failed).rejects.toBeInstanceOf(CheckpointWriteError);
      await expect(failed).rejects.toMatchObject({ reason: 'no_space', message: /ENOSPC/ });
      expect(hashes(small)).toEqual(before);
      expect((await loadCheckpoint(small)).stepsDone).toBe(2);
    },
  );

  it.skipIf(!isRoot && !inCi)(
    skipped('a read-only --checkpoint-dir is refused at start with exit 2 naming the option'),
    { timeout: 60_000 },
    async () => {
      const readOnly = mountTmpfs('read-only', 'ro,size=1m');
      const result = await runCli(job(3, ['--checkpoint-dir', readOnly]));
      expect(result.code, result.stderr.slice(-3000)).toBe(2);
      expect(result.stderr).toMatch(
        /--checkpoint-dir: got ".*read-only"; expected a directory path it can write \(.*read-only is not writable: EROFS\)/,
      );
      expect(result.stderr).not.toMatch(/listening on/);
    },
  );
});

describe('a checkpoint directory holding checkpoints', () => {
  it(
    'is refused without --resume (exit 2, bytes unchanged); --fresh moves the checkpoints aside',
    { timeout: 120_000 },
    async () => {
      const ckpt = join(dir, 'taken');
      const first = await runCli(job(3, ['--checkpoint-dir', ckpt]));
      expect(first.code, first.stderr.slice(-3000)).toBe(0);
      const before = hashes(ckpt);
      expect(Object.keys(before)).toHaveLength(1);

      const refused = await runCli(job(3, ['--checkpoint-dir', ckpt]));
      expect(refused.code, refused.stderr.slice(-3000)).toBe(2);
      const runId = /checkpoint at step 3 written to .* \(run ([0-9a-f]{12})\)/.exec(first.stderr)?.[1];
      expect(runId, first.stderr.slice(-3000)).toBeDefined();
      expect(refused.stderr).toMatch(
        new RegExp(
          `--checkpoint-dir ${ckpt} holds 1 checkpoint\\(s\\) of an earlier run \\(newest: checkpoint-000000003\\.batchlab, step 3 of run ${runId}, written \\d{4}-`,
        ),
      );
      expect(refused.stderr).toMatch(/--resume/);
      expect(refused.stderr).toMatch(/another --checkpoint-dir/);
      expect(refused.stderr).toMatch(/--fresh to move the old checkpoints into a dated subdirectory/);
      expect(refused.stderr).not.toMatch(/listening on/);
      expect(hashes(ckpt)).toEqual(before);

      const fresh = await runCli(job(3, ['--checkpoint-dir', ckpt, '--fresh']));
      expect(fresh.code, fresh.stderr.slice(-3000)).toBe(0);
      const aside = readdirSync(ckpt).filter((n) => n.startsWith('replaced-'));
      expect(aside).toHaveLength(1);
      expect(fresh.stderr).toContain(`--fresh: moved 1 checkpoint(s)`);
      expect(hashes(join(ckpt, aside[0]!))).toEqual(before);
      expect(Object.keys(hashes(ckpt))).toEqual(Object.keys(before));
    },
  );

  it('refuses a --checkpoint-dir that is a file, naming the option (exit 2)', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    const result = await runCli(job(3, ['--checkpoint-dir', file]));
    expect(result.code, result.stderr.slice(-3000)).toBe(2);
    expect(result.stderr).toMatch(
      /--checkpoint-dir: got ".*a-file"; expected a directory path it can write \(it is a file\)/,
    );
    expect(readFileSync(file, 'utf8')).toBe('not a directory');
  });
});

describe('resuming when the newest checkpoint is damaged', () => {
  it(
    'continues from the one before, naming the skipped file and why, and moves it out of the rotation',
    { timeout: 120_000 },
    async () => {
      const ckpt = join(dir, 'damaged');
      const first = await runCli(
        job(4, ['--checkpoint-dir', ckpt, '--checkpoint-every', '1', '--keep-checkpoints', '3']),
      );
      expect(first.code, first.stderr.slice(-3000)).toBe(0);
      expect(readdirSync(ckpt).sort()).toEqual([2, 3, 4].map(checkpointFileName));
      const newest = join(ckpt, checkpointFileName(4));
      writeFileSync(newest, readFileSync(newest).subarray(0, 100_000));
      const resumed = await runCli(job(4, ['--checkpoint-dir', ckpt, '--resume']));
      expect(resumed.code, resumed.stderr.slice(-3000)).toBe(0);
      expect(resumed.stderr).toMatch(
        /skipped .*checkpoint-000000004\.batchlab \(renamed to checkpoint-000000004\.batchlab\.unusable\): .*unusable: its contents do not match their SHA-256 \(torn write or edited file\)/,
      );
      expect(resumed.stderr).toMatch(
        /resuming from .* at step 3 \(checkpoint-000000003\.batchlab, .*1 newer file\(s\) skipped/,
      );
      expect(readdirSync(ckpt)).toContain('checkpoint-000000004.batchlab.unusable');
    },
  );
});

describe('resuming with other LR settings', () => {
  it(
    'refuses a changed --lr (exit 2) naming it; --allow-schedule-change accepts, logs and reports it',
    { timeout: 120_000 },
    async () => {
      const ckpt = join(dir, 'schedule');
      const first = await runCli(job(3, ['--checkpoint-dir', ckpt]));
      expect(first.code, first.stderr.slice(-3000)).toBe(0);
      const before = hashes(ckpt);
      const changed = (extra: string[]) =>
        job(6, ['--checkpoint-dir', ckpt, '--resume', ...extra]).map((a, i, all) =>
          all[i - 1] === '--lr' ? '0.002' : a,
        );

      const refused = await runCli(changed([]));
      expect(refused.code, refused.stderr.slice(-3000)).toBe(2);
      expect(refused.stderr).toMatch(
        /--resume: the LR settings differ from those of the checkpoint .*checkpoint-000000003\.batchlab: --lr: checkpoint 0\.001, this run 0\.002\. .*--allow-schedule-change/,
      );
      expect(hashes(ckpt)).toEqual(before);

      const accepted = await runCli(changed(['--allow-schedule-change', '--report', join(dir, 'schedule.json')]));
      expect(accepted.code, accepted.stderr.slice(-3000)).toBe(0);
      expect(accepted.stderr).toMatch(/--allow-schedule-change: --lr: checkpoint 0\.001, this run 0\.002/);
      expect(accepted.stderr).toMatch(/resuming from .* at step 3/);
      expect(report(join(dir, 'schedule.json')).scheduleChanges).toEqual([
        { setting: '--lr', checkpoint: 0.001, run: 0.002 },
      ]);
    },
  );
});
