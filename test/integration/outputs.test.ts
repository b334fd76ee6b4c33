// Every output path is checked before training: a report onto a directory, a model onto a file,
// a path under a file, two options on one file, or a read-only volume is refused at once with
// exit code 2 and the option named, before the data is loaded — never after the run, with the
// training lost and a stray temp file left behind.

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-outputs-'));
const readOnly = join(dir, 'read-only');
let mounted = false;
afterAll(() => {
  if (mounted) execFileSync('umount', [readOnly]);
  rmSync(dir, { recursive: true, force: true });
});

const aDirectory = join(dir, 'a-directory');
const aFile = join(dir, 'a-file');
mkdirSync(aDirectory);
writeFileSync(aFile, 'keep me\n');

/** A job long enough that a refusal after training would be obvious (it is never reached). */
const JOB = ['--workers', '1', '--dataset', 'synthetic', '--hidden', '16', '--steps', '500', '--metrics-port', 'off'];

/** Runs `local` with `extra` and asserts it was refused before the dataset was loaded, naming `option`. */
async function expectRefusedAtStart(command: string[], option: string, why: RegExp): Promise<void> {
  const before = readdirSync(dir, { recursive: true }).sort();
  const result = await runCli(command);
  expect(result.code, result.stderr).toBe(2);
  expect(result.stderr).toMatch(new RegExp(`--${option}: got "[^"]*"; expected .*${why.source}`));
  // Refused before anything ran: no dataset line, no step, nothing written.
  expect(result.stderr).not.toMatch(/dataset synthetic|step +\d+\/|workers ready/);
  expect(readdirSync(dir, { recursive: true }).sort()).toEqual(before);
}

describe('output paths are checked before training', () => {
  it('refuses --report onto a directory', () =>
    expectRefusedAtStart(['local', ...JOB, '--report', aDirectory], 'report', /it is a directory/));

  it('refuses --save-model onto an existing file', () =>
    expectRefusedAtStart(['local', ...JOB, '--save-model', aFile], 'save-model', /it is a file/));

  it('refuses --trace under a file', () =>
    expectRefusedAtStart(['local', ...JOB, '--trace', join(aFile, 'trace.json')], 'trace', /a-file is a file/));

  it('refuses --events onto a directory, and the same file as --report', async () => {
    await expectRefusedAtStart(['local', ...JOB, '--events', aDirectory], 'events', /it is a directory/);
    const same = join(dir, 'same-events.json');
    await expectRefusedAtStart(
      ['local', ...JOB, '--report', same, '--events', same],
      'events',
      /a path that --report does not also write to/,
    );
  });

  it('refuses --checkpoint-dir onto a file', () =>
    expectRefusedAtStart(['local', ...JOB, '--checkpoint-dir', aFile], 'checkpoint-dir', /it is a file/));

  it('refuses --targets-file onto a directory (coordinator)', () =>
    expectRefusedAtStart(
      ['coordinator', '--insecure', '--port', '0', ...JOB.slice(2), '--targets-file', aDirectory],
      'targets-file',
      /it is a directory/,
    ));

  it('refuses two options writing the same file', () =>
    expectRefusedAtStart(
      ['local', ...JOB, '--report', join(dir, 'same.json'), '--trace', join(dir, 'same.json')],
      'trace',
      /a path that --report does not also write to/,
    ));

  it('refuses sweep --html onto a directory before the first point runs', () =>
    expectRefusedAtStart(
      ['sweep', ...JOB.slice(2), '--global-batch', '32', '--workers', '1', '--html', aDirectory],
      'html',
      /it is a directory/,
    ));

  it('refuses bench --json onto a directory before measuring', () =>
    expectRefusedAtStart(['bench', '--quick', '--json', aDirectory], 'json', /it is a directory/));

  it('accepts a report in directories that do not exist yet, and creates them', async () => {
    const report = join(dir, 'new', 'sub', 'run.json');
    const result = await runCli(['local', ...JOB.slice(0, 6), '--steps', '2', '--report', report]);
    expect(result.code, result.stderr).toBe(0);
    expect(readdirSync(join(dir, 'new', 'sub'))).toEqual(['run.json']);
    rmSync(join(dir, 'new'), { recursive: true });
  });

  const isRoot = process.getuid?.() === 0;
  const inCi = process.env.CI === 'true';
  it.skipIf(!isRoot && !inCi)(
    `refuses --save-model on a read-only volume${isRoot ? '' : ' (skipped: mounting a read-only tmpfs needs root)'}`,
    async () => {
      expect(isRoot, 'CI=true: this test must run as root to mount a read-only tmpfs').toBe(true);
      mkdirSync(readOnly);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', readOnly]);
      mounted = true;
      await expectRefusedAtStart(
        ['local', ...JOB, '--save-model', join(readOnly, 'model')],
        'save-model',
        /read-only is not writable: EROFS/,
      );
    },
  );
});
