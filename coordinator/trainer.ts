// The training loop, read top to bottom: split → dispatch → gather → average → apply → record.
// Everything else (membership, reduction, the optimizer, metrics, evaluation) lives in its own file.

import { performance } from 'node:perf_hooks';
import { BatchlabError } from '../shared/errors.js';
import { cutMicroBatches } from '../shared/micro-batches.js';
import type { Optimizer } from '../shared/optimizers/index.js';
import type { GradientMessage, MicroBatchSpec } from '../shared/protocol.js';
import type { Evaluation } from '../shared/evaluate.js';
import type { NoiseScaleEstimator, NoiseScaleResult } from '../shared/statistics/noise-scale.js';
import { GatherRound, type StepStats } from './gather-round.js';
import type { Membership, WorkerConnection } from './membership.js';
import type { Reducer } from './reducer.js';
import { splitMicroBatches } from './split.js';

export interface TrainerConfig {
  globalBatchSize: number;
  microBatch: number;
  steps: number;
  /** Learning rate applied at each step (schedule, scaling rule, warmup). */
  lrAt: (step: number) => number;
  /** Evaluate every this many steps (0: only at the end). */
  evalEvery: number;
  minWorkers: number;
  /** Momentum in the temperature lr / (B (1 − momentum)) the noise scale depends on (0 without momentum). */
  momentum: number;
  /** How long to wait for `minWorkers` before giving up. */
  workerWaitTimeoutMs: number;
}

/** What one applied step produced; observers (progress, metrics, trace) read it. */
export interface StepRecord {
  step: number;
  /** performance.now() when the step began (for the trace). */
  startedAtMs: number;
  /** |mean gradient|^2 of this step. */
  gradSqNorm: number;
  lr: number;
  loss: number;
  accuracy: number;
  stats: StepStats;
  wallSeconds: number;
  workers: number;
  /** The gradient noise scale estimate after this step, when an estimator runs. */
  noise: NoiseScaleResult | null;
  /** Wall seconds per phase: dispatch, gather-wait, reduce, apply. */
  phases: Record<'dispatch' | 'gather-wait' | 'reduce' | 'apply', number>;
}

export interface TrainerObserver {
  onStep?(record: StepRecord): void;
  onEval?(step: number, evaluation: Evaluation): void;
  /** A refused reply or frame: `reason` is a RejectReason or a membership refusal (auth, bad_frame, …). */
  onReject?(reason: string, workerId: number): void;
  onReassign?(reason: 'worker_lost', count: number): void;
  /** A reply was accepted at `receivedAtMs` (performance.now()). */
  onReply?(workerId: number, message: GradientMessage, receivedAtMs: number): void;
}

/** One observer that forwards every event to each of `observers` (nulls skipped), in order. */
export function combineObservers(observers: readonly (TrainerObserver | null | undefined)[]): TrainerObserver {
  const list = observers.filter((o): o is TrainerObserver => Boolean(o));
  return {
    onStep: (record) => list.forEach((o) => o.onStep?.(record)),
    onEval: (step, evaluation) => list.forEach((o) => o.onEval?.(step, evaluation)),
    onReject: (reason, workerId) => list.forEach((o) => o.onReject?.(reason, workerId)),
    onReassign: (reason, count) => list.forEach((o) => o.onReassign?.(reason, count)),
    onReply: (workerId, message, at) => list.forEach((o) => o.onReply?.(workerId, message, at)),
  };
}

export interface TrainerParts {
  config: TrainerConfig;
  membership: Membership;
  reducer: Reducer;
  optimizer: Optimizer;
  /** Gradient noise scale from the micro-batch norms (McCandlish et al.); optional. */
  noise?: NoiseScaleEstimator;
  /** The model's flat weights; updated in place every step. */
  weights: Float32Array;
  evaluate: (weights: Float32Array) => Evaluation;
  observer: TrainerObserver;
  log: (line: string) => void;
  /** Aborting stops the run: the current wait rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Checked after each step (and its evaluation): true ends the run early, e.g. a target reached. */
  shouldStop?: () => boolean;
}

export interface TrainingOutcome {
  stepsDone: number;
  samples: number;
  lastEval: Evaluation | null;
}

/** Runs steps until `config.steps` are applied (or `signal` aborts) and returns the totals. */
export async function train(parts: TrainerParts): Promise<TrainingOutcome> {
  const { config, membership, reducer, optimizer, weights, observer, log } = parts;
  const microBatches = cutMicroBatches(config.globalBatchSize, config.microBatch);
  let samples = 0;
  let lastEval: Evaluation | null = null;
  let step = 0;
  for (; step < config.steps; step++) {
    const workers = await waitForWorkers(membership, config.minWorkers, config.workerWaitTimeoutMs, log, parts.signal);
    const t0 = performance.now();
    const round = new GatherRound(step, microBatches, reducer);
    dispatch(membership, round, splitMicroBatches(microBatches, workers.map((w) => w.workerId)), weights, config.globalBatchSize);
    const t1 = performance.now();
    await gather(membership, round, weights, config, observer, log, parts.signal);
    const t2 = performance.now();
    const { meanGrad, samples: stepSamples } = reducer.finish();
    const t3 = performance.now();
    const lr = config.lrAt(step);
    optimizer.apply(weights, meanGrad, lr);
    const t4 = performance.now();
    samples += stepSamples;
    const stats = round.stats();
    const gradSqNorm = squaredNorm(meanGrad);
    const noise = parts.noise?.update({ microBatches: stats.sqNorms, globalSqNorm: gradSqNorm, lr, globalBatchSize: stats.samples, momentum: config.momentum }) ?? null;
    observer.onStep?.({
      step,
      startedAtMs: t0,
      gradSqNorm,
      noise,
      lr,
      loss: stats.lossSum / stats.samples,
      accuracy: stats.correct / stats.samples,
      stats,
      wallSeconds: (t4 - t0) / 1000,
      workers: workers.length,
      phases: { dispatch: (t1 - t0) / 1000, 'gather-wait': (t2 - t1) / 1000, reduce: (t3 - t2) / 1000, apply: (t4 - t3) / 1000 },
    });
    const isLast = step === config.steps - 1;
    if ((config.evalEvery > 0 && (step + 1) % config.evalEvery === 0) || isLast) {
      lastEval = parts.evaluate(weights);
      observer.onEval?.(step, lastEval);
    }
    if (parts.shouldStop?.()) {
      step++;
      break;
    }
  }
  return { stepsDone: step, samples, lastEval };
}

