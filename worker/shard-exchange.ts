// A worker's side of the sharded reducer, without sockets: reduce-scatter, then all-gather.
//
// Each micro-batch gradient sum this worker computes is cut at the plan's bounds and each slice
// goes to the shard's owner as soon as it is computed. An owner folds the slices of its shard in
// micro-batch-id order in float64 (OrderedSum, the star's code), so its mean shard has the star's
// bits; it then sends the shard to every peer. A worker holding every shard computes |mean|² in
// index order (the star's order again) and tells the coordinator `reduced`; on `commit` the
// caller applies the update with `mean`. Gradients stay until the step commits: a lost peer
// ends the attempt, and the next attempt re-sends them under a new plan.

import { performance } from 'node:perf_hooks';
import { allFinite } from '../shared/finite.js';
import { OrderedSum } from '../shared/ordered-sum.js';
import type { ExchangePlan, PeerSpec, ReducedMessage, ShardMessage, SliceMessage } from '../shared/protocol.js';
import type { ReplyRejectReason } from '../shared/reasons.js';

/** Where the exchange's frames go. */
export interface ExchangeLinks {
  /** Sends one frame to a peer; the body may be reused once this returns (it is copied into the frame). */
  sendToPeer(peer: PeerSpec, message: SliceMessage | ShardMessage, body: Float32Array): void;
  sendToCoordinator(message: ReducedMessage): void;
  /** Counts a frame refused when replayed from the early frames (the link counted the others). */
  refused(problem: PeerFrameProblem): void;
}

/** Why a peer frame is refused (counted under these reasons in batchlab_rejected_messages_total). */
export type PeerFrameProblem = Extract<
  ReplyRejectReason,
  'stale_step' | 'unassigned' | 'duplicate' | 'bad_shape' | 'non_finite'
>;

/** Frames that arrived before the plan they belong to; at most this many are kept. */
const EARLY_LIMIT = 4096;

interface Early {
  from: number;
  message: SliceMessage | ShardMessage;
  body: Float32Array;
}

export class ShardExchange {
  /** The step being computed (its weights are held), and its current attempt's plan. */
  private step = -1;
  /** The last step applied here: frames of it or before are late. */
  private lastCommitted = -1;
  private plan: ExchangePlan | null = null;
  /** This worker's shard index in the plan (-1: it computes but owns no shard). */
  private own = -1;
  private readonly grads = new Map<number, Float32Array>();
  private readonly pool: Float32Array[] = [];
  private readonly sums = new Map<number, OrderedSum>();
  private sum: OrderedSum | null = null;
  private readonly sliced = new Set<number>();
  /** Samples of each micro-batch of the plan, by id (looked up once per received slice). */
  private samplesById = new Map<number, number>();
  private readonly shardsIn = new Set<number>();
  private complete = false;
  private early: Early[] = [];
  /** The step's mean gradient, assembled from every shard. */
  readonly mean: Float32Array;
  private startedMs = 0;
  private ownDoneMs = 0;

  constructor(
    readonly paramCount: number,
    private readonly links: ExchangeLinks,
  ) {
    this.mean = new Float32Array(paramCount);
  }

  /** The plan in force (null before the first work of a step). */
  get current(): ExchangePlan | null {
    return this.plan;
  }

  /** Bytes the kept gradients hold (for the memory log). */
  get keptGradients(): number {
    return this.grads.size;
  }

  /**
   * Adopts `plan` for `step`: a new step forgets the last one's gradients; a newer attempt
   * restarts the exchange and re-sends every kept gradient. The same attempt again (re-issued
   * work) changes nothing.
   */
  begin(step: number, plan: ExchangePlan, selfId: number): void {
    if (step !== this.step) {
      for (const grad of this.grads.values()) this.pool.push(grad);
      this.grads.clear();
      this.step = step;
      this.plan = null;
    } else if (this.plan && plan.attempt <= this.plan.attempt) return;
    this.plan = plan;
    this.own = plan.peers.findIndex((p) => p.workerId === selfId);
    this.sliced.clear();
    this.samplesById = new Map(plan.microBatches.map((m) => [m.id, m.end - m.start]));
    this.shardsIn.clear();
    this.complete = false;
    this.startedMs = performance.now();
    this.ownDoneMs = 0;
    this.sum = null;
    if (this.own >= 0) {
      const length = plan.bounds[this.own + 1]! - plan.bounds[this.own]!;
      let sum = this.sums.get(length);
      if (!sum) this.sums.set(length, (sum = new OrderedSum(length)));
      sum.begin(plan.microBatches.map((m) => m.id));
      this.sum = sum;
    }
    for (const [id, grad] of [...this.grads].sort((a, b) => a[0] - b[0])) this.scatter(id, grad);
    const early = this.early;
    this.early = [];
    for (const frame of early) {
      const problem = this.receive(frame.from, frame.message, frame.body);
      if (problem) this.links.refused(problem);
    }
  }

  /** A model-sized array to compute a gradient into (reused after a commit). */
  takeBuffer(): Float32Array {
    return this.pool.pop() ?? new Float32Array(this.paramCount);
  }

