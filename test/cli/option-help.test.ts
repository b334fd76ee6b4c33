// `batchlab <command> --help`, run as a real process, states for every option the default that the
// option table (cli/option-table.ts) gives for that command: `local --min-workers` is --workers, not 1.

import { describe, expect, it } from 'vitest';
import { BENCH_SECTIONS } from '../../cli/bench.js';
import {
  BENCH_TABLE,
  COORDINATOR_TABLE,
  LOCAL_TABLE,
  SWEEP_TABLE,
  WORKER_TABLE,
  type OptionTable,
} from '../../cli/option-table.js';
import { runCli } from '../support/cli.js';

const COMMANDS: Record<string, OptionTable> = {
  local: LOCAL_TABLE,
  coordinator: COORDINATOR_TABLE,
  sweep: SWEEP_TABLE,
  worker: WORKER_TABLE,
  bench: BENCH_TABLE,
};

/** Each option's text in --help output (its lines joined), by option name. */
function splitHelp(help: string): Map<string, string> {
  const blocks = new Map<string, string>();
  let current: string | null = null;
  for (const line of help.split('\n')) {
    const start = /^ {2}--([a-z0-9-]+)\s/.exec(line);
    if (start) {
      current = start[1]!;
      blocks.set(current, line);
    } else if (current !== null && /^\s+\S/.test(line)) {
      blocks.set(current, `${blocks.get(current)} ${line}`);
    } else {
      current = null;
    }
  }
  for (const [name, text] of blocks) blocks.set(name, text.replace(/\s+/g, ' '));
  return blocks;
}

/** What yargs prints after "[default: " for a literal default: strings quoted, booleans bare. */
function showDefault(value: string | boolean): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

const seen = new Map<string, Promise<Map<string, string>>>();

/** The option texts of `batchlab <command> --help`, started once per command and environment. */
function readHelp(command: string, env: Record<string, string> = {}): Promise<Map<string, string>> {
  const key = JSON.stringify([command, env]);
  if (!seen.has(key)) {
    seen.set(
      key,
      runCli([command, '--help'], env, 30_000).then((result) => {
        expect(result.code, result.stderr).toBe(0);
        return splitHelp(result.stdout);
      }),
    );
  }
  return seen.get(key)!;
}

describe('batchlab <command> --help', () => {
  it.each(Object.keys(COMMANDS))('%s shows every option with the default of the option table', async (command) => {
    const table = COMMANDS[command]!;
    const blocks = await readHelp(command);
    expect([...blocks.keys()].filter((n) => n !== 'help' && n !== 'version')).toEqual(Object.keys(table));
    for (const [name, spec] of Object.entries(table)) {
      const shown = /\[default: ([^\]]*)\]/.exec(blocks.get(name)!)?.[1];
      const expected = spec.defaultText ?? (spec.default === undefined ? undefined : showDefault(spec.default));
      expect(shown, `--${name} in '${command} --help'`).toBe(expected);
    }
  });

  it('local --min-workers: every started worker is waited for, so the default is --workers, not 1', async () => {
    expect((await readHelp('local')).get('min-workers')).toContain('[default: --workers]');
    expect((await readHelp('coordinator')).get('min-workers')).toContain('[default: "1"]');
  });

  it('shows a BATCHLAB_<OPTION> value as the default, in place of a described one', async () => {
    const blocks = await readHelp('local', { BATCHLAB_MICRO_BATCH: '16', BATCHLAB_MIN_WORKERS: '3' });
    expect(blocks.get('micro-batch')).toContain('[default: "16"]');
    expect(blocks.get('min-workers')).toContain('[default: "3"]');
  });

  it("bench --only names the sections cli/bench.ts runs (they live there, so the table's help repeats them)", () => {
    expect(BENCH_TABLE.only.help).toMatch(new RegExp(`: ${BENCH_SECTIONS.join(', ')}$`));
  });
});
