// The yargs declarations come from the option table, and BATCHLAB_<OPTION> variables become their
// defaults: command line > environment > table default, in process through real yargs parsing.

import yargs, { type Options } from 'yargs';
import { describe, expect, it } from 'vitest';
import { declareOptions, nameEnvironmentVariable } from '../../cli/option-declarations.js';
import { LOCAL_TABLE, SWEEP_TABLE, TRAINING_TABLE } from '../../cli/option-table.js';
import {
  COORDINATOR_OPTIONS,
  LOCAL_OPTIONS,
  parseCoordinatorSettings,
  parseLocalSettings,
  parseSweepSettings,
  parseWorkerSettings,
  SWEEP_OPTIONS,
  WORKER_OPTIONS,
  withEnvironmentDefaults,
} from '../../cli/options.js';

type Raw = Record<string, unknown>;

/** argv as `batchlab <command>` would see it: strict yargs over the declarations with `env`'s defaults. */
function parseArgv(options: Record<string, Options>, args: string[], env: NodeJS.ProcessEnv): Record<string, unknown> {
  const declared = withEnvironmentDefaults(options, env);
  return yargs(args).options(declared).strict().help(false).version(false).parseSync();
}

/** A command's declarations and settings, and the least it must be given. */
interface Command {
  options: Record<string, Options>;
  parse: (raw: Raw) => unknown;
  raw: Raw;
  args: string[];
}

const COMMANDS: Record<string, Command> = {
  coordinator: {
    options: COORDINATOR_OPTIONS,
    parse: parseCoordinatorSettings,
    raw: { insecure: true },
    args: ['--insecure'],
  },
  local: { options: LOCAL_OPTIONS, parse: parseLocalSettings, raw: {}, args: [] },
  sweep: { options: SWEEP_OPTIONS, parse: parseSweepSettings, raw: {}, args: [] },
  worker: {
    options: WORKER_OPTIONS,
    parse: (raw) => parseWorkerSettings(raw, {}),
    raw: { connect: 'ws://h:1' },
    args: ['--connect', 'ws://h:1'],
  },
};

describe('yargs declarations from the option table', () => {
  it('declare each option with its kind, help and default, literal or described', () => {
    const declared = declareOptions(TRAINING_TABLE);
    expect(Object.keys(declared)).toEqual(Object.keys(TRAINING_TABLE));
    const globalBatch = { type: 'string', describe: TRAINING_TABLE['global-batch'].help, default: '128' };
    expect(declared['global-batch']).toEqual(globalBatch);
    expect(declared.nesterov).toMatchObject({ type: 'boolean', default: false });
    expect(declared['micro-batch']).toEqual({
      type: 'string',
      describe: TRAINING_TABLE['micro-batch'].help,
      defaultDescription: 'min(32, B)',
    });
    expect(declared.report).not.toHaveProperty('default');
    expect(declared.report).not.toHaveProperty('defaultDescription');
  });

  it('name the variable of an option BATCHLAB_<OPTION>', () => {
    expect(nameEnvironmentVariable('global-batch')).toBe('BATCHLAB_GLOBAL_BATCH');
    expect(nameEnvironmentVariable('token')).toBe('BATCHLAB_TOKEN');
  });

  it('take the command line over the environment, and the environment over the table', () => {
    const env = { BATCHLAB_GLOBAL_BATCH: '256', BATCHLAB_NESTEROV: 'yes' };
    expect(parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--global-batch', '64'], env)).globalBatchSize).toBe(64);
    const fromEnvironment = parseLocalSettings(parseArgv(LOCAL_OPTIONS, [], env));
    expect(fromEnvironment).toMatchObject({ globalBatchSize: 256, nesterov: true });
    expect(parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--no-nesterov'], env)).nesterov).toBe(false);
    const fromTable = parseLocalSettings(parseArgv(LOCAL_OPTIONS, [], {}));
    expect(fromTable).toMatchObject({ globalBatchSize: 128, nesterov: false });
  });

  it("give a command its own defaults: sweep's --eval-every and --metrics-port, local's --min-workers", () => {
    expect(parseSweepSettings(parseArgv(SWEEP_OPTIONS, [], {}))).toMatchObject({
      globalBatches: [32, 512],
      workerCounts: [1, 2],
      evalEvery: Number(SWEEP_TABLE['eval-every'].default),
      metricsPort: null,
    });
    expect(parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--workers', '3'], {})).minWorkers).toBe(3);
    const raised = parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--workers', '3', '--min-workers', '1'], {}));
    expect(raised.minWorkers).toBe(3);
    expect(LOCAL_OPTIONS['min-workers']).not.toHaveProperty('default');
    expect(LOCAL_TABLE.workers.default).toBe('2');
  });

  it.each(Object.keys(COMMANDS))('give %s the same settings in process as through yargs and its defaults', (name) => {
    const { options, parse, raw, args } = COMMANDS[name]!;
    expect(parse(raw)).toEqual(parse(parseArgv(options, args, {})));
  });

  it('read --resume alone as before, --resume auto, and BATCHLAB_RESUME=true|auto; refuse anything else', () => {
    const resume = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--checkpoint-dir', 'd', ...args], env)).resume;
    expect(resume([])).toBe(false);
    expect(resume(['--resume'])).toBe(true);
    expect(resume(['--resume', '--steps', '3'])).toBe(true);
    expect(resume(['--resume', 'auto'])).toBe('auto');
    expect(resume(['--resume=auto', '--steps', '3'])).toBe('auto');
    expect(resume([], { BATCHLAB_RESUME: 'true' })).toBe(true);
    expect(resume([], { BATCHLAB_RESUME: 'false' })).toBe(false);
    expect(resume([], { BATCHLAB_RESUME: 'auto' })).toBe('auto');
    expect(resume(['--resume', 'auto'], { BATCHLAB_RESUME: 'false' })).toBe('auto');
    expect(() => resume(['--resume', 'maybe'])).toThrow(
      /--resume: got "maybe"; expected nothing \(continue from a checkpoint that must exist\), auto \(continue when there is one, else start fresh\)/,
    );
    expect(() => parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--resume', 'auto'], {}))).toThrow(
      /--resume: got "auto"; expected --checkpoint-dir DIR/,
    );
  });

  it("ignore Service links and other commands' option variables, and refuse a boolean that is not one", () => {
    const env = { BATCHLAB_COORDINATOR_SERVICE_HOST: '10.0.0.1', BATCHLAB_WORKERS: '3', BATCHLAB_CONNECT: 'ws://h:1' };
    expect(parseLocalSettings(parseArgv(LOCAL_OPTIONS, [], env)).workers).toBe(3);
    expect(() => parseArgv(LOCAL_OPTIONS, [], { BATCHLAB_FRESH: 'maybe' })).toThrow(
      /BATCHLAB_FRESH \(--fresh\): got "maybe"; expected true or false/,
    );
  });
});
