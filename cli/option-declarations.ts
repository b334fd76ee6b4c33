// The yargs declarations of a command's options, derived from the option table, and their defaults
// from BATCHLAB_<OPTION> environment variables.

import type { Options } from 'yargs';
import { OptionError } from '../shared/errors.js';
import type { OptionSpec, OptionTable } from './option-table.js';

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

/**
 * The option declarations with defaults taken from BATCHLAB_<OPTION> environment variables
 * (`--global-batch` ← BATCHLAB_GLOBAL_BATCH). Unlike yargs' .env(), other BATCHLAB_* variables
 * (Kubernetes injects BATCHLAB_COORDINATOR_SERVICE_HOST for a Service named batchlab-coordinator)
 * are ignored instead of failing as unknown arguments. Command line > environment > default.
 * A boolean's variable must read true or false (or 1/0, yes/no, empty); anything else is an OptionError.
 */
export function withEnvironmentDefaults<T extends Record<string, Options>>(options: T, env: NodeJS.ProcessEnv): T {
  const out: Record<string, Options> = {};
  for (const [name, option] of Object.entries(options)) {
    const variable = nameEnvironmentVariable(name);
    const value = env[variable];
    if (value === undefined) {
      out[name] = option;
      continue;
    }
    // The variable's value is the default now, so --help shows it rather than the table's description.
    const { defaultDescription: _described, ...declared } = option;
    if (option.type === 'boolean') {
      const lowered = value.trim().toLowerCase();
      if (!['true', 'false', '1', '0', 'yes', 'no', ''].includes(lowered)) {
        throw new OptionError(name, value, `true or false (from ${variable})`);
      }
      out[name] = { ...declared, default: ['true', '1', 'yes'].includes(lowered) };
    } else {
      out[name] = { ...declared, default: value };
    }
  }
  return out as T;
}
