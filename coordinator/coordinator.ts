// The coordinator process in four stages: prepare the run (prepare-run.ts), start the servers
// (run-servers.ts, disposed at the end), train (trainer.ts, with the reducer behind its seam; each
// step and evaluation streamed to --events, the report of the run so far written at each
// checkpoint), and finish: the last checkpoint, the report (run-report.ts), the trace and the model.

import { performance } from 'node:perf_hooks';
import { evaluateModel, type Evaluation } from '../shared/evaluate.js';
import { checkOutputPaths, givenOutputs } from '../shared/output-paths.js';
import { writeWeights } from '../shared/param-layout.js';
import {
  CheckpointWriteError,
  DEFAULT_KEEP_CHECKPOINTS,
  freeBytesIn,
  saveCheckpoint,
  type CheckpointRecord,
} from './checkpoint.js';
import type { CoordinatorMetricsObserver } from './metrics.js';
import type { PreparedRun } from './prepare-run.js';
import { prepareRun } from './prepare-run.js';
import { EventsFile } from './events-file.js';
import type { Reducer } from './reducer.js';
import { writeReport, type RunReport } from './report.js';
import type { CoordinatorHooks, CoordinatorOptions } from './run-config.js';
import { buildReport, type RunResults } from './run-report.js';
import { startServers, type RunServers } from './run-servers.js';
import { RunTotals } from './run-totals.js';
import { savedModelExtras, saveLayersModel } from './save-model.js';
import { ShardedReducer } from './sharded-reducer.js';
import { StarReducer } from './star-reducer.js';
import { TargetTracker } from './target.js';
import { TraceRecorder } from './trace.js';
import { train, type TrainerParts, type TrainingOutcome, type TrainingProgress } from './trainer.js';
import { combineObservers, type TrainerObserver } from './trainer-observer.js';

/** Runs a whole training job as the coordinator and returns its report. */
export async function runCoordinator(options: CoordinatorOptions, hooks: CoordinatorHooks): Promise<RunReport> {
  const startedAtMs = performance.now();
  // Before the data loads: an output that cannot be written would otherwise fail only at the end.
  await checkOutputPaths(
    givenOutputs([
      ['save-model', options.saveModel, 'directory'],
      ['report', options.report, 'file'],
      ['events', options.events, 'file'],
      ['trace', options.trace, 'file'],
      ['targets-file', options.targetsFile, 'file'],
      ['checkpoint-dir', options.checkpointDir, 'directory'],
    ]),
  );
  const run = await prepareRun(options, hooks.log);
  try {
    await using servers = await startServers(options, run, hooks);
    try {
      return await trainAndFinish(options, run, servers, hooks, startedAtMs);
    } catch (error) {
      // The workers are told the run failed (and exit non-zero), not that it finished.
      servers.fail(error);
      throw error;
    }
  } finally {
    run.model.dispose();
  }
}

/** Trains, writes the last checkpoint, builds the report and writes the outputs. */
async function trainAndFinish(
  options: CoordinatorOptions,
  run: PreparedRun,
  servers: RunServers,
  hooks: CoordinatorHooks,
  startedAtMs: number,
): Promise<RunReport> {
  const reducer = createReducer(options, run, servers, hooks.log);
  servers.reportReducer(() => reducer.name);
  const totals = new RunTotals(run.steps);
  const target = new TargetTracker({ accuracy: options.targetAccuracy, loss: options.targetLoss });
  const trace = options.trace ? new TraceRecorder(`batchlab run ${run.runId}`) : null;
  servers.membership.on('joined', (worker) => trace?.nameWorker(worker.workerId, worker.info.name));
  const resumedFrom = { ...run.progress };
  using events = openEvents(options, run, hooks.log);
  const observer = combineObservers([totals, target, servers.metrics, servers.health, trace, events, hooks.observer]);
  servers.membership.on('rejected', (reason) => observer.onReject?.(reason, -1));
  const checkpoints = newCheckpointRecord(options);
  const context = { log: hooks.log, metrics: servers.metrics, record: checkpoints };
  let lastEval: Evaluation | null = null;
  const results = (outcome: TrainingOutcome, complete: boolean): RunResults => {
    const { name } = reducer;
    return { outcome, resumedFrom, totals, target, startedAtMs, reducer: name, checkpoints, complete };
  };
  // At each checkpoint (and when stopped by a signal) the report of the run so far replaces the last one.
  const writeInterimReport = async (at: TrainingProgress): Promise<void> => {
    if (!options.report) return;
    const report = await buildReport(options, run, results({ ...at, lastEval }, false));
    await writeReport(options.report, report).catch((error: Error) =>
      hooks.log(`could not write the report of step ${at.stepsDone} to ${options.report}: ${error.message}`),
    );
  };
  const writeCheckpoint = async (at: TrainingProgress): Promise<void> => {
    await checkpoint(options, run, reducer, at, context, false);
    await writeInterimReport(at);
  };
  const writeFinalCheckpoint = (at: TrainingProgress): Promise<void> =>
    checkpoint(options, run, reducer, at, context, true);
  const evaluate = async (weights: Float32Array): Promise<Evaluation> =>
    (lastEval = await evaluateTimed(run, weights, totals, trace));
  const parts = trainerParts(options, run, { servers, reducer, observer, evaluate, writeCheckpoint, hooks, target });
  const outcome = await trainSavingOnAbort(
    parts,
    async (at) => {
      await writeFinalCheckpoint(at);
      await writeInterimReport(at);
    },
    hooks.signal,
  );
  servers.health.finish();
  await writeFinalCheckpoint(run.progress);
  // The model holds the final weights from here on: the train-split evaluation and --save-model read it.
  writeWeights(run.model, await reducer.weights());
  run.movingStats?.writeTo();
  const report = await buildReport(options, run, results(outcome, true));
  if (target.isSet)
    hooks.log(
      target.reached
        ? `target reached after ${target.stepsToTarget} steps`
        : `target not reached in ${outcome.stepsDone} steps`,
    );
  await writeOutputs(options, run, report, trace, hooks.log);
  return report;
}

