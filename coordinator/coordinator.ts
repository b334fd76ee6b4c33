// The coordinator process: loads data and model, serves workers and metrics, runs the trainer,
// then writes the report and the model. The loop itself is in trainer.ts.

import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { selectBackend } from '../shared/backend.js';
import { describeDataset, loadDataset } from '../shared/data/index.js';
import { evaluateModel, type Evaluation } from '../shared/evaluate.js';
import { createLrSchedule, scaledLearningRate } from '../shared/lr-schedule.js';
import { startMetricsServer, type MetricsServer } from '../shared/metrics-server.js';
import { createRegistry } from '../shared/metrics.js';
import { buildModel, modelTopology } from '../shared/models/index.js';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG } from '../shared/optimizers/index.js';
import { countParams, paramSpecsOf, writeWeights } from '../shared/param-layout.js';
import { PROTOCOL_VERSION } from '../shared/protocol.js';
import { initialWeights } from '../shared/weight-init.js';
import { Membership } from './membership.js';
import { createCoordinatorMetrics } from './metrics.js';
import { StarReducer } from './reducer.js';
import { writeReport, type RunReport } from './report.js';
import type { RunConfig } from './run-config.js';
import { RunTotals } from './run-totals.js';
import { saveLayersModel } from './save-model.js';
import { TargetTracker } from './target.js';
import { writeTargetsFile, type ScrapeTarget } from './targets-file.js';
import { TraceRecorder } from './trace.js';
import { NoiseScaleEstimator } from '../shared/statistics/noise-scale.js';
import { combineObservers, train, type TrainerObserver, type TrainingProgress } from './trainer.js';
import { assertSameRun, loadCheckpoint, saveCheckpoint, type CheckpointIdentity } from './checkpoint.js';

export interface CoordinatorOptions extends RunConfig {
  host: string;
  port: number;
  /** null: no token required (loopback demos only). */
  token: string | null;
  /** PEM files: serve wss:// when both are given. */
  tlsCert?: string;
  tlsKey?: string;
  /** Written into the report's `command` field. */
  command: string;
  /**
   * Benchmarks that time steps only: no evaluation at all (not the periodic one, the final one
   * or the train-split one for the generalization gap); the report's accuracies are null.
   */
  timingOnly?: boolean;
}

export interface CoordinatorHooks {
  log: (line: string) => void;
  /** Called once the WebSocket server listens (port resolved) and the run is planned. */
  onListening?: (info: { port: number; metricsUrl: string | null; steps: number; backend: string; dataset: string }) => void;
  observer?: TrainerObserver;
  signal?: AbortSignal;
}

/** Optimizers whose `--momentum` enters the temperature of the noise scale. */
const MOMENTUM_OPTIMIZERS = new Set(['sgd', 'lars']);

/** Training samples evaluated at the end for the generalization gap (the first N of the split). */
const TRAIN_EVAL_SAMPLES = 10_000;