  /**
   * Keeps micro-batch `microBatchId`'s gradient sum and sends its slices. A non-finite gradient
   * is neither kept nor sent: the coordinator refuses its statistics and re-issues it.
   */
  contribute(microBatchId: number, grad: Float32Array): void {
    if (!allFinite(grad) || this.grads.has(microBatchId)) {
      this.pool.push(grad);
      return;
    }
    this.grads.set(microBatchId, grad);
    if (this.plan) this.scatter(microBatchId, grad);
  }

  /** Takes a peer's frame; returns why it is refused, or null (used, or kept for a plan to come). */
  receive(from: number, message: SliceMessage | ShardMessage, body: Float32Array): PeerFrameProblem | null {
    const plan = this.plan;
    if (
      message.step <= this.lastCommitted ||
      message.step < this.step ||
      (plan && message.step === this.step && message.attempt < plan.attempt)
    )
      return 'stale_step';
    if (!plan || message.step > this.step || message.attempt > plan.attempt) {
      if (this.early.length >= EARLY_LIMIT) return 'stale_step';
      this.early.push({ from, message, body });
      return null;
    }
    if (message.shard >= plan.peers.length) return 'unassigned';
    // A mean shard is believed only from its owner.
    if (message.type === 'shard' && plan.peers[message.shard]!.workerId !== from) return 'unassigned';
    const length = plan.bounds[message.shard + 1]! - plan.bounds[message.shard]!;
    if (body.length !== length) return 'bad_shape';
    if (!allFinite(body)) return 'non_finite';
    return message.type === 'slice' ? this.foldSlice(message, body) : this.takeShard(message.shard, body);
  }

  /** Whether `attempt` of `step` has every shard (the coordinator commits only then). */
  isComplete(step: number, attempt: number): boolean {
    return this.complete && step === this.step && this.plan?.attempt === attempt;
  }

  /**
   * Frees the step's gradients after its update is applied. Frames of later steps that came
   * early (a faster peer already computes the next step) are kept for its plan.
   */
  committed(): void {
    const step = this.step;
    this.lastCommitted = Math.max(this.lastCommitted, step);
    this.forget();
    this.early = this.early.filter((frame) => frame.message.step > step);
  }

  /**
   * Forgets the step in progress: new weights, those of `weightsStep`, came from the coordinator.
   * Frames of earlier steps are late from now on; early frames of this one wait for their plan.
   */
  reset(weightsStep: number): void {
    this.forget();
    this.lastCommitted = weightsStep - 1;
    this.early = this.early.filter((frame) => frame.message.step > this.lastCommitted);
  }

  private forget(): void {
    for (const grad of this.grads.values()) this.pool.push(grad);
    this.grads.clear();
    this.plan = null;
    this.step = -1;
  }

  private scatter(microBatchId: number, grad: Float32Array): void {
    const plan = this.plan!;
    plan.peers.forEach((peer, shard) => {
      const slice = grad.subarray(plan.bounds[shard], plan.bounds[shard + 1]);
      const message: SliceMessage = { type: 'slice', step: this.step, attempt: plan.attempt, shard, microBatchId };
      if (shard === this.own) this.foldSlice(message, slice);
      else this.links.sendToPeer(peer, message, slice);
    });
  }

  private foldSlice(message: SliceMessage, body: Float32Array): PeerFrameProblem | null {
    const plan = this.plan!;
    if (message.shard !== this.own || !this.sum) return 'unassigned';
    const id = message.microBatchId;
    const samples = this.samplesById.get(id);
    if (samples === undefined) return 'unassigned';
    if (this.sliced.has(id)) return 'duplicate';
    this.sliced.add(id);
    this.sum.add(id, body, samples);
    if (!this.sum.isComplete) return null;
    this.ownDoneMs = performance.now();
    const { meanGrad } = this.sum.finish();
    const shard: ShardMessage = { type: 'shard', step: this.step, attempt: plan.attempt, shard: this.own };
    plan.peers.forEach((peer, i) => {
      if (i !== this.own) this.links.sendToPeer(peer, shard, meanGrad);
    });
    return this.takeShard(this.own, meanGrad);
  }

  private takeShard(shard: number, body: Float32Array): PeerFrameProblem | null {
    const plan = this.plan!;
    if (this.own < 0) return 'unassigned';
    if (this.shardsIn.has(shard)) return 'duplicate';
    this.shardsIn.add(shard);
    this.mean.set(body, plan.bounds[shard]);
    if (this.shardsIn.size < plan.peers.length) return null;
    this.complete = true;
    // The star squares the float32 mean in index order in float64: the same order gives the same bits.
    const mean = this.mean;
    let sqNorm = 0;
    for (let i = 0; i < mean.length; i++) sqNorm += mean[i]! * mean[i]!;
    const now = performance.now();
    const ownDone = this.ownDoneMs || now;
    this.links.sendToCoordinator({
      type: 'reduced',
      step: this.step,
      attempt: plan.attempt,
      sqNorm,
      scatterMs: ownDone - this.startedMs,
      gatherMs: now - ownDone,
    });
    return null;
  }
}
