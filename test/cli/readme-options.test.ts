// README.md's "CLI reference" states the options and defaults of the option table (cli/option-table.ts):
// the "Training options" table and each command's bulleted list name every option once, with the
// table's default, and the section names no option that does not exist.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  BENCH_TABLE,
  COORDINATOR_TABLE,
  DATA_FETCH_TABLE,
  LOCAL_TABLE,
  SWEEP_TABLE,
  TRAINING_TABLE,
  WORKER_TABLE,
  type OptionSpec,
  type OptionTable,
} from '../../cli/option-table.js';
import { ROOT } from '../support/cli.js';

/** Options as README states them: the names one table row or bullet describes, and the default it gives each. */
interface Entry {
  names: string[];
  /** One per name: the stated default, or undefined when none is stated. */
  defaults: (string | undefined)[];
  /** The README text, for failure messages. */
  text: string;
}

/** The text of the `## CLI reference` section. */
function readReference(): string {
  const readme = readFileSync(`${ROOT}README.md`, 'utf8');
  const start = readme.indexOf('\n## CLI reference\n');
  expect(start, 'README.md has a "## CLI reference" section').toBeGreaterThan(-1);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end === -1 ? undefined : end);
}

/** Option names in markdown: `--global-batch` and `--report FILE` give global-batch and report. */
function findOptionNames(markdown: string): string[] {
  return [...markdown.matchAll(/`--([a-z][a-z0-9-]*)[^`]*`/g)].map((m) => m[1]!);
}

/** Text as read, without code quotes; "–" (an en dash) and nothing both mean "no default". */
function readCell(markdown: string): string | undefined {
  const text = markdown.replaceAll('`', '').trim();
  return text === '' || text === '–' ? undefined : text;
}

/** The rows of the markdown table after `caption`; a row of several options gives their defaults comma-separated. */
function readTable(reference: string, caption: string): Entry[] {
  const start = reference.indexOf(caption);
  expect(start, `README.md's CLI reference has "${caption}"`).toBeGreaterThan(-1);
  const lines = reference.slice(start).split('\n').slice(1);
  const table = lines.slice(lines.findIndex((l) => l.startsWith('|')));
  const rows = table
    .slice(
      0,
      table.findIndex((l) => !l.startsWith('|')),
    )
    .slice(2);
  return rows.map((row) => {
    const [options = '', defaults = ''] = row.split('|').slice(1, -1);
    const names = findOptionNames(options);
    const stated = readCell(defaults);
    const split = names.length === 1 || stated === undefined ? [stated] : stated.split(/,\s+/).map(readCell);
    return { names, defaults: names.map((_, i) => split[i]), text: row };
  });
}

/** The bulleted list after the paragraph that starts with `lead`; a bullet's options are the ones it opens with. */
function readBullets(reference: string, lead: string): Entry[] {
  const lines = reference.split('\n');
  const start = lines.findIndex((l) => l.startsWith(lead));
  expect(start, `README.md's CLI reference has a paragraph starting "${lead}"`).toBeGreaterThan(-1);
  const bullets: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith('- ')) bullets.push(line);
    else if (line.startsWith('  ') && bullets.length > 0) bullets[bullets.length - 1] += ` ${line.trim()}`;
    else if (line.trim() !== '' || bullets.length > 0) break;
  }
  expect(bullets.length, `bullets after "${lead}"`).toBeGreaterThan(0);
  return bullets.map((bullet) => {
    const opening = /^- ((?:`--[^`]+`(?:, | and )?)+)/.exec(bullet)?.[1] ?? '';
    const names = findOptionNames(opening);
    // "(default X; …)", "(default X: …)", "(seconds, default X)": one default, for a bullet of one option.
    const stated = /\bdefault:? (.+?)(?:; |\)|: |$)/.exec(bullet.replaceAll('`', ''))?.[1];
    if (names.length > 1) expect(stated, `a bullet of several options states no default: ${bullet}`).toBeUndefined();
    return { names, defaults: names.map(() => stated?.trim()), text: bullet };
  });
}

/** The default as README writes it: the described one, the literal, or off/on for a flag. */
function describeDefault(spec: OptionSpec): string | undefined {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (typeof spec.default === 'boolean') return spec.default ? 'on' : 'off';
  return spec.default;
}

/** Every option of `table` appears in `entries` exactly once, no other does, and each with the table's default. */
function expectSameOptions(entries: Entry[], table: OptionTable, where: string): void {
  const named = entries.flatMap((e) => e.names);
  expect([...named].sort(), `options ${where}`).toEqual(Object.keys(table).sort());
  for (const entry of entries) {
    entry.names.forEach((name, i) => {
      const spec = table[name]!;
      const stated = entry.defaults[i];
      // A flag is off unless given: README may leave that unsaid.
      if (stated === undefined && spec.kind === 'boolean' && spec.default === false) return;
      expect(stated, `default of --${name} ${where}: ${entry.text}`).toBe(describeDefault(spec));
    });
  }
}

/** The options of `table` that are its own: not in `inherited`, or with a different row there. */
function selectOwn(table: OptionTable, inherited: OptionTable): OptionTable {
  return Object.fromEntries(Object.entries(table).filter(([name, spec]) => inherited[name] !== spec));
}

const reference = readReference();

describe("README.md's CLI reference agrees with the option table", () => {
  it('the "Training options" table: every training option once, with its default', () => {
    expectSameOptions(readTable(reference, 'Training options'), TRAINING_TABLE, 'in the "Training options" table');
  });

  it.each([
    ['local', '`local` adds', selectOwn(LOCAL_TABLE, TRAINING_TABLE)],
    ['coordinator', '`coordinator` adds', selectOwn(COORDINATOR_TABLE, TRAINING_TABLE)],
    ['sweep', '`sweep` takes', selectOwn(SWEEP_TABLE, TRAINING_TABLE)],
    ['worker', '`worker` takes', WORKER_TABLE],
    ['bench', '`bench` takes', BENCH_TABLE],
    ['data fetch', '`data fetch cifar10|cifar100` takes', DATA_FETCH_TABLE],
  ])("%s: the list names each of the command's own options once, with its default", (command, lead, table) => {
    expectSameOptions(readBullets(reference, lead), table, `in the list of ${command}`);
  });

  it('names no option that no command has', () => {
    const tables = [
      TRAINING_TABLE,
      COORDINATOR_TABLE,
      LOCAL_TABLE,
      SWEEP_TABLE,
      WORKER_TABLE,
      BENCH_TABLE,
      DATA_FETCH_TABLE,
    ];
    const known = new Set(['help', 'version', ...tables.flatMap((t) => Object.keys(t))]);
    const mentioned = [...reference.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!);
    expect(mentioned.length).toBeGreaterThan(50);
    expect(mentioned.filter((name) => !known.has(name))).toEqual([]);
  });
});
