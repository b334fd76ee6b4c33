// The reduction seam: one step-scoped, asynchronous interface that owns everything between
// "micro-batches assigned" and "new weights ready". The trainer begins a step with its plan,
// feeds the step's reduction the checked replies, and awaits its result; it never learns where
// the gradients were summed or where the update was applied. `StarReducer` (star-reducer.ts)
// sums on the coordinator; a sharded reducer would sum shards on the workers (docs/ARCHITECTURE.md).

import type { OptimizerState } from '../shared/optimizers/index.js';
import type { MicroBatchSpec, WorkMessage } from '../shared/protocol.js';
import type { ReplyRejectReason } from '../shared/reasons.js';

/** The reducers `--reducer` accepts. */
export const REDUCERS = ['star', 'sharded'] as const;
export type ReducerName = (typeof REDUCERS)[number];

/** One step as the trainer hands it to the reducer. */
export interface StepPlan {
  step: number;
  /** Every micro-batch of the step (ids fix the samples, whoever computes them). */
  microBatches: readonly MicroBatchSpec[];
  /** The learning rate of this step's update. */
  lr: number;
  /** The workers the step is first dispatched to, by ascending id (the sharded reducer's shard owners). */
  workers: readonly number[];
}

/** What a worker's `work` message carries besides its micro-batches. */
export interface WorkPayload {
  /** The weights to compute at, when the worker's copy is stale; null: it holds them already. */
  weights: Float32Array | null;
  /** Same key, same body: the encoder converts it once for every worker (f16). */
  bodyKey?: number;
  /** Further `work` fields (the sharded reducer's exchange plan and state layout). */
  fields?: Pick<WorkMessage, 'exchange' | 'state'>;
}

/** The step's outcome once the new weights are ready. */
export interface StepResult {
  /** Samples that contributed. */
  samples: number;
  /** |mean gradient|², of the float32 mean the update used. */
  sqNorm: number;
  /** Seconds after the last contribution: forming the mean, then applying the update. */
  reduceSeconds: number;
  applySeconds: number;
  /** Seconds of the sharded exchange's phases (the slowest worker's), when it ran. */
  exchangeSeconds?: { 'reduce-scatter': number; 'all-gather': number };
}

/** One step's reduction; created by `Reducer.beginStep`, abandoned when the step is. */
export interface StepReduction {
  readonly step: number;
  /** The payload for a worker that holds the weights of step `weightsStep` (-1: none). */
  payloadFor(weightsStep: number): WorkPayload;
  /** Whether worker `workerId`, holding the weights of `weightsStep` (-1: none), can be given micro-batches of this step. */
  canCompute(workerId: number, weightsStep: number): boolean;
  /**
   * Worker `workerId` was lost mid-step. True: the replies it already sent are void too (their
   * gradients left with it), so the gather re-issues them as well.
   */
  workerLost(workerId: number): boolean;
  /**
   * The step deadline passed with every reply in but no result (sharded: an exchange that stopped
   * moving): start the reduction over from what the workers kept. The star has nothing to redo.
   */
  restart(): void;
  /** The step was given up (the run stops): nothing of it may be applied from now on. */
  abandon(): void;
  /** Why a reply's body cannot be used (null: it can); called before `add`. */
  check(body: Float32Array | null): Extract<ReplyRejectReason, 'bad_shape' | 'non_finite'> | null;
  /**
   * Takes micro-batch `microBatchId`'s checked contribution; any order, each id once. The body
   * must stay unchanged until `result` settles.
   */
  add(microBatchId: number, samples: number, body: Float32Array | null): void;
  /** Takes back an `add` whose gradient was lost with its worker (after `workerLost` returned true). */
  retract(microBatchId: number): void;
  /** Settles once every micro-batch is in and the update is applied; rejects when that fails (the run stops). */
  readonly result: Promise<StepResult>;
}

/** The reducer of a run: star (on the coordinator) or sharded (among the workers). */
export interface Reducer {
  readonly name: string;
  /** Length of the flat parameter vector. */
  readonly paramCount: number;
  /** Starts `plan.step` (once whatever it needs first is fetched); a reduction of an earlier step that has not finished is abandoned. */
  beginStep(plan: StepPlan): Promise<StepReduction>;
  /** The weights after the last applied step (fetched from wherever they live). */
  weights(): Promise<Float32Array>;
  /** A copy of the optimizer state after the last applied step, for a checkpoint. */
  optimizerState(): Promise<OptimizerState>;
}
