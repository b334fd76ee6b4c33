// What observers of training see: one StepRecord per applied step, evaluations, refusals,
// re-issues and accepted replies. The progress line, the metrics, the trace and the report
// totals are observers; the trainer, the gather and the re-issue path report to them.

import type { Evaluation } from '../shared/evaluate.js';
import type { GradientMessage } from '../shared/protocol.js';
import type { ReassignReason, RejectReason } from '../shared/reasons.js';
import type { NoiseScaleResult } from '../shared/statistics/noise-scale.js';
import type { StepStats } from './gather-round.js';

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
  /** Wall seconds per phase: dispatch, gather-wait, reduce, apply; with the sharded reducer also its exchange (within gather-wait). */
  phases: Record<'dispatch' | 'gather-wait' | 'reduce' | 'apply', number> &
    Partial<Record<'reduce-scatter' | 'all-gather', number>>;
}

/**
 * What the trainer is doing: waiting for workers (at a step's start, or mid-step with nobody left
 * to take re-issued work), running a step (from its dispatch), evaluating, or writing a checkpoint.
 */
export type TrainerActivity = 'waiting-for-workers' | 'stepping' | 'evaluating' | 'checkpointing';

export interface TrainerObserver {
  /** The trainer turned to `activity` (the liveness check reads it). */
  onActivity?(activity: TrainerActivity): void;
  onStep?(record: StepRecord): void;
  onEval?(step: number, evaluation: Evaluation): void;
  /** A refused reply or frame: `reason` is a RejectReason or a membership refusal (auth, bad_frame, …). */
  onReject?(reason: RejectReason, workerId: number): void;
  onReassign?(reason: ReassignReason, count: number): void;
  /** A reply was accepted at `receivedAtMs` (performance.now()). */
  onReply?(workerId: number, message: GradientMessage, receivedAtMs: number): void;
}

/** One observer that forwards every event to each of `observers` (nulls skipped), in order. */
export function combineObservers(observers: readonly (TrainerObserver | null | undefined)[]): TrainerObserver {
  const list = observers.filter((o): o is TrainerObserver => Boolean(o));
  return {
    onActivity: (activity) => list.forEach((o) => o.onActivity?.(activity)),
    onStep: (record) => list.forEach((o) => o.onStep?.(record)),
    onEval: (step, evaluation) => list.forEach((o) => o.onEval?.(step, evaluation)),
    onReject: (reason, workerId) => list.forEach((o) => o.onReject?.(reason, workerId)),
    onReassign: (reason, count) => list.forEach((o) => o.onReassign?.(reason, count)),
    onReply: (workerId, message, at) => list.forEach((o) => o.onReply?.(workerId, message, at)),
  };
}
