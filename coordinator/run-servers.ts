// The run's network side, started after preparation and stopped as one async-disposable: the
// HTTP(S) server workers upgrade on, membership and the WebSocket worker server, the metrics
// endpoint, and the Prometheus targets file.

import { readFile } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { describeDataset } from '../shared/data/index.js';
import { BatchlabError, INTERNAL_ERROR_CODE } from '../shared/errors.js';
import { startMetricsServer, type MetricsServer } from '../shared/metrics-server.js';
import { createRegistry } from '../shared/metrics.js';
import { PROTOCOL_VERSION, type HelloMessage, type WelcomeMessage } from '../shared/protocol.js';
import type { CoordinatorHooks, CoordinatorOptions } from './run-config.js';
import { Membership } from './membership.js';
import { createCoordinatorMetrics, type CoordinatorMetricsObserver } from './metrics.js';
import type { PreparedRun } from './prepare-run.js';
import { TrainingHealth } from './run-health.js';
import { writeTargetsFile, type ScrapeTarget } from './targets-file.js';
import { openFileLimit, pendingLimitsFor } from './pending-connections.js';
import { WorkerServer, type WorkerServerOptions } from './worker-server.js';

export interface RunServers extends AsyncDisposable {
  membership: Membership;
  metrics: CoordinatorMetricsObserver;
  /** The training side of /healthz: an observer of the trainer. */
  health: TrainingHealth;
  /** Tells the metrics which reducer is in use (it can change when sharded falls back to star). */
  reportReducer(name: () => string): void;
  /** The run failed with `error`: on disposal workers are told so (with its code) instead of "run finished". */
  fail(error: unknown): void;
}

/** Starts listening; the returned object stops everything (telling workers why) when disposed. */
export async function startServers(
  options: CoordinatorOptions,
  run: PreparedRun,
  hooks: CoordinatorHooks,
): Promise<RunServers> {
  const { log } = hooks;
  const membership = new Membership(log);
  let reducerName = (): string => options.reducer;
  const registry = createRegistry('coordinator');
  const metrics = createCoordinatorMetrics(registry, {
    backend: run.backend.backend,
    baseBatch: run.schedule.baseBatch,
    workersConnected: () => membership.readyWorkers().length,
    workersQuarantined: () => membership.schedule.quarantined().length,
    reducer: () => reducerName(),
  });
  const http = await createHttpServer(options);
  const workerServer = new WorkerServer(http, membership, workerServerOptions(options, run, metrics, log));
  warnOnUnequalChunks(membership, options.microBatch, log);
  membership.on('late', () => metrics.onLate());
  membership.on('evicted', () => metrics.onEvicted());
  membership.on('lost', (worker) => metrics.onWorkerLeft(worker.workerId));
  let metricsServer: MetricsServer | null = null;
  const health = new TrainingHealth(options.stepDeadlineCapMs);
  let listening = false;
  let failure: { reason: string; code: string } | null = null;
  const fail = (error: unknown): void => {
    failure ??= {
      reason: `run did not complete: ${error instanceof Error ? error.message : String(error)}`,
      code: error instanceof BatchlabError ? error.code : INTERNAL_ERROR_CODE,
    };
  };
  const dispose = async (): Promise<void> => {
    listening = false;
    health.finish();
    if (!failure && hooks.signal?.aborted) fail(hooks.signal.reason);
    if (failure) await workerServer.close(failure.reason, failure.code);
    else await workerServer.close('run finished');
    await new Promise<void>((resolve) => {
      http.closeAllConnections();
      http.close(() => resolve());
    });
    await metricsServer?.close();
  };
  try {
    const port = await listen(http, options.port, options.host);
    listening = true;
    if (options.metricsPort !== null)
      metricsServer = await startMetricsServer(registry, options.metricsPort, options.host, {
        details: () => ({ role: 'coordinator', runId: run.runId, workers: membership.readyWorkers().length }),
        live: [health.check],
        ready: () => (listening ? null : 'not listening for workers'),
      });
    const scheme = options.tlsCert ? 'wss' : 'ws';
    log(
      `listening on ${scheme}://${options.host}:${port}${metricsServer ? `, metrics at ${metricsServer.url}` : ''}${options.token === null ? ' (no token: insecure)' : ''}`,
    );
    if (metricsServer && options.targetsFile)
      keepTargetsFile(options.targetsFile, coordinatorTarget(options.host, metricsServer.port), membership, log);
    const metricsUrl = metricsServer?.url ?? null;
    hooks.onListening?.({
      port,
      metricsUrl,
      steps: run.steps,
      backend: run.backend.backend,
      dataset: describeDataset(run.dataset),
      onePass: run.movingStats ? Math.min(options.microBatch, options.globalBatchSize) : null,
    });
    const reportReducer = (name: () => string): void => {
      reducerName = name;
    };
    return { membership, metrics, health, reportReducer, fail, [Symbol.asyncDispose]: dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

function workerServerOptions(
  options: CoordinatorOptions,
  run: PreparedRun,
  metrics: CoordinatorMetricsObserver,
  log: (line: string) => void,
): WorkerServerOptions {
  return {
    token: options.token,
    datasetFingerprint: run.dataset.fingerprint,
    // A frame is the weights or one gradient plus a small header; sharded: weights and optimizer state.
    maxPayloadBytes: run.weights.length * 4 * (options.reducer === 'sharded' ? 4 : 1) + 16 * 1024 * 1024,
    handshakeTimeoutMs: 120_000,
    pending: pendingLimitsFor(openFileLimit()),
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    log,
    onBytes: (direction, bytes) => metrics.onBytes(direction, bytes),
    wireDtype: options.wireDtype,
    welcome: (workerId) => welcomeFor(workerId, options, run),
    checkWorker: (hello) => checkGhostBatch(hello, options, run),
  };
}

/**
 * A batch-norm model's micro-batch is computed in one pass (it is the ghost batch): a worker whose
 * --max-chunk is smaller than --micro-batch would need more memory than it allows, and is refused.
 * A worker with --max-chunk auto (0 in hello) probes the whole micro-batch itself and leaves with
 * OUT_OF_MEMORY when it does not fit.
 */
function checkGhostBatch(hello: HelloMessage, options: CoordinatorOptions, run: PreparedRun): void {
  if (!run.movingStats || hello.maxChunk === 0 || hello.maxChunk >= options.microBatch) return;
  throw new BatchlabError(
    'BAD_OPTION',
    `worker ${hello.workerName} has --max-chunk ${hello.maxChunk}, smaller than this run's --micro-batch ${options.microBatch}; ` +
      `the model (${options.model}) has batch norm, so each micro-batch is computed in one pass: ` +
      `give the worker --max-chunk ${options.microBatch} or more, or the coordinator --micro-batch ${hello.maxChunk} or less`,
  );
}

function answerPlainRequest(_req: unknown, res: ServerResponse): void {
  res.statusCode = 426;
  res.end('batchlab coordinator: connect with a WebSocket (batchlab worker --connect ws://host:port)\n');
}

async function createHttpServer(options: CoordinatorOptions): Promise<Server> {
  if (!options.tlsCert || !options.tlsKey) return createServer(answerPlainRequest);
  return createHttpsServer(
    { cert: await readFile(options.tlsCert), key: await readFile(options.tlsKey) },
    answerPlainRequest,
  );
}

function listen(http: Server, port: number, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host, () => resolve((http.address() as AddressInfo).port));
  });
}

