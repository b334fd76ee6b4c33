// `batchlab local`: the launcher (coordinator/launch-local.ts) with progress on the terminal,
// Ctrl-C and SIGTERM stopping the run and its workers in order, and a summary at the end.

import { launchLocal, type LaunchOptions, type LocalRunConfig } from '../coordinator/launch-local.js';
import type { RunReport } from '../coordinator/report.js';
import { interruptOnSignals } from './interrupt.js';
import type { ProgressReporter } from './progress.js';

/** Lines worth showing even in quiet mode: failures and refusals. */
const NOTEWORTHY = /error|exited|lost|refused|failed|diverged|interrupted|\[[A-Z_]{4,}\]/i;

/** What a report says about how its run was started: the command line and the options. */
export type RunOrigin = Pick<LaunchOptions, 'command' | 'config'>;

/**
 * Runs the whole local job. Resolves with the report; rejects if the run fails or is interrupted.
 * `quiet` keeps only noteworthy log lines (sweeps run many jobs in a row).
 */
export async function runLocal(
  settings: LocalRunConfig,
  origin: RunOrigin,
  progress: ProgressReporter,
  quiet = false,
): Promise<RunReport> {
  const log = (line: string): void => {
    if (!quiet || NOTEWORTHY.test(line)) progress.log(line);
  };
  const interrupt = interruptOnSignals((signal) => log(`${signal} received: stopping the run and its workers`));
  try {
    return await launchLocal(settings, { ...origin, observer: progress, log, signal: interrupt.signal });
  } finally {
    interrupt.dispose();
  }
}