/** The --events file (null without the option) as a disposable observer; the token stays out of it. */
function openEvents(options: CoordinatorOptions, run: PreparedRun, log: (line: string) => void) {
  if (!options.events) return null;
  const { token: _token, ...settings } = options;
  const config = { runId: run.runId, totalSteps: run.steps, peakLr: run.peakLr, ...settings };
  const file = EventsFile.open(options.events, config, run.progress.stepsDone, log);
  return Object.assign(file, { [Symbol.dispose]: () => file.close() });
}

/** The reducer `--reducer` names; the sharded one falls back to the star when workers cannot reach each other. */
function createReducer(
  options: CoordinatorOptions,
  run: PreparedRun,
  servers: RunServers,
  log: (line: string) => void,
): Reducer {
  if (options.reducer === 'star') return new StarReducer(run.weights, run.optimizer);
  return new ShardedReducer({
    membership: servers.membership,
    weights: run.weights,
    optimizer: run.optimizer,
    startStep: run.progress.stepsDone,
    probeTimeoutMs: 10_000,
    requirePeerTls: Boolean(options.tlsCert),
    stateTimeoutMs: 120_000,
    log,
  });
}

interface TrainerWiring {
  servers: RunServers;
  reducer: Reducer;
  observer: TrainerObserver;
  evaluate: (weights: Float32Array) => Promise<Evaluation>;
  writeCheckpoint: (at: TrainingProgress) => Promise<void>;
  hooks: CoordinatorHooks;
  target: TargetTracker;
}

function trainerParts(options: CoordinatorOptions, run: PreparedRun, wiring: TrainerWiring): TrainerParts {
  return {
    config: {
      globalBatchSize: options.globalBatchSize,
      microBatch: options.microBatch,
      steps: run.steps,
      lrAt: run.lrAt,
      evalEvery: options.timingOnly ? null : options.evalEvery,
      minWorkers: options.minWorkers,
      // Null when the optimizer takes no momentum: then none enters the noise scale's temperature.
      momentum: run.trainingSchedule.momentum ?? 0,
      workerWaitTimeoutMs: options.workerWaitTimeoutMs,
      stepDeadlineFloorMs: options.stepDeadlineFloorMs,
      stepDeadlineCapMs: options.stepDeadlineCapMs,
      balance: options.balance,
      evictAfter: options.evictAfter,
    },
    membership: wiring.servers.membership,
    reducer: wiring.reducer,
    noise: run.noise,
    movingStats: run.movingStats,
    evaluate: wiring.evaluate,
    observer: wiring.observer,
    log: wiring.hooks.log,
    signal: wiring.hooks.signal,
    shouldStop: () => wiring.target.reached,
    progress: run.progress,
    onCheckpoint: wiring.writeCheckpoint,
    checkpointEvery: options.checkpointEvery,
  };
}

/** Trains; when stopped by a signal, saves the weights after the last applied step first. */
async function trainSavingOnAbort(
  parts: TrainerParts,
  writeCheckpoint: (at: TrainingProgress) => Promise<void>,
  signal?: AbortSignal,
): Promise<TrainingOutcome> {
  try {
    return await train(parts);
  } catch (error) {
    if (signal?.aborted) await writeCheckpoint(parts.progress);
    throw error;
  }
}

function newCheckpointRecord(options: CoordinatorOptions): CheckpointRecord | null {
  if (!options.checkpointDir) return null;
  return { lastStep: null, failures: 0, finalWritten: null, lowSpaceWarned: false };
}

