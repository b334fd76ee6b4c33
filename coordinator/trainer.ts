// The training loop, read top to bottom: split → dispatch → gather → reduce → apply → (batch
// norm) moving statistics → record.
// The reducer (star or sharded) owns reduce and apply behind one seam; everything else
// (membership, the optimizer, metrics, evaluation) lives in its own file.

import { performance } from 'node:perf_hooks';
import { BatchlabError } from '../shared/errors.js';
import { cutMicroBatches } from '../shared/micro-batches.js';
import type { MicroBatchSpec } from '../shared/protocol.js';
import type { MovingStatistics } from '../shared/batch-norm.js';
import type { Evaluation } from '../shared/evaluate.js';
import type { NoiseScaleEstimator } from '../shared/statistics/noise-scale.js';
import { GatherRound } from './gather-round.js';
import type { Membership } from './membership.js';
import type { Reducer } from './reducer.js';
import { dispatch } from './dispatch.js';
import { gather } from './gather.js';
import type { WorkerChannel } from './worker-channel.js';
import { splitMicroBatches, type BalanceMode } from './split.js';
import type { StepRecord, TrainerObserver } from './trainer-observer.js';

export interface TrainerConfig {
  globalBatchSize: number;
  microBatch: number;
  steps: number;
  /** Learning rate applied at each step (schedule, scaling rule, warmup). */
  lrAt: (step: number) => number;
  /** Evaluate every this many steps (0: only at the end; null: never, for benchmarks that time steps only). */
  evalEvery: number | null;
  minWorkers: number;
  /** Momentum in the temperature lr / (B (1 − momentum)) the noise scale depends on (0 without momentum). */
  momentum: number;
  /** How long to wait for `minWorkers` before giving up. */
  workerWaitTimeoutMs: number;
  /** Step deadline = clamp(5 × median of recent step times, floor, cap). */
  stepDeadlineFloorMs: number;
  stepDeadlineCapMs: number;
  /** How micro-batches are shared among workers. */
  balance: BalanceMode;
  /** Evict a worker late at the step deadline this many times in a row (0: never). */
  evictAfter: number;
}

export interface TrainerParts {
  config: TrainerConfig;
  membership: Membership;
  /** Owns the reduction and the update; the loop does not know which one runs. */
  reducer: Reducer;
  /** Gradient noise scale from the micro-batch norms (McCandlish et al.); optional. */
  noise?: NoiseScaleEstimator;
  /** A model with batch norm: its moving statistics, updated from each step's micro-batches. */
  movingStats?: MovingStatistics | null;
  evaluate: (weights: Float32Array) => Promise<Evaluation> | Evaluation;
  observer: TrainerObserver;
  log: (line: string) => void;
  /** Aborting stops the run: the current wait rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Checked after each step (and its evaluation): true ends the run early, e.g. a target reached. */
  shouldStop?: () => boolean;
  /** Where the run starts (a resumed checkpoint) and how far it has got; updated in place. */
  progress: TrainingProgress;
  /** Called after every `checkpointEvery` steps with the progress, e.g. to write a checkpoint. */
  onCheckpoint?: (progress: TrainingProgress) => Promise<void>;
  checkpointEvery?: number;
}

export interface TrainingOutcome {
  stepsDone: number;
  samples: number;
  lastEval: Evaluation | null;
}

/** How far the run got; kept current so a run stopped mid-step can be checkpointed. */
export interface TrainingProgress {
  /** Steps applied, counting those before a resume. */
  stepsDone: number;
  /** Samples in applied steps, counting those before a resume. */
  samples: number;
}

/** Runs steps until `config.steps` are applied (or `signal` aborts) and returns the totals. */
export async function train(parts: TrainerParts): Promise<TrainingOutcome> {
  const { config, observer, progress } = parts;
  const microBatches = cutMicroBatches(config.globalBatchSize, config.microBatch);
  const recentStepMs: number[] = [];
  let lastEval: Evaluation | null = null;
  for (let step = progress.stepsDone; step < config.steps; step++) {
    const deadlineMs = stepDeadline(recentStepMs, config.stepDeadlineFloorMs, config.stepDeadlineCapMs);
    const record = await runStep(parts, step, microBatches, deadlineMs);
    progress.stepsDone = step + 1;
    progress.samples += record.stats.samples;
    recentStepMs.push(record.wallSeconds * 1000);
    if (recentStepMs.length > 10) recentStepMs.shift();
    observer.onStep?.(record);
    const stopping = parts.shouldStop?.() ?? false;
    const isLast = step === config.steps - 1 || stopping;
    if (config.evalEvery !== null && ((config.evalEvery > 0 && (step + 1) % config.evalEvery === 0) || isLast)) {
      observer.onActivity?.('evaluating');
      lastEval = await parts.evaluate(await parts.reducer.weights());
      observer.onEval?.(step, lastEval);
    }
    if (parts.onCheckpoint && parts.checkpointEvery && (step + 1) % parts.checkpointEvery === 0 && !isLast) {
      observer.onActivity?.('checkpointing');
      await parts.onCheckpoint(progress);
    }
    if (stopping) break;
  }
  return { stepsDone: progress.stepsDone, samples: progress.samples, lastEval };
}

