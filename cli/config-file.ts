// `--config FILE`: a command's options read from a YAML or JSON file, keys written as the flags
// (`global-batch: 256`), and the configuration a report records so that `--config report.json`
// runs it again. The file's values become yargs defaults under the BATCHLAB_* ones, so the order
// is command line > environment > file > table default, and every value still goes through the
// option table's parser: once here (for a message naming file, line and key) and once with the rest.

import { readFileSync } from 'node:fs';
import type { Options } from 'yargs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair } from 'yaml';
import type { RecordedConfig, RecordedValue } from '../coordinator/report.js';
import { OptionError } from '../shared/errors.js';
import {
  COORDINATOR_TABLE,
  LOCAL_TABLE,
  SWEEP_TABLE,
  TRAINING_TABLE,
  WORKER_TABLE,
  type OptionTable,
} from './option-table.js';
import { readText, type RawOptions } from './option-values.js';

/** The commands that take --config, each with its options; also the names of a file's sections. */
const CONFIG_TABLES = {
  local: LOCAL_TABLE,
  coordinator: COORDINATOR_TABLE,
  sweep: SWEEP_TABLE,
  worker: WORKER_TABLE,
} as const satisfies Record<string, OptionTable>;

export type ConfigCommand = keyof typeof CONFIG_TABLES;

/** The option naming the file, and the variable that does when the option is absent. */
const CONFIG_OPTION = 'config';
const CONFIG_VARIABLE = 'BATCHLAB_CONFIG';

/**
 * Options a report does not record: the token (a secret); the files a run writes, so that
 * running a report again never overwrites the first run's report, events, model, trace or
 * targets; and its checkpoint options, as a run again is a new run, which must neither resume
 * from the first run's checkpoints nor move them aside.
 */
const NOT_RECORDED: ReadonlySet<string> = new Set([
  CONFIG_OPTION,
  'token',
  'report',
  'events',
  'html',
  'save-model',
  'trace',
  'targets-file',
  'checkpoint-dir',
  'resume',
  'fresh',
  'allow-schedule-change',
] satisfies (keyof typeof COORDINATOR_TABLE | keyof typeof SWEEP_TABLE)[]);

/** Why a report cannot be run again: it has no options to run with. */
const REPORT_WITHOUT_CONFIG =
  'this report records no options under "config" (it was written in process, or by an older batchlab); ' +
  'run its "command" instead';

/** A BAD_OPTION error about --config FILE; `where` is ", line N, key" or empty. */
export class ConfigFileError extends OptionError {
  constructor(path: string, where: string, detail: string) {
    super(CONFIG_OPTION, path, detail);
    this.message = `--${CONFIG_OPTION} ${path}${where}: ${detail}`;
  }
}

/**
 * The file --config names on the command line `args` (after hideBin), else BATCHLAB_CONFIG;
 * undefined when neither. yargs has not parsed yet when a command's options are declared, so the
 * option is found here the way yargs will read it: `--config FILE` or `--config=FILE`, before `--`.
 */
function findConfigPath(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): { path: string; variable: string | null } | undefined {
  const given: string[] = [];
  for (let i = 0; i < args.length && args[i] !== '--'; i++) {
    const arg = args[i]!;
    if (arg.startsWith(`--${CONFIG_OPTION}=`)) given.push(arg.slice(CONFIG_OPTION.length + 3));
    else if (arg === `--${CONFIG_OPTION}`) {
      const next = args[i + 1];
      given.push(next === undefined || next.startsWith('-') ? '' : next);
    }
  }
  const variable = given.length > 0 ? null : CONFIG_VARIABLE;
  const path =
    variable === null
      ? readText({ [CONFIG_OPTION]: given.length === 1 ? given[0] : given }, CONFIG_OPTION)
      : env[variable];
  if (path === '') throw new OptionError(CONFIG_OPTION, '', 'a YAML or JSON FILE of options', variable ?? undefined);
  return path === undefined ? undefined : { path, variable };
}

/**
 * `options` with the values of the --config file (if `args` or BATCHLAB_CONFIG names one) as their
 * defaults, so `--help` shows them and BATCHLAB_* variables and the command line override them.
 */
export function withConfigFile<T extends Record<string, Options>>(
  command: ConfigCommand,
  options: T,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): T {
  const found = findConfigPath(args, env);
  if (found === undefined) return options;
  let values: RawOptions;
  try {
    values = readConfigFile(found.path, command);
  } catch (error) {
    // A file BATCHLAB_CONFIG named is blamed on the variable, as a bad BATCHLAB_* value is.
    if (error instanceof ConfigFileError && found.variable !== null)
      error.message = error.message.replace(`--${CONFIG_OPTION} `, `${found.variable} (--${CONFIG_OPTION}) `);
    throw error;
  }
  const out: Record<string, Options> = { ...options };
  for (const [name, value] of Object.entries(values)) {
    const { defaultDescription: _described, ...declared } = options[name]!;
    out[name] = { ...declared, default: value };
  }
  return out as T;
}

