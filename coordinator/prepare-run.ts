// Preparing a run before any socket opens: the checkpoint directory (usable, and not holding
// another run's checkpoints unless --resume or --fresh), the backend, the data, the model and its
// initial weights (and moving statistics, with batch norm), the LR schedule, the optimizer, and — with --resume — the state of a checkpoint
// (with --resume auto, when the directory holds one; else the run starts at step 0).

import { randomBytes } from 'node:crypto';
import { mkdir, rename } from 'node:fs/promises';
import { basename } from 'node:path';
import type * as tfl from '@tensorflow/tfjs-layers';
import { selectBackend, type BackendChoice } from '../shared/backend.js';
import { batchNormLayersOf, MovingStatistics } from '../shared/batch-norm.js';
import { describeDataset, loadDataset } from '../shared/data/index.js';
import type { Dataset } from '../shared/data/dataset.js';
import { createLrSchedule, scaledLearningRate, type LrScheduleConfig } from '../shared/lr-schedule.js';
import { buildModel, isModelName, modelTopology } from '../shared/models/index.js';
import {
  createOptimizer,
  DEFAULT_OPTIMIZER_CONFIG,
  type Optimizer,
  type OptimizerConfig,
} from '../shared/optimizers/index.js';
import { countParams, paramSpecsOf, readWeights, writeWeights } from '../shared/param-layout.js';
import type { ParamSpec } from '../shared/protocol.js';
import { NoiseScaleEstimator } from '../shared/statistics/noise-scale.js';
import { initialWeights } from '../shared/weight-init.js';
import { BatchlabError } from '../shared/errors.js';
import {
  assertSameRun,
  describeScheduleChange,
  listCheckpoints,
  loadNewestCheckpoint,
  moveCheckpointsAside,
  readCheckpoint,
  scheduleChanges,
  type CheckpointIdentity,
  type ScheduleChange,
  type TrainingSchedule,
} from './checkpoint.js';
import { initFromSaved, loadModelFile } from './model-file.js';
import type { RunConfig } from './run-config.js';
import type { TrainingProgress } from './trainer.js';

/** Everything the servers, the trainer and the report need, built once per run. */
export interface PreparedRun {
  runId: string;
  backend: BackendChoice;
  dataset: Dataset;
  steps: number;
  model: tfl.LayersModel;
  topology: Record<string, unknown>;
  params: ParamSpec[];
  /** The flat weights, updated in place by the star reducer. */
  weights: Float32Array;
  /** A model with batch norm: its moving statistics, kept here alone (null: no batch norm). */
  movingStats: MovingStatistics | null;
  schedule: LrScheduleConfig;
  lrAt: (step: number) => number;
  /** η after the batch-size scaling rule. */
  peakLr: number;
  optimizer: Optimizer;
  /** The optimizer's hyperparameters (workers build the same optimizer with the sharded reducer). */
  optimizerConfig: OptimizerConfig;
  noise: NoiseScaleEstimator;
  identity: CheckpointIdentity;
  /** The LR settings a checkpoint records and a resume compares. */
  trainingSchedule: TrainingSchedule;
  /** LR settings changed on resume (with --allow-schedule-change); empty otherwise. */
  scheduleChanges: ScheduleChange[];
  /** Where training starts: step 0, or the resumed checkpoint's step. */
  progress: TrainingProgress;
  /** The --init-from directory the weights came from (null: none, or the run resumed from a checkpoint instead). */
  initFrom: string | null;
}