interface CheckpointContext {
  log: (line: string) => void;
  metrics: CoordinatorMetricsObserver;
  record: CheckpointRecord | null;
}

const MB = (bytes: number): string => `${(bytes / 1048576).toFixed(2)} MB`;

/**
 * Writes a checkpoint of `at`. A failed write is logged with its reason, counted in
 * batchlab_checkpoint_failures_total and recorded; it does not end the run (the earlier
 * checkpoints are still there, and the next interval tries again). The `final` one (end of the
 * run, or a signal) that fails is an `error:` line saying where --resume would continue.
 */
async function checkpoint(
  options: CoordinatorOptions,
  run: PreparedRun,
  reducer: Reducer,
  at: TrainingProgress,
  { log, metrics, record }: CheckpointContext,
  final: boolean,
): Promise<void> {
  const dir = options.checkpointDir;
  if (!dir || !record) return;
  const state = {
    identity: run.identity,
    schedule: run.trainingSchedule,
    runId: run.runId,
    stepsDone: at.stepsDone,
    samples: at.samples,
    weights: await reducer.weights(),
    movingStats: run.movingStats ? run.movingStats.values.slice() : null,
    optimizerState: await reducer.optimizerState(),
    noiseState: run.noise.state(),
    writtenAt: new Date().toISOString(),
  };
  // Early warning: after this write there would be no room for the next one.
  const arrays = [state.weights, state.movingStats ?? 0, ...Object.values(state.optimizerState)];
  const bytes = 4 * arrays.reduce<number>((n, v) => n + (typeof v === 'number' ? 0 : v.length), 0);
  const free = await freeBytesIn(dir);
  const low = free !== null && free < 2 * bytes;
  if (low && !record.lowSpaceWarned)
    log(
      `warning: ${MB(free)} free in ${dir}, less than two checkpoints (2 × ${MB(bytes)}); ` +
        'checkpoint writes may fail (the run goes on; the checkpoints already written stay)',
    );
  record.lowSpaceWarned = low;
  try {
    const saved = await saveCheckpoint(dir, state, options.keepCheckpoints ?? DEFAULT_KEEP_CHECKPOINTS);
    record.lastStep = at.stepsDone;
    if (final) record.finalWritten = true;
    metrics.onCheckpointWritten(at.stepsDone);
    log(`checkpoint at step ${at.stepsDone} written to ${saved.path} (run ${run.runId})`);
  } catch (error) {
    if (!(error instanceof CheckpointWriteError)) throw error;
    record.failures += 1;
    metrics.onCheckpointFailed(error.reason);
    const kept = record.lastStep === null ? 'no checkpoint of this session yet' : `step ${record.lastStep}`;
    if (!final) {
      log(
        `checkpoint at step ${at.stepsDone} failed (${error.reason}): ${error.message}; ` +
          `earlier checkpoints kept (newest of this session: ${kept}); the run goes on`,
      );
      return;
    }
    record.finalWritten = false;
    log(
      `error: the final checkpoint (step ${at.stepsDone}) was not written (${error.reason}): ${error.message}; ` +
        (record.lastStep === null
          ? `only checkpoints of earlier sessions, if any, are in ${dir}`
          : `--resume would continue from step ${record.lastStep}`),
    );
  }
}

/** Evaluates on the test split; the time is left out of training throughput. */
async function evaluateTimed(
  run: PreparedRun,
  weights: Float32Array,
  totals: RunTotals,
  trace: TraceRecorder | null,
): Promise<Evaluation> {
  const t0 = performance.now();
  writeWeights(run.model, weights);
  run.movingStats?.writeTo();
  const evaluation = await evaluateModel(run.model, run.dataset.test, run.dataset.sampleShape, run.dataset.numClasses);
  const t1 = performance.now();
  trace?.addSpan('eval', t0, t1, { accuracy: evaluation.accuracy });
  totals.addEvalSeconds((t1 - t0) / 1000);
  return evaluation;
}

/** The trace, the model and the report, each where its option says. */
async function writeOutputs(
  options: CoordinatorOptions,
  run: PreparedRun,
  report: RunReport,
  trace: TraceRecorder | null,
  log: (line: string) => void,
): Promise<void> {
  if (trace && options.trace) {
    await trace.write(options.trace);
    log(`trace written to ${options.trace} (open in chrome://tracing or ui.perfetto.dev)`);
  }
  if (options.saveModel) {
    const extras = await savedModelExtras(options, run, report);
    log(`model saved to ${await saveLayersModel(run.model, options.saveModel, extras)}`);
  }
  if (options.report) {
    await writeReport(options.report, report);
    log(`report written to ${options.report}`);
  }
}
