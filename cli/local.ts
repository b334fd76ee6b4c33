// `batchlab local`: a coordinator in this process and N worker processes on loopback, with a
// random token, progress on the terminal, a summary at the end, and no child left behind.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runCoordinator } from '../coordinator/coordinator.js';
import type { RunReport } from '../coordinator/report.js';
import { generateToken } from '../shared/auth.js';
import { BatchlabError, interruptedBy } from '../shared/errors.js';
import type { LocalSettings } from './options.js';
import { ProgressReporter } from './progress.js';

const CLI_PATH = fileURLToPath(new URL('./batchlab.js', import.meta.url));

/** Starts one worker process connected to `port`; its output lines go to `log`. */
function spawnWorker(index: number, port: number, token: string, settings: LocalSettings, log: (line: string) => void): ChildProcess {
  const args = [CLI_PATH, 'worker', '--connect', `ws://127.0.0.1:${port}`, '--backend', settings.backend, '--name', `local-${index}`, '--metrics-host', '127.0.0.1'];
  // Workers serve metrics when the coordinator does (each on a free port, found through --targets-file).
  args.push('--metrics-port', settings.metricsPort === null ? 'off' : '0');
  if (settings.dataDir) args.push('--data-dir', settings.dataDir);
  const slowdown = settings.debugSlowdown[index - 1] ?? 1;
  if (slowdown !== 1) args.push('--debug-slowdown', String(slowdown));
  // The token travels in the environment, not argv, so `ps` does not show it.
  // Own process group: a terminal's Ctrl-C reaches only this process, which then stops the
  // workers in order (shutdown frame) instead of them dying mid-step.
  const child = spawn(process.execPath, args, { env: { ...process.env, BATCHLAB_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => log(`[worker ${index}] ${line}`));
  }
  return child;
}

/** Lines worth showing even in quiet mode: failures and refusals. */
const NOTEWORTHY = /error|exited|lost|refused|failed|diverged|interrupted|\[[A-Z_]{4,}\]/i;

/**
 * Runs the whole local job. Resolves with the report; rejects if the run fails or is interrupted.
 * `quiet` keeps only noteworthy log lines (sweeps run many jobs in a row).
 */
export async function runLocal(settings: LocalSettings, command: string, progress: ProgressReporter, quiet = false): Promise<RunReport> {
  const token = generateToken();
  const children: ChildProcess[] = [];
  const controller = new AbortController();
  const log = (line: string): void => {
    if (!quiet || NOTEWORTHY.test(line)) progress.log(line);
  };
  let finished = false;

  const killAll = (): void => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal} received: stopping the run and its workers`);
    controller.abort(interruptedBy(signal));
  };
  process.on('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await runCoordinator(
      { ...settings, host: '127.0.0.1', port: 0, token, syntheticTrain: undefined, syntheticTest: undefined, command },
      {
        log,
        observer: progress,
        signal: controller.signal,
        onListening: ({ port, steps }) => {
          progress.start(steps);
          for (let i = 1; i <= settings.workers; i++) {
            const child = spawnWorker(i, port, token, settings, log);
            children.push(child);
            child.on('exit', (code, signal) => {
              if (finished) return;
              if (code !== 0) log(`worker ${i} exited (${signal ?? `code ${code}`}) before the run ended`);
              if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) {
                controller.abort(new BatchlabError('NO_WORKERS', 'every worker process exited before the run ended; see their output above'));
              }
            });
          }
        },
      },
    );
  } finally {
    finished = true;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // Workers were told to shut down; give them a moment to exit by themselves.
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const timer = setTimeout(() => {
              child.kill('SIGKILL');
              resolve();
            }, 3000);
            child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
    process.off('exit', killAll);
  }
}
