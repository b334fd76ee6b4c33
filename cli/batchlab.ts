#!/usr/bin/env node
// The `batchlab` command: local | coordinator | worker | sweep | bench | data fetch. Parsing and the one place where errors
// become messages and exit codes.

// Each command imports what it runs when it runs: a worker process (started for every
// `batchlab local` run and every bench point) then loads no coordinator, sweep or bench code.

import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { Argv, Options } from 'yargs';
import { BatchlabError, describeError, exitCodeFor, OptionError } from '../shared/errors.js';
import { CIFAR_NAMES, type CifarName } from '../shared/data/cifar.js';
import { checkInputPaths, type InputKind } from '../shared/input-paths.js';
import { isModelName } from '../shared/models/index.js';
import { checkOutputPaths, givenOutputs } from '../shared/output-paths.js';
import { recordConfig, withConfigFile, type ConfigCommand } from './config-file.js';
import { interruptOnSignals } from './interrupt.js';
import { COORDINATOR_LAUNCHER, selectLocalDevice, WORKER_LAUNCHER, type LauncherDefault } from './launcher.js';
import { nameVariableOf } from './option-declarations.js';
import {
  BENCH_OPTIONS,
  COORDINATOR_OPTIONS,
  DATA_FETCH_OPTIONS,
  parseDataFetchSettings,
  LOCAL_OPTIONS,
  withEnvironmentDefaults,
  parseCoordinatorSettings,
  parseLocalSettings,
  parseSweepSettings,
  parseWorkerSettings,
  SWEEP_OPTIONS,
  WORKER_OPTIONS,
} from './options.js';
import { ProgressReporter } from './progress.js';
import { formatSummary, formatSweepSummary } from './summary.js';

const commandLine = ['batchlab', ...hideBin(process.argv)].join(' ');

/**
 * A command's options with their defaults, lowest first: the table's, the launcher variables
 * `launcher` reads (WORLD_SIZE, MASTER_PORT, RANK), the --config file (`command` null: it takes
 * none), BATCHLAB_<OPTION>; and how a refusal names the variable that set a value. A launcher
 * variable sets only what the file leaves unset: a file's `port` or `min-workers` is meant.
 */
function fromEnvironment(
  command: ConfigCommand | null,
  options: Record<string, Options>,
  launcher: readonly LauncherDefault[] = [],
) {
  let unsetByFile = launcher;
  return {
    declare: (y: Argv) => {
      const fromFile =
        command === null ? options : withConfigFile(command, options, hideBin(process.argv), process.env);
      unsetByFile = launcher.filter((l) => fromFile[l.option] === options[l.option]);
      return y.options(withEnvironmentDefaults(fromFile, process.env, unsetByFile));
    },
    blame: (error: unknown, argv: Record<string, unknown>) =>
      nameVariableOf(error, argv, options, process.env, unsetByFile),
  };
}

/** What a training run reads for its model: --model's model.json (unless a built-in name) and --init-from's directory. */
function modelInputs(settings: { model: string; initFrom?: string }): [string, string | undefined, InputKind][] {
  return [
    ['model', isModelName(settings.model) ? undefined : settings.model, 'file'],
    ['init-from', settings.initFrom, 'directory'],
  ];
}

/** Each command's options and environment. */
const COMMANDS = {
  local: fromEnvironment('local', LOCAL_OPTIONS),
  coordinator: fromEnvironment('coordinator', COORDINATOR_OPTIONS, COORDINATOR_LAUNCHER),
  sweep: fromEnvironment('sweep', SWEEP_OPTIONS),
  worker: fromEnvironment('worker', WORKER_OPTIONS, WORKER_LAUNCHER),
  bench: fromEnvironment(null, BENCH_OPTIONS),
  data: fromEnvironment(null, DATA_FETCH_OPTIONS),
};

/** Runs a command body; prints any failure once (naming the variable that set a bad value) and exits with its code. */
async function execute(
  where: keyof typeof COMMANDS,
  argv: Record<string, unknown>,
  body: () => Promise<number>,
): Promise<never> {
  let code: number;
  try {
    code = await body();
  } catch (caught) {
    const error = COMMANDS[where].blame(caught, argv);
    if (error instanceof OptionError) {
      process.stderr.write(`batchlab ${where}: ${error.message}\nRun 'batchlab ${where} --help' for the options.\n`);
    } else {
      process.stderr.write(`batchlab ${where}: ${describeError(error)}\n`);
    }
    code = exitCodeFor(error);
  }
  process.exit(code);
}