/** One option's value from the file, with where it was written. */
interface FileValue {
  value: string | boolean;
  /** ", line N, key" (key with its section, if any), for messages. */
  where: string;
}

/**
 * The options `command` takes from the file at `path`, as yargs would give them (text, or a boolean
 * for a flag). A file is a mapping of option names to values; it may hold sections named after the
 * commands (`coordinator:`, `worker:`, …) whose keys only that command reads, over the top level's.
 * A report (a mapping with a `config` mapping) is read as its `config`. Throws a ConfigFileError
 * naming the file, line and key for anything it cannot use, in any section.
 */
export function readConfigFile(path: string, command: ConfigCommand): RawOptions {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigFileError(path, '', `cannot read it: ${(error as Error).message}`);
  }
  const lines = new LineCounter();
  const document = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const failure = document.errors[0];
  if (failure) {
    throw new ConfigFileError(path, '', `not valid YAML or JSON: ${failure.message.split('\n')[0]!.replace(/:$/, '')}`);
  }
  const file = new ConfigReader(path, lines);
  let top = document.contents as Node | null;
  const keys = isMap(top) ? top.items : [];
  const replayed = keys.find((pair) => file.keyOf(pair) === CONFIG_OPTION);
  if (replayed && !isMap(replayed.value)) {
    const absent = isScalar(replayed.value) && replayed.value.value === null;
    throw file.error(replayed, CONFIG_OPTION, absent ? REPORT_WITHOUT_CONFIG : 'a config file cannot name another');
  }
  // A report of a run started in process, or by a batchlab that did not record options.
  if (!replayed && keys.some((pair) => file.keyOf(pair) === 'command'))
    throw new ConfigFileError(path, '', REPORT_WITHOUT_CONFIG);
  if (replayed) top = replayed.value as Node;
  const sections = file.readSections(top, command);
  const merged = new Map([...(sections.get('') ?? []), ...(sections.get(command) ?? [])]);
  const raw: RawOptions = Object.fromEntries([...merged].map(([name, { value }]) => [name, value]));
  // Every value through its parser now, with the values the same command reads around it
  // (--debug-slowdown reads --workers), so that a bad one is reported with the file, line and key.
  for (const [section, values] of sections) {
    const reader = (section || command) as ConfigCommand;
    const table: OptionTable = CONFIG_TABLES[reader];
    const context: RawOptions =
      reader === command ? raw : Object.fromEntries([...values].map(([name, { value }]) => [name, value]));
    for (const [name, { where }] of values) {
      try {
        table[name]!.parse(context, name);
      } catch (error) {
        if (!(error instanceof OptionError)) throw error;
        throw new ConfigFileError(path, where, error.message.replace(`--${name}: `, ''));
      }
    }
  }
  return raw;
}

/** Reads the mappings of one parsed file; errors name the file, the line and the key. */
class ConfigReader {
  constructor(
    private readonly path: string,
    private readonly lines: LineCounter,
  ) {}

  keyOf(pair: Pair): string {
    return isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
  }

  /** ", line N" of the pair's key (nothing when unknown). */
  private lineOf(pair: Pair): string {
    const offset = (pair.key as Node | null)?.range?.[0];
    return offset === undefined ? '' : `, line ${this.lines.linePos(offset).line}`;
  }

  /** An error about `pair`; `key` (its name with any section) is named before the detail when given. */
  error(pair: Pair, key: string | null, detail: string): ConfigFileError {
    return new ConfigFileError(this.path, `${this.lineOf(pair)}${key === null ? '' : `, ${key}`}`, detail);
  }

  /** The top level's options under '' (for `command`) and each section's under its name. */
  readSections(top: Node | null, command: ConfigCommand): Map<string, Map<string, FileValue>> {
    if (top === null || (isScalar(top) && top.value === null)) return new Map(); // an empty file
    if (!isMap(top)) {
      throw new ConfigFileError(
        this.path,
        '',
        'expected a mapping of option names to values, e.g. "global-batch: 256"',
      );
    }
    const plain: Pair[] = [];
    const sections = new Map<string, Map<string, FileValue>>();
    for (const pair of top.items) {
      const key = this.keyOf(pair);
      if (Object.hasOwn(CONFIG_TABLES, key) && isMap(pair.value)) {
        sections.set(key, this.readOptions(pair.value.items, key as ConfigCommand, `${key}.`));
      } else plain.push(pair);
    }
    return new Map([['', this.readOptions(plain, command, '')], ...sections]);
  }