function welcomeFor(workerId: number, options: CoordinatorOptions, run: PreparedRun): WelcomeMessage {
  const { dataset } = run;
  return {
    type: 'welcome',
    protocolVersion: PROTOCOL_VERSION,
    runId: run.runId,
    workerId,
    seed: options.seed,
    modelTopology: run.topology,
    params: run.params,
    dataset: {
      name: dataset.name,
      trainCount: dataset.train.count,
      testCount: dataset.test.count,
      fingerprint: dataset.fingerprint,
      files: dataset.files.map(({ name, sha256 }) => ({ name, sha256 })),
      ...(options.dataset === 'synthetic'
        ? { syntheticTrain: dataset.train.count, syntheticTest: dataset.test.count }
        : {}),
    },
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    wireDtype: options.wireDtype,
    augment: options.augment,
    ...(options.reducer === 'sharded'
      ? { sharded: { optimizer: options.optimizer, optimizerConfig: { ...run.optimizerConfig } } }
      : {}),
    microBatch: Math.min(options.microBatch, options.globalBatchSize),
  };
}

/** Chunked accumulation sums in float32 per chunk: equal chunking keeps results exact. */
function warnOnUnequalChunks(membership: Membership, microBatch: number, log: (line: string) => void): void {
  membership.on('joined', (worker) => {
    const chunks = new Set(membership.readyWorkers().map((w) => Math.min(w.info.maxChunk, microBatch)));
    if (chunks.size > 1) {
      log(
        `warning: workers split micro-batches of ${microBatch} into different chunks (--max-chunk); results stay correct but may differ in the last bits from a run with equal --max-chunk (worker ${worker.workerId}: ${worker.info.maxChunk})`,
      );
    }
  });
}

function coordinatorTarget(listenHost: string, metricsPort: number): ScrapeTarget {
  const host = listenHost === '0.0.0.0' || listenHost === '::' ? hostname() : listenHost;
  return { address: `${host.includes(':') ? `[${host}]` : host}:${metricsPort}`, role: 'coordinator' };
}

/** Rewrites `file` with the coordinator's and every ready worker's /metrics address on each change. */
function keepTargetsFile(
  file: string,
  coordinator: ScrapeTarget,
  membership: Membership,
  log: (line: string) => void,
): void {
  const update = (): void => {
    const workers = membership.readyWorkers().filter((w) => w.info.metricsTarget);
    try {
      writeTargetsFile(file, [
        coordinator,
        ...workers.map((w): ScrapeTarget => ({
          address: w.info.metricsTarget!,
          role: 'worker',
          worker: String(w.workerId),
        })),
      ]);
    } catch (error) {
      log(`could not update ${file}: ${(error as Error).message}`);
    }
  };
  membership.on('joined', update);
  membership.on('lost', update);
  update();
  log(`Prometheus targets in ${file}`);
}
