// `--config FILE` refusals, as real `batchlab` processes: a bad value, an unknown key, a key
// written in camelCase or belonging to another command, a file that cannot be parsed or read.
// Each exits 2 before any data loads, naming --config, the file and (where there is one) the
// line and key. And the sections of a shared file: each command reads the top level and its own.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readConfigFile, recordConfig } from '../../cli/config-file.js';
import { runCli } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes `text` to `name` in the test directory and returns its path. */
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Escapes `text` for a RegExp. */
const literal = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Runs `args` and expects exit 2 with `message` on stderr, before any dataset or worker. */
async function expectRefused(args: string[], message: RegExp, env: Record<string, string> = {}): Promise<void> {
  const result = await runCli(args, env);
  expect(result.code, result.stderr).toBe(2);
  expect(result.stderr).toMatch(message);
  expect(result.stderr).not.toMatch(/dataset|workers ready|step +\d+\//);
}

describe('--config refuses what it cannot use, naming the file, line and key', () => {
  it('a bad value: the key, the value and what is accepted, as for the flag', async () => {
    const path = file('bad-value.yaml', 'seed: 3\nglobal-batch: 12abc\n');
    await expectRefused(
      ['local', '--config', path],
      new RegExp(`--config ${literal(path)}, line 2, global-batch: got "12abc"; expected an integer from 1 to 1000000`),
    );
  });

  it('a bad value in a section, and a flag that is not true or false', async () => {
    const section = file('bad-section.yaml', 'coordinator:\n  port: 7070\nworker:\n  max-chunk: 0\n');
    await expectRefused(
      ['coordinator', '--insecure', '--config', section],
      new RegExp(`--config ${literal(section)}, line 4, worker.max-chunk: got "0"; expected an integer from 1`),
    );
    const flag = file('bad-flag.yaml', 'nesterov: yes\n');
    await expectRefused(
      ['local', '--config', flag],
      new RegExp(`--config ${literal(flag)}, line 1, nesterov: got "yes"; expected true or false`),
    );
  });

  it('an unknown key, with the nearest option name', async () => {
    const path = file('unknown.yaml', 'seed: 3\nglobal-bach: 64\n');
    await expectRefused(
      ['local', '--config', path],
      new RegExp(
        `--config ${literal(path)}, line 2: unknown key "global-bach": not an option of local; did you mean "global-batch"\\?`,
      ),
    );
  });

  it('a camelCase key, with the flag form', async () => {
    const path = file('camel.json', '{\n  "globalBatch": 64\n}\n');
    await expectRefused(
      ['sweep', '--config', path],
      new RegExp(
        `--config ${literal(path)}, line 2: unknown key "globalBatch": keys are written as the flags, "global-batch"`,
      ),
    );
  });

  it("another command's key, with the section to put it in", async () => {
    const path = file('other.yaml', 'global-batch: 64\nconnect: ws://127.0.0.1:7070\n');
    await expectRefused(
      ['coordinator', '--insecure', '--config', path],
      new RegExp(
        `line 2: unknown key "connect": not an option of coordinator but of worker; put it under a "worker:" section`,
      ),
    );
  });

  it('a file that does not parse, with the line', async () => {
    const path = file('broken.yaml', 'seed: 3\nhidden: [32, 16\nsteps: 3\n');
    await expectRefused(
      ['local', '--config', path],
      new RegExp(`--config ${literal(path)}: not valid YAML or JSON: .*line \\d+`),
    );
  });

  it('a file that does not exist, also when BATCHLAB_CONFIG names it', async () => {
    const path = join(dir, 'missing.yaml');
    const message = new RegExp(`--config ${literal(path)}: cannot read it: ENOENT`);
    await expectRefused(['local', '--config', path], message);
    const fromVariable = new RegExp(`BATCHLAB_CONFIG \\(--config\\) ${literal(path)}: cannot read it: ENOENT`);
    await expectRefused(['worker'], fromVariable, { BATCHLAB_CONFIG: path });
  });
});

describe('a file shared by commands', () => {
  const shared = file(
    'shared.yaml',
    [
      'backend: wasm',
      'coordinator:',
      '  global-batch: 256',
      '  port: 7171',
      'worker:',
      '  connect: ws://coordinator:7171',
      '  backend: cpu',
      '  hidden-size: 3',
      '',
    ].join('\n'),
  );

  it('checks every section by the options of its command', () => {
    expect(() => readConfigFile(shared, 'coordinator')).toThrow(
      /line 8: unknown key "worker.hidden-size": not an option of worker; did you mean/,
    );
  });

  it('gives each command the top level and its own section over it, as command-line text', () => {
    const good = file(
      'shared-good.yaml',
      'backend: wasm\ncoordinator:\n  global-batch: 256\nworker:\n  backend: cpu\n',
    );
    expect(readConfigFile(good, 'coordinator')).toEqual({ backend: 'wasm', 'global-batch': '256' });
    expect(readConfigFile(good, 'worker')).toEqual({ backend: 'cpu' });
    // A report is read as its config; the rest of it is not options.
    const report = file('report.json', JSON.stringify({ command: 'x', steps: 9, config: { seed: 4, nesterov: true } }));
    expect(readConfigFile(report, 'local')).toEqual({ seed: '4', nesterov: true });
    // A coordinator's report runs on `local` too: what only a coordinator takes is in its section.
    const recorded = recordConfig('coordinator', {
      'global-batch': '64',
      port: '7171',
      insecure: true,
      seed: '5',
      'checkpoint-dir': 'ckpt',
      resume: 'auto',
    });
    expect(recorded).toEqual({ 'global-batch': 64, seed: 5, coordinator: { port: 7171, insecure: true } });
    const coordinatorReport = file('coordinator-report.json', JSON.stringify({ command: 'x', config: recorded }));
    expect(readConfigFile(coordinatorReport, 'local')).toEqual({ 'global-batch': '64', seed: '5' });
    expect(readConfigFile(coordinatorReport, 'coordinator')).toEqual({
      'global-batch': '64',
      seed: '5',
      port: '7171',
      insecure: true,
    });
    // One without options (written in process) says so rather than refusing its keys one by one.
    const bare = file('bare-report.json', JSON.stringify({ command: 'x', steps: 9, config: null }));
    expect(() => readConfigFile(bare, 'local')).toThrow(/line 1, config: this report records no options/);
  });
});
