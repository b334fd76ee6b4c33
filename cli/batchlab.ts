#!/usr/bin/env node
// The `batchlab` command: local | coordinator | worker | sweep | bench. Parsing and the one place where errors
// become messages and exit codes.

// Each command imports what it runs when it runs: a worker process (started for every
// `batchlab local` run and every bench point) then loads no coordinator, sweep or bench code.

import yargs, { type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { describeError, exitCodeFor, OptionError } from '../shared/errors.js';
import { checkOutputPaths, givenOutputs } from '../shared/output-paths.js';
import { recordConfig, withConfigFile, type ConfigCommand } from './config-file.js';
import { interruptOnSignals } from './interrupt.js';
import {
  BENCH_OPTIONS,
  COORDINATOR_OPTIONS,
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

/** A command's declarations with defaults from its --config file, and from BATCHLAB_* variables over those. */
function declare<T extends Record<string, Options>>(command: ConfigCommand, options: T): T {
  return withEnvironmentDefaults(withConfigFile(command, options, hideBin(process.argv), process.env), process.env);
}

/** Runs a command body; prints any failure once and exits with its code. */
async function execute(body: () => Promise<number>, where: string): Promise<never> {
  let code: number;
  try {
    code = await body();
  } catch (error) {
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
      (y) => y.options(declare('local', LOCAL_OPTIONS)),
      (argv) =>
        execute(async () => {
          const settings = parseLocalSettings(argv);
          const { runLocal } = await import('./local.js');
          const progress = new ProgressReporter(process.stderr);
          const origin = { command: commandLine, config: recordConfig('local', argv) };
          const report = await runLocal(settings, origin, progress);
          progress.finish();
          process.stdout.write(`${formatSummary(report)}\n`);
          return 0;
        }, 'local'),
    )
    .command(
      'coordinator',
      'serve workers and run the training loop',
      (y) => y.options(declare('coordinator', COORDINATOR_OPTIONS)),
      (argv) =>
        execute(async () => {
          const settings = parseCoordinatorSettings(argv);
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
        }, 'coordinator'),
    )
    .command(
      'sweep',
      'run a grid of global batch sizes × worker counts (× learning rates) and report scaling and steps to target',
      (y) => y.options(declare('sweep', SWEEP_OPTIONS)),
      (argv) =>
        execute(async () => {
          const settings = parseSweepSettings(argv);
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
        }, 'sweep'),
    )
    .command(
      'worker',
      'connect to a coordinator and compute gradients',
      (y) => y.options(declare('worker', WORKER_OPTIONS)),
      (argv) =>
        execute(async () => {
          const settings = parseWorkerSettings(argv, process.env);
          const { runWorker } = await import('../worker/worker.js');
          return runWorker({ ...settings, log: (line) => process.stderr.write(`${line}\n`) });
        }, 'worker'),
    )
    .command(
      'bench',
      'measure transport, reduce, scaling, load balancing and backends side by side (and PyTorch DDP when installed)',
      (y) => y.options(withEnvironmentDefaults(BENCH_OPTIONS, process.env)),
      (argv) =>
        execute(async () => {
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
        }, 'bench'),
    )
    .demandCommand(1, 'Name a command: local, coordinator, worker, sweep or bench.')
    .strict()
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, error) => {
      if (error instanceof OptionError) {
        process.stderr.write(`batchlab: ${error.message}\n`);
        process.exit(2);
      }
      if (error) throw error;
      process.stderr.write(`batchlab: ${message}\nRun 'batchlab --help' for the commands and options.\n`);
      process.exit(2);
    })
    .parseAsync();
} catch (error) {
  // A bad BATCHLAB_* boolean or --config file is found while yargs builds the command, outside the handlers.
  if (!(error instanceof OptionError)) throw error;
  process.stderr.write(`batchlab: ${error.message}\n`);
  process.exit(2);
}