/** Loads and builds everything for `options`; logs what it chose. */
export async function prepareRun(options: RunConfig, log: (line: string) => void): Promise<PreparedRun> {
  if (options.checkpointDir) await prepareCheckpointDir(options, options.checkpointDir, log);
  const backend = await selectBackend(options.backend);
  log(
    `backend ${backend.backend} (${backend.device})${backend.skipped.length ? `; skipped ${backend.skipped.join('; ')}` : ''}`,
  );
  const { dataDir, seed, syntheticTrain, syntheticTest } = options;
  const dataset = await loadDataset({ name: options.dataset, dataDir, seed, syntheticTrain, syntheticTest });
  log(`dataset ${describeDataset(dataset)}`);
  const steps = options.steps ?? Math.ceil(((options.epochs ?? 1) * dataset.train.count) / options.globalBatchSize);
  const { model, params, weights, topology } = await buildInitialModel(options, dataset, log);
  const schedule = scheduleOf(options, steps);
  const { globalBatchSize, optimizer: optimizerName, momentum, nesterov, weightDecay } = options;
  const optimizerConfig = { ...DEFAULT_OPTIMIZER_CONFIG, momentum, nesterov, weightDecay };
  const run: PreparedRun = {
    runId: randomBytes(6).toString('hex'),
    backend,
    dataset,
    steps,
    model,
    topology,
    params,
    weights,
    movingStats: batchNormLayersOf(model).length > 0 ? new MovingStatistics(batchNormLayersOf(model)) : null,
    schedule,
    lrAt: createLrSchedule(schedule),
    peakLr: scaledLearningRate(schedule),
    optimizer: createOptimizer(optimizerName, optimizerConfig, params),
    optimizerConfig,
    noise: new NoiseScaleEstimator(),
    identity: {
      model: JSON.stringify(topology),
      params,
      datasetFingerprint: dataset.fingerprint,
      globalBatchSize,
      optimizer: optimizerName,
      seed: options.seed,
    },
    trainingSchedule: trainingScheduleOf(options, schedule),
    scheduleChanges: [],
    progress: { stepsDone: 0, samples: 0 },
    initFrom: null,
  };
  log(describePlan(options, run, countParams(params)));
  try {
    let resumed = false;
    if (options.resume && options.checkpointDir) {
      if (options.resume === 'auto' && (await listCheckpoints(options.checkpointDir)).length === 0)
        log(`--resume auto: no checkpoint in ${options.checkpointDir}; starting a new run at step 0`);
      else {
        await resume(run, options, options.checkpointDir, log);
        resumed = true;
      }
    }
    // A checkpoint wins: --init-from sets where a run starts, and a resumed run has started.
    if (options.initFrom && resumed)
      log(`--init-from ${options.initFrom} not used: the run resumed from its checkpoint`);
    else if (options.initFrom) {
      await initFromSaved(options.initFrom, model, dataset, log);
      run.weights.set(readWeights(model));
      run.movingStats?.reload();
      run.initFrom = options.initFrom;
      log(`--init-from ${options.initFrom}: starting at step 0 from its weights`);
    }
  } catch (error) {
    model.dispose();
    throw error;
  }
  return run;
}

/**
 * The model for the dataset's shape, built-in or from --model's file, with its initial weights
 * (also written into the model): a file's own weights when it has some, else seeded ones.
 */
async function buildInitialModel(options: RunConfig, dataset: Dataset, log: (line: string) => void) {
  const { sampleShape: inputShape, numClasses } = dataset;
  const { hidden, depth } = options;
  const file = isModelName(options.model) ? null : await loadModelFile(options.model, dataset, log);
  const model = isModelName(options.model)
    ? buildModel(options.model, { inputShape, numClasses, hidden, ...(depth === undefined ? {} : { depth }) })
    : file!.model;
  const params = paramSpecsOf(model);
  const weights = file?.weightsLoaded ? readWeights(model) : initialWeights(params, options.seed);
  writeWeights(model, weights);
  return { model, params, weights, topology: modelTopology(model) };
}

function scheduleOf(options: RunConfig, steps: number): LrScheduleConfig {
  return {
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
}

/** "model mlp (235,146 parameters), global batch 128, …, adam lr 0.001 → 0.002 (linear rule, B0 64)". */
function describePlan(options: RunConfig, run: PreparedRun, paramCount: number): string {
  const { peakLr, schedule } = run;
  const scaled =
    peakLr !== options.lr ? ` → ${+peakLr.toPrecision(6)} (${options.lrScaling} rule, B0 ${schedule.baseBatch})` : '';
  const warmup = options.warmupSteps ? `, ${options.warmup} warmup ${options.warmupSteps} steps` : '';
  const decay = options.decay !== 'constant' ? `, ${options.decay} decay` : '';
  return (
    `model ${options.model}${options.depth === undefined ? '' : ` depth ${options.depth}`} (${paramCount.toLocaleString('en-US')} parameters), global batch ${options.globalBatchSize}, micro-batch ${options.microBatch}, ` +
    `${run.steps} steps, ${options.optimizer} lr ${options.lr}${scaled}${warmup}${decay}`
  );
}

/** Optimizers whose `--momentum` (and `--nesterov`) take part in the update. */
const MOMENTUM_OPTIMIZERS = new Set(['sgd', 'lars']);

function trainingScheduleOf(options: RunConfig, schedule: LrScheduleConfig): TrainingSchedule {
  const usesMomentum = MOMENTUM_OPTIMIZERS.has(options.optimizer);
  return {
    lr: options.lr,
    lrScaling: options.lrScaling,
    baseBatch: schedule.baseBatch,
    warmupSteps: options.warmupSteps,
    warmup: options.warmup,
    decay: options.decay,
    decayBoundaries: options.decayBoundaries,
    decayFactor: options.decayFactor,
    lrWindows: options.lrWindows,
    totalSteps: schedule.totalSteps,
    weightDecay: options.weightDecay,
    momentum: usesMomentum ? options.momentum : null,
    nesterov: usesMomentum ? options.nesterov : null,
  };
}

/**
 * --checkpoint-dir (its kind and permissions checked with the other outputs before the run is
 * prepared) is made when missing. Without --resume it must hold no checkpoints: a new run would
 * replace them. --fresh moves them into a dated subdirectory.
 */
async function prepareCheckpointDir(options: RunConfig, dir: string, log: (line: string) => void): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (options.resume) return;
  const existing = await listCheckpoints(dir);
  if (existing.length === 0) return;
  const newest = await describeCheckpointFile(existing[0]!);
  if (options.fresh) {
    const aside = await moveCheckpointsAside(dir);
    log(`--fresh: moved ${existing.length} checkpoint(s) (newest: ${newest}) from ${dir} to ${aside}`);
    return;
  }
  throw new BatchlabError(
    'BAD_OPTION',
    `--checkpoint-dir ${dir} holds ${existing.length} checkpoint(s) of an earlier run (newest: ${newest}); ` +
      'this run would replace them. Continue that run with --resume, use another --checkpoint-dir, ' +
      'or pass --fresh to move the old checkpoints into a dated subdirectory of it',
  );
}

