// Ctrl-C and SIGTERM for the commands that run training: the first one aborts the run with
// INTERRUPTED (exit code 130), so it stops in order, saves what it can and stops its workers.

import { interruptedBy } from '../shared/errors.js';

export interface Interrupt {
  /** Aborted, with an INTERRUPTED error as its reason, by the first SIGINT or SIGTERM. */
  signal: AbortSignal;
  /** Removes the handlers (a sweep runs many jobs; each installs its own). */
  dispose(): void;
}

/** Installs one-shot SIGINT and SIGTERM handlers; `onSignal` hears which one came. */
export function interruptOnSignals(onSignal?: (signal: NodeJS.Signals) => void): Interrupt {
  const controller = new AbortController();
  const stop = (signal: NodeJS.Signals): void => {
    onSignal?.(signal);
    controller.abort(interruptedBy(signal));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    },
  };
}