function squaredNorm(v: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i]! * v[i]!;
  return sum;
}

/** Waits until at least `minWorkers` are ready; says so when it has to wait. */
async function waitForWorkers(membership: Membership, minWorkers: number, timeoutMs: number, log: (line: string) => void, signal?: AbortSignal): Promise<WorkerConnection[]> {
  let ready = membership.readyWorkers();
  if (ready.length >= minWorkers) return ready;
  log(`waiting for workers: ${ready.length} of ${minWorkers} ready (timeout ${Math.round(timeoutMs / 1000)} s)`);
  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      membership.off('joined', onJoin);
      signal?.removeEventListener('abort', onAbort);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`only ${membership.readyWorkers().length} of ${minWorkers} workers connected within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    const onJoin = (): void => {
      if (membership.readyWorkers().length < minWorkers) return;
      cleanup();
      resolve();
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal!.reason);
    };
    membership.on('joined', onJoin);
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted) onAbort();
  });
  ready = membership.readyWorkers();
  log(`${ready.length} workers ready`);
  return ready;
}

/** Sends each worker its micro-batches, with the weights when its copy is stale. */
function dispatch(membership: Membership, round: GatherRound, plan: Map<number, MicroBatchSpec[]>, weights: Float32Array, globalBatchSize: number): void {
  for (const [workerId, specs] of plan) {
    const worker = membership.workers.get(workerId);
    if (!worker) continue;
    round.assign(workerId, specs);
    const hasWeights = worker.weightsStep !== round.step;
    const sent = membership.send(
      worker,
      { type: 'work', step: round.step, weightsStep: round.step, hasWeights, globalBatchSize, microBatches: specs },
      hasWeights ? weights : null,
    );
    if (sent) worker.weightsStep = round.step;
  }
}

/**
 * Feeds replies into the round until every micro-batch is in. A lost worker's outstanding
 * micro-batches are re-issued to the live ones within the same step; ids fix the samples, so
 * the result is unchanged.
 */
async function gather(membership: Membership, round: GatherRound, weights: Float32Array, config: TrainerConfig, observer: TrainerObserver, log: (line: string) => void, signal?: AbortSignal): Promise<void> {
  const reissue = (orphans: MicroBatchSpec[]): void => {
    if (orphans.length === 0) return;
    const live = membership.readyWorkers();
    if (live.length === 0) {
      log(`step ${round.step}: no live worker for ${orphans.length} micro-batches; paused until one joins`);
      membership.once('joined', () => reissue(orphans));
      return;
    }
    observer.onReassign?.('worker_lost', orphans.length);
    dispatch(membership, round, splitMicroBatches(orphans, live.map((w) => w.workerId)), weights, config.globalBatchSize);
  };
  let diverged = (_error: Error): void => {};
  const onGradient = (worker: WorkerConnection, message: GradientMessage, body: Float32Array): void => {
    const reason = round.accept(worker.workerId, message, body);
    if (reason) observer.onReject?.(reason, worker.workerId);
    else observer.onReply?.(worker.workerId, message, performance.now());
    // A non-finite gradient at shared weights would be non-finite on any worker: stop, do not retry.
    if (reason === 'non_finite') {
      diverged(new BatchlabError('NON_FINITE', `step ${round.step}: micro-batch ${message.microBatchId} from worker ${worker.workerId} has non-finite gradients; the run diverged (lower --lr?)`));
    }
  };
  const onLost = (worker: WorkerConnection, why: string): void => {
    const orphans = round.orphan(worker.workerId);
    if (orphans.length) log(`step ${round.step}: worker ${worker.workerId} lost (${why}); re-issuing micro-batches ${orphans.map((m) => m.id).join(',')}`);
    reissue(orphans);
  };
  let onAbort = (): void => {};
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal!.reason);
    diverged = reject;
    signal?.addEventListener('abort', onAbort);
  });
  // The race below handles a rejection; this keeps one that comes after it from going unhandled.
  aborted.catch(() => {});
  membership.on('gradient', onGradient);
  membership.on('lost', onLost);
  try {
    if (signal?.aborted) throw signal.reason;
    await Promise.race([round.done, aborted]);
  } finally {
    membership.off('gradient', onGradient);
    membership.off('lost', onLost);
    signal?.removeEventListener('abort', onAbort);
  }
}