/** "checkpoint-000000400.batchlab, step 400 of run 3fa2…, written 2026-…", or why it cannot be read. */
async function describeCheckpointFile(path: string): Promise<string> {
  try {
    const c = await readCheckpoint(path);
    return `${basename(path)}, step ${c.stepsDone} of run ${c.runId ?? '(not recorded)'}, written ${c.writtenAt}`;
  } catch (error) {
    return `${basename(path)}, unreadable: ${(error as Error).message}`;
  }
}

/**
 * Continues from the newest usable checkpoint in `dir`: weights, batch-norm moving statistics,
 * optimizer state, noise EMAs and progress. Newer files that are unusable are renamed to *.unusable (kept, out of the rotation).
 * Changed LR settings are refused unless --allow-schedule-change, which logs each one.
 */
async function resume(run: PreparedRun, options: RunConfig, dir: string, log: (line: string) => void): Promise<void> {
  const { checkpoint, path, skipped } = await loadNewestCheckpoint(dir);
  assertSameRun(checkpoint.identity, run.identity, dir);
  if (checkpoint.schedule) {
    const changes = scheduleChanges(checkpoint.schedule, run.trainingSchedule);
    if (changes.length && !options.allowScheduleChange)
      throw new BatchlabError(
        'BAD_OPTION',
        `--resume: the LR settings differ from those of the checkpoint ${path}: ${changes.map(describeScheduleChange).join('; ')}. ` +
          'Resume with the same settings, or pass --allow-schedule-change to continue with the new ones',
      );
    for (const change of changes) log(`--allow-schedule-change: ${describeScheduleChange(change)}`);
    run.scheduleChanges = changes;
  } else {
    log(`checkpoint ${path} is from an older batchlab and records no LR settings: they cannot be compared`);
  }
  for (const bad of skipped) {
    await rename(bad.path, `${bad.path}.unusable`).catch(() => undefined);
    log(`skipped ${bad.path} (renamed to ${basename(bad.path)}.unusable): ${bad.why}`);
  }
  run.weights.set(checkpoint.weights);
  if (run.movingStats) {
    const stats = checkpoint.movingStats;
    if (!stats || stats.length !== run.movingStats.length)
      throw new BatchlabError(
        'BAD_OPTION',
        `--resume: the checkpoint ${path} holds ${stats?.length ?? 0} batch-norm moving statistics, the model has ${run.movingStats.length}; ` +
          'start a new run (--fresh) or use another --checkpoint-dir',
      );
    run.movingStats.values.set(stats);
  }
  run.optimizer.loadState(checkpoint.optimizerState);
  if (checkpoint.noiseState) run.noise.loadState(checkpoint.noiseState);
  run.progress = { stepsDone: checkpoint.stepsDone, samples: checkpoint.samples };
  log(
    `${options.resume === 'auto' ? '--resume auto: ' : ''}resuming from ${dir} at step ${checkpoint.stepsDone} (${basename(path)}, written ${checkpoint.writtenAt}` +
      `${skipped.length ? `; ${skipped.length} newer file(s) skipped, see above` : ''})`,
  );
}
