// Building a run's report from the trainer's outcome and the observers' totals: at the end, and
// (incomplete, without the train-split evaluation) at each checkpoint.

import { performance } from 'node:perf_hooks';
import { describeDataset } from '../shared/data/index.js';
import { evaluateModel } from '../shared/evaluate.js';
import type { CheckpointRecord } from './checkpoint.js';
import type { CoordinatorOptions } from './run-config.js';
import type { PreparedRun } from './prepare-run.js';
import type { RunReport } from './report.js';
import type { RunTotals } from './run-totals.js';
import type { TargetTracker } from './target.js';
import type { TrainingOutcome, TrainingProgress } from './trainer.js';

/** Training samples evaluated at the end for the generalization gap (the first N of the split). */
const TRAIN_EVAL_SAMPLES = 10_000;

export interface RunResults {
  outcome: TrainingOutcome;
  /** Where this session started (a resumed checkpoint, or step 0). */
  resumedFrom: TrainingProgress;
  totals: RunTotals;
  target: TargetTracker;
  /** performance.now() when the run started. */
  startedAtMs: number;
  /** The reducer in use at the end. */
  reducer: string;
  /** This session's checkpoint writes (null without --checkpoint-dir). */
  checkpoints: CheckpointRecord | null;
  /** false: a report of the run so far (at a checkpoint), without the train-split evaluation. */
  complete: boolean;
}

/** The report of the run; when complete, evaluates the train split for the generalization gap (unless timing only). */
export async function buildReport(
  options: CoordinatorOptions,
  run: PreparedRun,
  results: RunResults,
): Promise<RunReport> {
  const { outcome, totals, target } = results;
  // Throughput and phase times describe this session only, not steps before a resume.
  const sessionSteps = outcome.stepsDone - results.resumedFrom.stepsDone;
  const sessionSamples = outcome.samples - results.resumedFrom.samples;
  const trainSeconds = totals.trainSeconds();
  const trainAccuracy = options.timingOnly || !results.complete ? null : await evaluateTrainSplit(run);
  const evalAccuracy = outcome.lastEval?.accuracy ?? null;
  return {
    command: options.command,
    config: options.config ?? null,
    complete: results.complete,
    backend: run.backend.backend,
    adapter: run.backend.adapter ? run.backend.device : null,
    reducer: results.reducer,
    workers: totals.maxWorkers,
    globalBatchSize: options.globalBatchSize,
    microBatchSize: options.microBatch,
    steps: outcome.stepsDone,
    samples: outcome.samples,
    initialLoss: totals.initialLoss,
    finalLoss: totals.last ? totals.last.loss : null,
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
    peakLearningRate: run.peakLr,
    targetReached: target.isSet ? target.reached : null,
    stepsToTarget: target.stepsToTarget,
    samplesToTarget: target.stepsToTarget === null ? null : target.stepsToTarget * options.globalBatchSize,
    wallSeconds: (performance.now() - results.startedAtMs) / 1000,
    model: options.model,
    dataset: describeDataset(run.dataset),
    optimizer: options.optimizer,
    seed: options.seed,
    initFrom: run.initFrom,
    scheduleChanges: run.scheduleChanges,
    checkpoints: results.checkpoints && {
      lastStep: results.checkpoints.lastStep,
      failures: results.checkpoints.failures,
      finalWritten: results.checkpoints.finalWritten,
    },
    ...totals.peakMemory(),
    workerMemory: [...totals.memory.values()].sort((a, b) => a.workerId - b.workerId),
    history: totals.history,
  };
}

/** Train-split accuracy of the model (holding the final weights) in inference mode, for the generalization gap. */
async function evaluateTrainSplit(run: PreparedRun): Promise<number> {
  const { dataset, model } = run;
  const subset = { ...dataset.train, count: Math.min(TRAIN_EVAL_SAMPLES, dataset.train.count) };
  return (await evaluateModel(model, subset, dataset.sampleShape, dataset.numClasses)).accuracy;
}
