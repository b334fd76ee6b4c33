// Preparing a run before any socket opens: the backend, the data, the model and its initial
// weights, the LR schedule, the optimizer, and — with --resume — the state of a checkpoint.

import { randomBytes } from 'node:crypto';
import type * as tfl from '@tensorflow/tfjs-layers';
import { selectBackend, type BackendChoice } from '../shared/backend.js';
import { describeDataset, loadDataset } from '../shared/data/index.js';
import type { Dataset } from '../shared/data/dataset.js';
import { createLrSchedule, scaledLearningRate, type LrScheduleConfig } from '../shared/lr-schedule.js';
import { buildModel, modelTopology } from '../shared/models/index.js';
import {
  createOptimizer,
  DEFAULT_OPTIMIZER_CONFIG,
  type Optimizer,
  type OptimizerConfig,
} from '../shared/optimizers/index.js';
import { countParams, paramSpecsOf, writeWeights } from '../shared/param-layout.js';
import type { ParamSpec } from '../shared/protocol.js';
import { NoiseScaleEstimator } from '../shared/statistics/noise-scale.js';
import { initialWeights } from '../shared/weight-init.js';
import { assertSameRun, loadCheckpoint, type CheckpointIdentity } from './checkpoint.js';
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
  schedule: LrScheduleConfig;
  lrAt: (step: number) => number;
  /** η after the batch-size scaling rule. */
  peakLr: number;
  optimizer: Optimizer;
  /** The optimizer's hyperparameters (workers build the same optimizer with the sharded reducer). */
  optimizerConfig: OptimizerConfig;
  noise: NoiseScaleEstimator;
  identity: CheckpointIdentity;
  /** Where training starts: step 0, or the resumed checkpoint's step. */
  progress: TrainingProgress;
}

/** Loads and builds everything for `options`; logs what it chose. */
export async function prepareRun(options: RunConfig, log: (line: string) => void): Promise<PreparedRun> {
  const backend = await selectBackend(options.backend);
  log(
    `backend ${backend.backend} (${backend.device})${backend.skipped.length ? `; skipped ${backend.skipped.join('; ')}` : ''}`,
  );
  const { dataDir, seed, syntheticTrain, syntheticTest } = options;
  const dataset = await loadDataset({ name: options.dataset, dataDir, seed, syntheticTrain, syntheticTest });
  log(`dataset ${describeDataset(dataset)}`);
  const steps = options.steps ?? Math.ceil(((options.epochs ?? 1) * dataset.train.count) / options.globalBatchSize);
  const { model, params, weights, topology } = buildInitialModel(options, dataset);
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
    progress: { stepsDone: 0, samples: 0 },
  };
  log(describePlan(options, run, countParams(params)));
  if (options.resume && options.checkpointDir) {
    try {
      await resume(run, options.checkpointDir, log);
    } catch (error) {
      model.dispose();
      throw error;
    }
  }
  return run;
}

/** The model for the dataset's shape with its seeded initial weights (also written into the model). */
function buildInitialModel(options: RunConfig, dataset: Dataset) {
  const { sampleShape: inputShape, numClasses } = dataset;
  const model = buildModel(options.model, { inputShape, numClasses, hidden: options.hidden });
  const params = paramSpecsOf(model);
  const weights = initialWeights(params, options.seed);
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
    `model ${options.model} (${paramCount.toLocaleString('en-US')} parameters), global batch ${options.globalBatchSize}, micro-batch ${options.microBatch}, ` +
    `${run.steps} steps, ${options.optimizer} lr ${options.lr}${scaled}${warmup}${decay}`
  );
}

/** Continues from the checkpoint in `dir`: weights, optimizer state, noise EMAs and progress. */
async function resume(run: PreparedRun, dir: string, log: (line: string) => void): Promise<void> {
  const checkpoint = await loadCheckpoint(dir);
  assertSameRun(checkpoint.identity, run.identity, dir);
  run.weights.set(checkpoint.weights);
  run.optimizer.loadState(checkpoint.optimizerState);
  if (checkpoint.noiseState) run.noise.loadState(checkpoint.noiseState);
  run.progress = { stepsDone: checkpoint.stepsDone, samples: checkpoint.samples };
  log(`resuming from ${dir} at step ${checkpoint.stepsDone} (written ${checkpoint.writtenAt})`);
}