try {
  await yargs(hideBin(process.argv))
    .scriptName('batchlab')
    .usage('$0 <command> [options]\n\nData-parallel training with exact gradient averaging over WebSocket workers.')
    .command(
      'local',
      'run a coordinator and N worker processes on this machine',
      (y) => COMMANDS.local.declare(y),
      (argv) =>
        execute('local', argv, async () => {
          const settings = parseLocalSettings(argv);
          await checkInputPaths([['data-dir', settings.dataDir, 'directory'], ...modelInputs(settings)]);
          const { runLocal } = await import('./local.js');
          const progress = new ProgressReporter(process.stderr);
          const origin = { command: commandLine, config: recordConfig('local', argv) };
          const report = await runLocal(settings, origin, progress);
          progress.finish();
          process.stdout.write(`${formatSummary(report)}\n`);
          return 0;
        }),
    )
    .command(
      'coordinator',
      'serve workers and run the training loop',
      (y) => COMMANDS.coordinator.declare(y),
      (argv) =>
        execute('coordinator', argv, async () => {
          const settings = parseCoordinatorSettings(argv);
          await checkInputPaths([
            ['data-dir', settings.dataDir, 'directory'],
            ...modelInputs(settings),
            ['tls-cert', settings.tlsCert, 'file'],
            ['tls-key', settings.tlsKey, 'file'],
          ]);
          const { runCoordinator } = await import('../coordinator/coordinator.js');
          const progress = new ProgressReporter(process.stderr);
          const { signal } = interruptOnSignals();
          const report = await runCoordinator(
            { ...settings, command: commandLine, config: recordConfig('coordinator', argv) },
            {
              log: (line) => progress.log(line),
              observer: progress,
              signal,
              onListening: ({ steps }) => progress.start(steps),
            },
          );
          progress.finish();
          process.stdout.write(`${formatSummary(report)}\n`);
          return 0;
        }),
    )
    .command(
      'sweep',
      'run a grid of global batch sizes × worker counts (× learning rates) and report scaling and steps to target',
      (y) => COMMANDS.sweep.declare(y),
      (argv) =>
        execute('sweep', argv, async () => {
          const settings = parseSweepSettings(argv);
          await checkInputPaths([['data-dir', settings.dataDir, 'directory'], ...modelInputs(settings)]);
          const { runSweep } = await import('./sweep.js');
          const { sweepCsvPath, writeSweepHtml, writeSweepReport } = await import('./sweep-report.js');
          await checkOutputPaths(
            givenOutputs([
              ['report', settings.report, 'file'],
              ['report', settings.report && sweepCsvPath(settings.report), 'file'],
              ['html', settings.html, 'file'],
              ['targets-file', settings.targetsFile, 'file'],
            ]),
          );
          const origin = { command: commandLine, config: recordConfig('sweep', argv) };
          const report = await runSweep(settings, origin, process.stderr);
          if (settings.report)
            process.stderr.write(
              `sweep report written to ${settings.report} and ${await writeSweepReport(settings.report, report)}\n`,
            );
          if (settings.html) {
            await writeSweepHtml(settings.html, report);
            process.stderr.write(`HTML report written to ${settings.html}\n`);
          }
          process.stdout.write(`${formatSweepSummary(report)}\n`);
          return 0;
        }),
    )
    .command(
      'worker',
      'connect to a coordinator and compute gradients',
      (y) => COMMANDS.worker.declare(y),
      (argv) =>
        execute('worker', argv, async () => {
          const settings = parseWorkerSettings(argv, process.env);
          await checkInputPaths([
            ['data-dir', settings.dataDir, 'directory'],
            ['ca', settings.ca, 'file'],
            ['peer-tls-cert', settings.peerTlsCert, 'file'],
            ['peer-tls-key', settings.peerTlsKey, 'file'],
          ]);
          const log = (line: string): void => void process.stderr.write(`${line}\n`);
          // Before the backend loads: TensorFlow reads CUDA_VISIBLE_DEVICES when it starts.
          selectLocalDevice(process.env, settings.backend, log);
          const { runWorker } = await import('../worker/worker.js');
          return runWorker({ ...settings, log });
        }),
    )
    .command(
      'bench',
      'measure transport, reduce, scaling, load balancing and backends side by side (and PyTorch DDP when installed)',
      (y) => COMMANDS.bench.declare(y),
      (argv) =>
        execute('bench', argv, async () => {
          const { formatBench, parseBenchSettings, runBench } = await import('./bench.js');
          const settings = parseBenchSettings(argv);
          await checkOutputPaths(givenOutputs([['json', settings.json, 'file']]));
          const report = await runBench(
            settings,
            (line) => process.stderr.write(`${line}\n`),
            interruptOnSignals().signal,
          );
          process.stdout.write(`${formatBench(report)}\n`);
          if (settings.json) process.stderr.write(`JSON written to ${settings.json}\n`);
          return 0;
        }),
    )
    .command('data', 'get datasets: data fetch cifar10|cifar100 [--dir D]', (y) =>
      y
        .command(
          'fetch <name>',
          'download the official archive of a dataset, check its MD5 and unpack it into --dir',
          (f) => COMMANDS.data.declare(f).positional('name', { choices: CIFAR_NAMES, describe: 'the dataset' }),
          (argv) =>
            execute('data', argv, async () => {
              const settings = { name: argv.name as CifarName, ...parseDataFetchSettings(argv) };
              const { describeFetch, fetchDataset } = await import('./data-fetch.js');
              const interrupt = interruptOnSignals();
              const log = (line: string): void => void process.stderr.write(`${line}\n`);
              const result = await fetchDataset(settings, { log, progress: process.stderr, signal: interrupt.signal });
              interrupt.dispose();
              process.stdout.write(`${describeFetch(settings.name, result)}\n`);
              return 0;
            }),
        )
        .demandCommand(1, 'Name a data command: fetch.'),
    )
    .demandCommand(1, 'Name a command: local, coordinator, worker, sweep, bench or data.')
    .strict()
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, error) => {
      if (error instanceof BatchlabError && error.code === 'BAD_OPTION') {
        process.stderr.write(`batchlab: ${error.message}\n`);
        process.exit(2);
      }
      if (error) throw error;
      process.stderr.write(`batchlab: ${message}\nRun 'batchlab --help' for the commands and options.\n`);
      process.exit(2);
    })
    .parseAsync();
} catch (error) {
  // A misspelt BATCHLAB_* variable, a bad BATCHLAB_* boolean or RANK, or a bad --config file is
  // found while yargs builds the command, outside the handlers.
  if (!(error instanceof BatchlabError) || error.code !== 'BAD_OPTION') throw error;
  process.stderr.write(`batchlab: ${error.message}\n`);
  process.exit(2);
}