/** Runs a whole training job as the coordinator and returns its report. */
export async function runCoordinator(options: CoordinatorOptions, hooks: CoordinatorHooks): Promise<RunReport> {
  const { log } = hooks;
  const startedAt = performance.now();
  const choice = await selectBackend(options.backend);
  log(`backend ${choice.backend} (${choice.device})${choice.skipped.length ? `; skipped ${choice.skipped.join('; ')}` : ''}`);
  const dataset = await loadDataset({ name: options.dataset, dataDir: options.dataDir, seed: options.seed, syntheticTrain: options.syntheticTrain, syntheticTest: options.syntheticTest });
  log(`dataset ${describeDataset(dataset)}`);
  const steps = options.steps ?? Math.ceil(((options.epochs ?? 1) * dataset.train.count) / options.globalBatchSize);

  const model = buildModel(options.model, { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden: options.hidden });
  const params = paramSpecsOf(model);
  const paramCount = countParams(params);
  const weights = initialWeights(params, options.seed);
  writeWeights(model, weights);
  const topology = modelTopology(model);
  const schedule = {
    baseLr: options.lr,
    baseBatch: options.baseBatch ?? options.globalBatchSize,
    globalBatchSize: options.globalBatchSize,
    scaling: options.lrScaling,
    warmupSteps: options.warmupSteps,
    warmup: options.warmup,
    decay: options.decay,
    totalSteps: steps,
    decayBoundaries: options.decayBoundaries,
    decayFactor: options.decayFactor,
    windows: options.lrWindows,
  };
  const peakLr = scaledLearningRate(schedule);
  log(
    `model ${options.model} (${paramCount.toLocaleString('en-US')} parameters), global batch ${options.globalBatchSize}, micro-batch ${options.microBatch}, ` +
      `${steps} steps, ${options.optimizer} lr ${options.lr}${peakLr !== options.lr ? ` → ${+peakLr.toPrecision(6)} (${options.lrScaling} rule, B0 ${schedule.baseBatch})` : ''}` +
      `${options.warmupSteps ? `, ${options.warmup} warmup ${options.warmupSteps} steps` : ''}${options.decay !== 'constant' ? `, ${options.decay} decay` : ''}`,
  );

  const runId = randomBytes(6).toString('hex');
  const registry = createRegistry('coordinator');
  const metricsObserver = createCoordinatorMetrics(registry, { backend: choice.backend, baseBatch: schedule.baseBatch, workersConnected: () => membership.readyWorkers().length });
  const answerPlainRequest = (_req: unknown, res: ServerResponse): void => {
    res.statusCode = 426;
    res.end('batchlab coordinator: connect with a WebSocket (batchlab worker --connect ws://host:port)\n');
  };
  const http: Server =
    options.tlsCert && options.tlsKey
      ? createHttpsServer({ cert: await readFile(options.tlsCert), key: await readFile(options.tlsKey) }, answerPlainRequest)
      : createServer(answerPlainRequest);
  const scheme = options.tlsCert ? 'wss' : 'ws';
  const membership = new Membership(http, {
    token: options.token,
    datasetFingerprint: dataset.fingerprint,
    // A frame is the weights or one gradient plus a small header.
    maxPayloadBytes: paramCount * 4 + 16 * 1024 * 1024,
    handshakeTimeoutMs: 120_000,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    log,
    onBytes: (direction, bytes) => metricsObserver.onBytes(direction, bytes),
    wireDtype: options.wireDtype,
    welcome: (workerId) => ({
      type: 'welcome',
      protocolVersion: PROTOCOL_VERSION,
      runId,
      workerId,
      seed: options.seed,
      modelTopology: topology,
      params,
      dataset: {
        name: dataset.name,
        trainCount: dataset.train.count,
        testCount: dataset.test.count,
        fingerprint: dataset.fingerprint,
        ...(options.dataset === 'synthetic' ? { syntheticTrain: dataset.train.count, syntheticTest: dataset.test.count } : {}),
      },
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      wireDtype: options.wireDtype,
    }),
  });

  const trace = options.trace ? new TraceRecorder(`batchlab run ${runId}`) : null;
  membership.on('joined', (worker) => trace?.nameWorker(worker.workerId, worker.name));
  let metrics: MetricsServer | null = null;
  let coordinatorTarget: ScrapeTarget | null = null;
  const updateTargets = (): void => {
    if (!options.targetsFile || !coordinatorTarget) return;
    const workers = membership.readyWorkers().filter((w) => w.metricsTarget);
    try {
      writeTargetsFile(options.targetsFile, [coordinatorTarget, ...workers.map((w): ScrapeTarget => ({ address: w.metricsTarget!, role: 'worker', worker: String(w.workerId) }))]);
    } catch (error) {
      log(`could not update ${options.targetsFile}: ${(error as Error).message}`);
    }
  };
  membership.on('joined', updateTargets);
  membership.on('joined', (worker) => {
    // Chunked accumulation sums in float32 per chunk: equal chunking keeps results exact.
    const chunks = new Set(membership.readyWorkers().map((w) => Math.min(w.maxChunk, options.microBatch)));
    if (chunks.size > 1) log(`warning: workers split micro-batches of ${options.microBatch} into different chunks (--max-chunk); results stay correct but may differ in the last bits from a run with equal --max-chunk (worker ${worker.workerId}: ${worker.maxChunk})`);
  });
  membership.on('lost', updateTargets);

  const optimizer = createOptimizer(
    options.optimizer,
    { ...DEFAULT_OPTIMIZER_CONFIG, momentum: options.momentum, nesterov: options.nesterov, weightDecay: options.weightDecay },
    params,
  );
  const noise = new NoiseScaleEstimator();
  const identity: CheckpointIdentity = { model: JSON.stringify(topology), params, datasetFingerprint: dataset.fingerprint, globalBatchSize: options.globalBatchSize, optimizer: options.optimizer, seed: options.seed };
  const progress: TrainingProgress = { stepsDone: 0, samples: 0 };
  if (options.resume && options.checkpointDir) {
    const checkpoint = await loadCheckpoint(options.checkpointDir);
    assertSameRun(checkpoint.identity, identity, options.checkpointDir);
    weights.set(checkpoint.weights);
    optimizer.loadState(checkpoint.optimizerState);
    if (checkpoint.noiseState) noise.loadState(checkpoint.noiseState);
    Object.assign(progress, { stepsDone: checkpoint.stepsDone, samples: checkpoint.samples });
    log(`resuming from ${options.checkpointDir} at step ${checkpoint.stepsDone} (written ${checkpoint.writtenAt})`);
  }
  const resumedFrom = { ...progress };
  const writeCheckpoint = async (at: TrainingProgress): Promise<void> => {
    if (!options.checkpointDir) return;
    const path = await saveCheckpoint(options.checkpointDir, {
      identity,
      stepsDone: at.stepsDone,
      samples: at.samples,
      weights,
      optimizerState: optimizer.state(),
      noiseState: noise.state(),
      writtenAt: new Date().toISOString(),
    });
    log(`checkpoint at step ${at.stepsDone} written to ${path}`);
  };

  const totals = new RunTotals(steps);
  const target = new TargetTracker({ accuracy: options.targetAccuracy, loss: options.targetLoss });
  const observer = combineObservers([totals, target, metricsObserver, trace, hooks.observer]);
  membership.on('rejected', (reason) => observer.onReject?.(reason, -1));

  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(options.port, options.host, () => resolve());
    });
    const port = (http.address() as AddressInfo).port;
    if (options.metricsPort !== null) {
      metrics = await startMetricsServer(registry, options.metricsPort, options.host, () => ({ role: 'coordinator', runId, workers: membership.readyWorkers().length }));
    }
    log(`listening on ${scheme}://${options.host}:${port}${metrics ? `, metrics at ${metrics.url}` : ''}${options.token === null ? ' (no token: insecure)' : ''}`);
    if (metrics && options.targetsFile) {
      const host = options.host === '0.0.0.0' || options.host === '::' ? hostname() : options.host;
      coordinatorTarget = { address: `${host.includes(':') ? `[${host}]` : host}:${metrics.port}`, role: 'coordinator' };
      updateTargets();
      log(`Prometheus targets in ${options.targetsFile}`);
    }
    hooks.onListening?.({ port, metricsUrl: metrics?.url ?? null, steps, backend: choice.backend, dataset: describeDataset(dataset) });

    const evaluate = (w: Float32Array): Evaluation => {
      const t0 = performance.now();
      writeWeights(model, w);
      const evaluation = evaluateModel(model, dataset.test, dataset.sampleShape, dataset.numClasses);
      const t1 = performance.now();
      trace?.addSpan('eval', t0, t1, { accuracy: evaluation.accuracy });
      totals.addEvalSeconds((t1 - t0) / 1000);
      return evaluation;
    };
    let outcome: Awaited<ReturnType<typeof train>>;
    try {
      outcome = await train({
      config: {
        globalBatchSize: options.globalBatchSize,
        microBatch: options.microBatch,
        steps,
        lrAt: createLrSchedule(schedule),
        evalEvery: options.timingOnly ? null : options.evalEvery,
        minWorkers: options.minWorkers,
        momentum: MOMENTUM_OPTIMIZERS.has(options.optimizer) ? options.momentum : 0,
        workerWaitTimeoutMs: options.workerWaitTimeoutMs,
        stepDeadlineFloorMs: options.stepDeadlineFloorMs,
        stepDeadlineCapMs: options.stepDeadlineCapMs,
        balance: options.balance,
      },
      membership,
      reducer: new StarReducer(paramCount),
      optimizer,
      noise,
      weights,
      evaluate,
      observer,
      log,
      signal: hooks.signal,
      shouldStop: () => target.reached,
      progress,
      onCheckpoint: writeCheckpoint,
      checkpointEvery: options.checkpointEvery,
      });
    } catch (error) {
      // Stopped by a signal: the weights are those after the last applied step, so save them.
      if (hooks.signal?.aborted) await writeCheckpoint(progress);
      throw error;
    }
    if (options.checkpointDir) await writeCheckpoint(progress);
    const trainSeconds = totals.trainSeconds();
    // Throughput and phase times describe this session only, not steps before a resume.
    const sessionSteps = outcome.stepsDone - resumedFrom.stepsDone;
    const sessionSamples = outcome.samples - resumedFrom.samples;
    writeWeights(model, weights);
    // Train-split accuracy in inference mode, for the generalization gap.
    const trainSubset = { ...dataset.train, count: Math.min(TRAIN_EVAL_SAMPLES, dataset.train.count) };
    const trainAccuracy = options.timingOnly ? null : evaluateModel(model, trainSubset, dataset.sampleShape, dataset.numClasses).accuracy;
    const last = totals.last;
    const evalAccuracy = outcome.lastEval?.accuracy ?? null;
    if (target.isSet) log(target.reached ? `target reached after ${target.stepsToTarget} steps` : `target not reached in ${outcome.stepsDone} steps`);
    const report: RunReport = {
      command: options.command,
      backend: choice.backend,
      workers: totals.maxWorkers,
      globalBatchSize: options.globalBatchSize,
      microBatchSize: options.microBatch,
      steps: outcome.stepsDone,
      samples: outcome.samples,
      initialLoss: totals.initialLoss,
      finalLoss: last ? last.loss : null,
      evalAccuracy,
      evalLoss: outcome.lastEval?.loss ?? null,
      trainAccuracy,
      generalizationGap: evalAccuracy === null || trainAccuracy === null ? null : trainAccuracy - evalAccuracy,
      samplesPerSecond: trainSeconds > 0 ? sessionSamples / trainSeconds : null,
      phaseSeconds: totals.meanPhaseSeconds(sessionSteps),
      scalingEfficiency: totals.scalingEfficiency(),
      gradientNoiseScale: totals.noiseScale,
      gradientNoiseScaleReliable: totals.noiseScaleReliable,
      learningRate: options.lr,
      peakLearningRate: peakLr,
      targetReached: target.isSet ? target.reached : null,
      stepsToTarget: target.stepsToTarget,
      samplesToTarget: target.stepsToTarget === null ? null : target.stepsToTarget * options.globalBatchSize,
      wallSeconds: (performance.now() - startedAt) / 1000,
      model: options.model,
      dataset: describeDataset(dataset),
      optimizer: options.optimizer,
      seed: options.seed,
      history: totals.history,
    };
    if (trace && options.trace) {
      await trace.write(options.trace);
      log(`trace written to ${options.trace} (open in chrome://tracing or ui.perfetto.dev)`);
    }
    if (options.saveModel) log(`model saved to ${await saveLayersModel(model, options.saveModel)}`);
    if (options.report) {
      await writeReport(options.report, report);
      log(`report written to ${options.report}`);
    }
    return report;
  } finally {
    await membership.close(hooks.signal?.aborted ? 'coordinator interrupted' : 'run finished');
    await new Promise<void>((resolve) => {
      http.closeAllConnections();
      http.close(() => resolve());
    });
    await metrics?.close();
    model.dispose();
  }
}