  /** The options of one mapping, each an option of `command` of the kind its table gives. */
  private readOptions(pairs: Pair[], command: ConfigCommand, prefix: string): Map<string, FileValue> {
    const table: OptionTable = CONFIG_TABLES[command];
    const values = new Map<string, FileValue>();
    for (const pair of pairs) {
      const name = this.keyOf(pair);
      const key = `${prefix}${name}`;
      if (name === CONFIG_OPTION) throw this.error(pair, key, 'a config file cannot name another');
      if (!Object.hasOwn(table, name)) throw this.error(pair, null, describeUnknownKey(key, name, command));
      const spec = table[name]!;
      const value = this.readValue(pair, key);
      if (spec.kind === 'boolean' && typeof value !== 'boolean')
        throw this.error(pair, key, `got ${JSON.stringify(value)}; expected true or false`);
      // A flag takes true or false; any other option takes text, as on the command line.
      values.set(name, {
        value: spec.kind === 'boolean' ? value : String(value),
        where: `${this.lineOf(pair)}, ${key}`,
      });
    }
    return values;
  }

  /** A scalar as the command line would give it (its text as written); a list joined with commas. */
  private readValue(pair: Pair, key: string): string | boolean {
    const node = pair.value as Node | null;
    if (isSeq(node)) {
      const items = node.items.map((item) => (isScalar(item) ? scalarText(item) : null));
      if (items.some((item) => item === null)) throw this.error(pair, key, 'expected a single value or a list of them');
      return items.join(',');
    }
    if (isMap(node)) throw this.error(pair, key, 'expected a single value or a list, not a mapping');
    const text = isScalar(node) ? scalarText(node) : null;
    if (text === null) throw this.error(pair, key, 'got null; expected a value (leave the key out for the default)');
    return text;
  }
}

/** A scalar's value: a boolean, or text; a number keeps the digits it was written with (1e-3 stays 1e-3). */
function scalarText(node: { value: unknown; source?: string }): string | boolean | null {
  const { value } = node;
  if (typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint')
    return typeof node.source === 'string' ? node.source : String(value);
  return null;
}

/** Why `name` is not a key of `command`'s options, with the name it probably meant. */
function describeUnknownKey(key: string, name: string, command: ConfigCommand): string {
  const names = Object.keys(CONFIG_TABLES[command]).filter((option) => option !== CONFIG_OPTION);
  const asFlag = name
    .replace(/^-+/, '')
    .replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
    .replaceAll('_', '-');
  if (asFlag !== name && names.includes(asFlag))
    return `unknown key "${key}": keys are written as the flags, "${asFlag}"`;
  const owners = Object.keys(CONFIG_TABLES).filter(
    (c) => c !== command && Object.hasOwn(CONFIG_TABLES[c as ConfigCommand], name),
  );
  if (owners.length > 0)
    return `unknown key "${key}": not an option of ${command} but of ${owners.join(' and ')}; put it under a "${owners[0]}:" section`;
  return `unknown key "${key}": not an option of ${command}; did you mean "${closestName(name, names)}"?`;
}

/** The name in `names` fewest single-character edits away from `name` (the first of equals). */
function closestName(name: string, names: readonly string[]): string {
  let best = names[0]!;
  let bestDistance = Infinity;
  for (const candidate of names) {
    const distance = editDistance(name, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The configuration a report records: every option of `command` that has a value in `argv` (after
 * command line, environment, file and defaults), keyed as in a config file, except those in
 * NOT_RECORDED. The training options of `local` and `coordinator` are at the top level and the
 * options of the command alone (`workers`, `port`) in its section, so either command runs the
 * other's report. Text that is a number written plainly is recorded as that number
 * (`global-batch: 256`), which reads back as the same text.
 */
export function recordConfig(command: ConfigCommand, argv: RawOptions): RecordedConfig {
  const config: Record<string, RecordedValue | Record<string, RecordedValue>> = {};
  const own: Record<string, RecordedValue> = {};
  const trains = command === 'local' || command === 'coordinator';
  for (const [name, spec] of Object.entries(CONFIG_TABLES[command] as OptionTable)) {
    if (NOT_RECORDED.has(name) || argv[name] === undefined) continue;
    const text = spec.kind === 'boolean' ? null : readText(argv, name)!;
    const value =
      text === null ? argv[name] === true : text !== '' && String(Number(text)) === text ? Number(text) : text;
    if (trains && !(name in TRAINING_TABLE)) own[name] = value;
    else config[name] = value;
  }
  if (Object.keys(own).length > 0) config[command] = own;
  return config;
}
