// The yargs declarations of a command's options, derived from the option table, and their defaults
// from BATCHLAB_<OPTION> environment variables (and launcher variables such as WORLD_SIZE).

import type { Options } from 'yargs';
import { OptionError } from '../shared/errors.js';
import { checkVariableNames } from './environment-names.js';
import type { LauncherDefault } from './launcher.js';
import {
  BENCH_TABLE,
  COORDINATOR_TABLE,
  DATA_FETCH_TABLE,
  LOCAL_TABLE,
  SWEEP_TABLE,
  WORKER_TABLE,
  type OptionSpec,
  type OptionTable,
} from './option-table.js';

/** The environment variable that sets an option: `global-batch` ← BATCHLAB_GLOBAL_BATCH. */
export function nameEnvironmentVariable(option: string): string {
  return `BATCHLAB_${option.toUpperCase().replaceAll('-', '_')}`;
}

/** The yargs declaration of one option: its kind, help, and default (literal, or described). */
function declareOption(spec: OptionSpec): Options {
  return {
    type: spec.kind,
    describe: spec.help,
    ...(spec.default === undefined ? {} : { default: spec.default }),
    ...(spec.defaultText === undefined ? {} : { defaultDescription: spec.defaultText }),
  };
}

/** The yargs declarations of every option of `table`, in its order; defaults as in the table. */
export function declareOptions<G extends OptionTable>(table: G): { [K in keyof G]: Options } {
  const out: Record<string, Options> = {};
  for (const [name, spec] of Object.entries(table)) out[name] = declareOption(spec);
  return out as { [K in keyof G]: Options };
}

/** Every command's option variables. A process accepts them all: a pod may carry another command's (ignored there). */
export const OPTION_VARIABLES: readonly string[] = [
  ...new Set(
    [COORDINATOR_TABLE, LOCAL_TABLE, SWEEP_TABLE, WORKER_TABLE, BENCH_TABLE, DATA_FETCH_TABLE].flatMap((table) =>
      Object.keys(table).map(nameEnvironmentVariable),
    ),
  ),
];

/** An option's default taken from the environment: the variable that set it and the value yargs gets. */
interface EnvironmentDefault {
  variable: string;
  value: string | boolean;
}

/**
 * The defaults `env` gives the options: BATCHLAB_<OPTION>, else a launcher variable of
 * `launcher` (WORLD_SIZE for the coordinator's --min-workers). A boolean's variable must read
 * true or false (or 1/0, yes/no, empty); anything else is an OptionError naming the variable.
 */
function environmentDefaults(
  options: Record<string, Options>,
  env: NodeJS.ProcessEnv,
  launcher: readonly LauncherDefault[],
): Map<string, EnvironmentDefault> {
  const out = new Map<string, EnvironmentDefault>();
  for (const [name, option] of Object.entries(options)) {
    const variable = nameEnvironmentVariable(name);
    const value = env[variable];
    if (value === undefined) {
      const given = launcher.find((l) => l.option === name && env[l.variable] !== undefined);
      if (given) out.set(name, { variable: given.variable, value: given.read(env[given.variable]!) });
    } else if (option.type === 'boolean') {
      const lowered = value.trim().toLowerCase();
      if (!['true', 'false', '1', '0', 'yes', 'no', ''].includes(lowered))
        throw new OptionError(name, value, 'true or false', variable);
      out.set(name, { variable, value: ['true', '1', 'yes'].includes(lowered) });
    } else {
      out.set(name, { variable, value });
    }
  }
  return out;
}

/**
 * The option declarations with defaults taken from the environment: BATCHLAB_<OPTION>
 * (`--global-batch` ← BATCHLAB_GLOBAL_BATCH), else the launcher variables of `launcher`.
 * Command line > BATCHLAB_<OPTION> > launcher variable > default. Every BATCHLAB_* variable must
 * be known (cli/environment-names.ts): a misspelt one is refused, not silently ignored.
 */
export function withEnvironmentDefaults<T extends Record<string, Options>>(
  options: T,
  env: NodeJS.ProcessEnv,
  launcher: readonly LauncherDefault[] = [],
): T {
  checkVariableNames(env, OPTION_VARIABLES);
  const defaults = environmentDefaults(options, env, launcher);
  const out: Record<string, Options> = {};
  for (const [name, option] of Object.entries(options)) {
    const given = defaults.get(name);
    // The variable's value is the default now, so --help shows it rather than the table's description.
    const { defaultDescription: _described, ...declared } = option;
    out[name] = given === undefined ? option : { ...declared, default: given.value };
  }
  return out as T;
}

/**
 * `error` naming the variable its value came from, when it is an OptionError about an option
 * that the environment set (the value in `raw` is the variable's): "BATCHLAB_GLOBAL_BATCH
 * (--global-batch): got …". Anything else is returned as it is.
 */
export function nameVariableOf(
  error: unknown,
  raw: Record<string, unknown>,
  options: Record<string, Options>,
  env: NodeJS.ProcessEnv,
  launcher: readonly LauncherDefault[] = [],
): unknown {
  if (!(error instanceof OptionError) || error.source !== undefined) return error;
  const given = environmentDefaults(options, env, launcher).get(error.option);
  return given !== undefined && raw[error.option] === given.value ? error.from(given.variable) : error;
}