/** One step: split → dispatch → gather (the reducer sums and applies) → the step's record. */
async function runStep(
  parts: TrainerParts,
  step: number,
  microBatches: readonly MicroBatchSpec[],
  deadlineMs: number,
): Promise<StepRecord> {
  const { config, membership, observer, log } = parts;
  const lr = config.lrAt(step);
  const { workers, plan, reduction, t0 } = await beginStep(parts, step, microBatches, lr, deadlineMs);
  const round = new GatherRound(microBatches, reduction, parts.movingStats?.length ?? 0);
  const target = { membership, round, reduction, globalBatchSize: config.globalBatchSize };
  observer.onActivity?.('stepping');
  dispatch(target, plan);
  const t1 = performance.now();
  const result = await gather({
    ...target,
    balance: config.balance,
    evictAfter: config.evictAfter,
    deadlineMs,
    workerWaitTimeoutMs: config.workerWaitTimeoutMs,
    observer,
    log,
    signal: parts.signal,
  });
  // After the update, the moving statistics: one update per micro-batch, in id order (the bits of one worker).
  parts.movingStats?.update(round.batchStats());
  const t2 = performance.now();
  const stats = round.stats();
  const noise =
    parts.noise?.update({
      microBatches: stats.sqNorms,
      globalSqNorm: result.sqNorm,
      lr,
      globalBatchSize: stats.samples,
      momentum: config.momentum,
    }) ?? null;
  const gatherWait = (t2 - t1) / 1000 - result.reduceSeconds - result.applySeconds;
  return {
    step,
    startedAtMs: t0,
    gradSqNorm: result.sqNorm,
    noise,
    lr,
    loss: stats.lossSum / stats.samples,
    accuracy: stats.correct / stats.samples,
    stats,
    wallSeconds: (t2 - t0) / 1000,
    workers: workers.length,
    phases: {
      dispatch: (t1 - t0) / 1000,
      'gather-wait': gatherWait,
      reduce: result.reduceSeconds,
      apply: result.applySeconds,
      ...result.exchangeSeconds,
    },
  };
}

/**
 * Splits the step over the live workers that are not quarantined and begins its reduction.
 * Beginning may wait (the sharded reducer fetches weights or probes links); a worker lost
 * meanwhile would hold micro-batches no gather knows of, so the step is begun again over those
 * still there.
 */
async function beginStep(
  parts: TrainerParts,
  step: number,
  microBatches: readonly MicroBatchSpec[],
  lr: number,
  deadlineMs: number,
) {
  const { config, membership, reducer, log } = parts;
  for (;;) {
    // A quarantined worker silent for another deadline is late again (and maybe evicted) before the split.
    membership.checkSilent(deadlineMs, config.evictAfter);
    const workers = await waitForWorkers(membership, config.minWorkers, config.workerWaitTimeoutMs, parts);
    // The step's time starts once its workers are there (waiting for them is not training).
    const t0 = performance.now();
    const plan = splitMicroBatches(
      microBatches,
      membership.schedule.splitWorkers(membership.workingWorkers().map((w) => w.workerId)),
      config.balance,
    );
    const reduction = await reducer.beginStep({ step, microBatches, lr, workers: [...plan.keys()] });
    if ([...plan.keys()].every((id) => membership.get(id))) return { workers, plan, reduction, t0 };
    reduction.abandon();
    log(`step ${step}: a worker left while the step was being prepared; preparing it again`);
  }
}

/** 5 × the median of recent step times, within [floor, cap]; 3 × the floor before any step (warm-up). */
export function stepDeadline(recentStepMs: readonly number[], floorMs: number, capMs: number): number {
  if (recentStepMs.length === 0) return Math.min(capMs, 3 * floorMs);
  const sorted = [...recentStepMs].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return Math.min(capMs, Math.max(floorMs, 5 * median));
}

/** Waits until at least `minWorkers` (less one per evicted worker) are ready; says so when it has to wait. */
async function waitForWorkers(
  membership: Membership,
  asked: number,
  timeoutMs: number,
  { log, signal, observer }: Pick<TrainerParts, 'log' | 'signal' | 'observer'>,
): Promise<WorkerChannel[]> {
  const minWorkers = membership.requiredWorkers(asked);
  let ready = membership.readyWorkers();
  if (ready.length >= minWorkers) return ready;
  observer.onActivity?.('waiting-for-workers');
  log(`waiting for workers: ${ready.length} of ${minWorkers} ready (timeout ${Math.round(timeoutMs / 1000)} s)`);
  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      membership.off('joined', onJoin);
      signal?.removeEventListener('abort', onAbort);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(
        new BatchlabError(
          'NO_WORKERS',
          `only ${membership.readyWorkers().length} of ${minWorkers} workers connected within ${Math.round(timeoutMs / 1000)} s (--worker-wait)`,
        ),
      );
    }, timeoutMs);
    const onJoin = (): void => {
      if (membership.readyWorkers().length < minWorkers) return;
      cleanup();
      resolve();
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal!.reason as Error);
    };
    membership.on('joined', onJoin);
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted) onAbort();
  });
  ready = membership.readyWorkers();
  log(`${ready.length} workers ready`);
  return ready;
}
