// Launching a whole run on this machine: the coordinator in this process and N worker
// processes of the batchlab CLI on loopback, with a fresh token and no child left behind. Used
// by `batchlab local`, `batchlab sweep`, the benchmarks and the tests; each brings its own
// observer and log, and none of them spawns workers itself.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { generateToken } from '../shared/auth.js';
import { BatchlabError } from '../shared/errors.js';
import { DEFAULT_MAX_CHUNK } from '../shared/micro-batches.js';
import { runCoordinator } from './coordinator.js';
import type { RecordedConfig, RunReport } from './report.js';
import type { RunConfig, RunStart } from './run-config.js';
import type { TrainerObserver } from './trainer-observer.js';

/** A run with its own local workers. */
export interface LocalRunConfig extends RunConfig {
  workers: number;
  /** Slowdown factor per worker (index 0 = worker 1); missing entries are 1. */
  debugSlowdown: number[];
  /** Benchmarks only: skip every evaluation (see CoordinatorOptions.timingOnly). */
  timingOnly?: boolean;
}

/** Steps and evaluations as they happen, and the run's start. */
export interface RunObserver extends TrainerObserver {
  onRunStart?(start: RunStart): void;
}

export interface LaunchOptions {
  /** Written into the report's `command` field. */
  command: string;
  /** Written into the report's `config` field. */
  config?: RecordedConfig;
  observer?: RunObserver;
  /** Coordinator lines, and each worker's lines prefixed "[worker i]". */
  log: (line: string) => void;
  /** Aborting stops the run and its workers; the run rejects with the signal's reason. */
  signal?: AbortSignal;
  /** The batchlab CLI the workers run (default: the one built beside this file). */
  cliPath?: string;
}

const DEFAULT_CLI = fileURLToPath(new URL('../cli/batchlab.js', import.meta.url));
/** How long workers get to exit by themselves after the shutdown frame. */
const WORKER_EXIT_GRACE_MS = 3000;

/** Runs `config` with `config.workers` local worker processes; resolves with the report. */
export async function launchLocal(config: LocalRunConfig, options: LaunchOptions): Promise<RunReport> {
  const token = generateToken();
  const children: ChildProcess[] = [];
  const controller = new AbortController();
  const forwardAbort = (): void => controller.abort(options.signal!.reason);
  options.signal?.addEventListener('abort', forwardAbort);
  if (options.signal?.aborted) forwardAbort();
  let finished = false;
  const killAll = (): void => children.forEach(killIfRunning);
  process.on('exit', killAll);
  const onRunStart = (start: RunStart): void => {
    options.observer?.onRunStart?.(start);
    for (let i = 1; i <= config.workers; i++) {
      const child = spawnWorker(i, start.port, token, config, options, start.onePass);
      children.push(child);
      child.on('exit', (code, signal) => {
        if (finished) return;
        if (code !== 0) options.log(`worker ${i} exited (${signal ?? `code ${code}`}) before the run ended`);
        if (children.every(hasExited))
          controller.abort(
            new BatchlabError('NO_WORKERS', 'every worker process exited before the run ended; see their output above'),
          );
      });
    }
  };
  try {
    const coordinatorOptions = {
      ...config,
      host: '127.0.0.1',
      port: 0,
      token,
      syntheticTrain: undefined,
      syntheticTest: undefined,
      command: options.command,
      config: options.config,
    };
    return await runCoordinator(coordinatorOptions, {
      log: options.log,
      observer: options.observer,
      signal: controller.signal,
      onListening: onRunStart,
    });
  } finally {
    finished = true;
    options.signal?.removeEventListener('abort', forwardAbort);
    // Workers were told to shut down; give them a moment to exit by themselves.
    await Promise.all(children.map((child) => waitForExit(child, WORKER_EXIT_GRACE_MS)));
    process.off('exit', killAll);
  }
}

/** Starts worker `index` connected to `port`; its output lines go to the log. */
function spawnWorker(
  index: number,
  port: number,
  token: string,
  config: LocalRunConfig,
  options: LaunchOptions,
  onePass: number | null,
): ChildProcess {
  const args = [
    options.cliPath ?? DEFAULT_CLI,
    'worker',
    '--connect',
    `ws://127.0.0.1:${port}`,
    '--backend',
    config.backend,
    '--name',
    `local-${index}`,
    '--metrics-host',
    '127.0.0.1',
  ];
  // Workers serve metrics when the coordinator does (each on a free port, found through --targets-file).
  args.push('--metrics-port', config.metricsPort === null ? 'off' : '0');
  if (config.dataDir) args.push('--data-dir', config.dataDir);
  // A batch-norm model's micro-batch is computed in one pass: the worker's chunk must hold it
  // (the coordinator refuses a worker whose --max-chunk is smaller).
  if (onePass !== null && onePass > DEFAULT_MAX_CHUNK) args.push('--max-chunk', String(onePass));
  const slowdown = config.debugSlowdown[index - 1] ?? 1;
  if (slowdown !== 1) args.push('--debug-slowdown', String(slowdown));
  // The token travels in the environment, not argv, so `ps` does not show it. A BATCHLAB_CONFIG
  // file is this run's, not its workers': their options are all here. So are a launcher's RANK and
  // LOCAL_RANK, which name and place this process, not the workers it starts.
  // Own process group: a terminal's Ctrl-C reaches only this process, which then stops the
  // workers in order (shutdown frame) instead of them dying mid-step.
  const child = spawn(process.execPath, args, {
    env: { ...process.env, BATCHLAB_CONFIG: undefined, RANK: undefined, LOCAL_RANK: undefined, BATCHLAB_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => options.log(`[worker ${index}] ${line}`));
  }
  return child;
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function killIfRunning(child: ChildProcess): void {
  if (!hasExited(child)) child.kill('SIGKILL');
}

/** Resolves when `child` has exited, killing it after `graceMs`. */
function waitForExit(child: ChildProcess, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    if (hasExited(child)) return resolve();
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
