#!/usr/bin/env node
// The `batchlab` command: local | coordinator | worker. Parsing and the one place where errors
// become messages and exit codes.

import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runCoordinator } from '../coordinator/coordinator.js';
import { describeError, exitCodeFor, OptionError } from '../shared/errors.js';
import { runWorker } from '../worker/worker.js';
import { runLocal } from './local.js';
import { COORDINATOR_OPTIONS, LOCAL_OPTIONS, parseCoordinatorSettings, parseLocalSettings, parseWorkerSettings, WORKER_OPTIONS } from './options.js';
import { ProgressReporter } from './progress.js';
import { formatSummary } from './summary.js';

const commandLine = ['batchlab', ...hideBin(process.argv)].join(' ');

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
    code = /interrupted by SIG/.test(String((error as Error)?.message)) ? 130 : exitCodeFor(error);
  }
  process.exit(code);
}

await yargs(hideBin(process.argv))
  .scriptName('batchlab')
  .usage('$0 <command> [options]\n\nData-parallel training with exact gradient averaging over WebSocket workers.')
  .env('BATCHLAB')
  .command(
    'local',
    'run a coordinator and N worker processes on this machine',
    (y) => y.options(LOCAL_OPTIONS),
    (argv) =>
      execute(async () => {
        const settings = parseLocalSettings(argv);
        const progress = new ProgressReporter(process.stderr);
        const report = await runLocal(settings, commandLine, progress);
        progress.finish();
        process.stdout.write(`${formatSummary(report)}\n`);
        return 0;
      }, 'local'),
  )
  .command(
    'coordinator',
    'serve workers and run the training loop',
    (y) => y.options(COORDINATOR_OPTIONS),
    (argv) =>
      execute(async () => {
        const settings = parseCoordinatorSettings(argv);
        const progress = new ProgressReporter(process.stderr);
        const controller = new AbortController();
        const stop = (signal: NodeJS.Signals): void => controller.abort(new Error(`interrupted by ${signal}`));
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        const report = await runCoordinator(
          { ...settings, command: commandLine },
          { log: (line) => progress.log(line), observer: progress, signal: controller.signal, onListening: ({ steps }) => progress.start(steps) },
        );
        progress.finish();
        process.stdout.write(`${formatSummary(report)}\n`);
        return 0;
      }, 'coordinator'),
  )
  .command(
    'worker',
    'connect to a coordinator and compute gradients',
    (y) => y.options(WORKER_OPTIONS),
    (argv) =>
      execute(async () => {
        const settings = parseWorkerSettings(argv, process.env);
        return runWorker({ ...settings, log: (line) => process.stderr.write(`${line}\n`) });
      }, 'worker'),
  )
  .demandCommand(1, 'Name a command: local, coordinator or worker.')
  .strict()
  .help()
  .wrap(Math.min(110, process.stdout.columns ?? 110))
  .fail((message, error) => {
    if (error) throw error;
    process.stderr.write(`batchlab: ${message}\nRun 'batchlab --help' for the commands and options.\n`);
    process.exit(2);
  })
  .parseAsync();
