// One step's gather: which micro-batches are out with which worker, which replies came back,
// and the per-step statistics that travel with the gradients. Replies for another step, for a
// micro-batch not assigned to the sender, or repeated, are refused with a reason; a reply's body
// is checked and kept by the step's reduction, whichever reducer runs.

import { allFinite } from '../shared/finite.js';
import type { GradientMessage, MicroBatchSpec } from '../shared/protocol.js';
import type { ReplyRejectReason } from '../shared/reasons.js';
import type { StepReduction } from './reducer.js';

/** Per-step totals gathered from the replies. */
export interface StepStats {
  samples: number;
  lossSum: number;
  correct: number;
  /** Sum of compute milliseconds per worker. */
  computeMsByWorker: Map<number, number>;
  /** Samples computed per worker. */
  samplesByWorker: Map<number, number>;
  /** (samples, |g_k|^2) per micro-batch, in id order: input to the gradient noise scale. */
  sqNorms: { samples: number; sqNorm: number }[];
}

/** Mean over the step's workers of their compute seconds (0 when none replied). */
export function meanComputeSeconds(stats: StepStats): number {
  const computes = [...stats.computeMsByWorker.values()];
  return computes.reduce((a, b) => a + b, 0) / Math.max(1, computes.length) / 1000;
}

export class GatherRound {
  readonly step: number;
  private readonly owner = new Map<number, number>();
  private readonly received = new Map<number, GradientMessage>();
  private readonly specs: Map<number, MicroBatchSpec>;
  private resolve!: () => void;
  /** Settles when every micro-batch's reply is in (the reduction may still be finishing). */
  readonly done: Promise<void>;
  readonly computeMsByWorker = new Map<number, number>();
  readonly samplesByWorker = new Map<number, number>();

  /** `batchStatsLength`: values of the batch statistics every reply must carry (0: a model without batch norm, none). */
  constructor(
    microBatches: readonly MicroBatchSpec[],
    private readonly reduction: StepReduction,
    private readonly batchStatsLength = 0,
  ) {
    this.step = reduction.step;
    this.specs = new Map(microBatches.map((m) => [m.id, m]));
    this.done = new Promise((resolve) => (this.resolve = resolve));
  }

  /** Records that `workerId` is computing `specs`. */
  assign(workerId: number, specs: readonly MicroBatchSpec[]): void {
    for (const spec of specs) this.owner.set(spec.id, workerId);
  }

  /** Micro-batches handed to `workerId` that have not come back; they become unowned. */
  orphan(workerId: number): MicroBatchSpec[] {
    const lost: MicroBatchSpec[] = [];
    for (const [id, owner] of this.owner) {
      if (owner === workerId && !this.received.has(id)) {
        this.owner.delete(id);
        lost.push(this.specs.get(id)!);
      }
    }
    return lost.sort((a, b) => a.id - b.id);
  }

  /** Forgets the replies `workerId` sent (it still owns those micro-batches, now outstanding again). */
  revoke(workerId: number): void {
    for (const [id, message] of this.received) {
      if (this.owner.get(id) !== workerId) continue;
      this.received.delete(id);
      this.reduction.retract(id);
      this.computeMsByWorker.set(workerId, (this.computeMsByWorker.get(workerId) ?? 0) - message.computeMs);
      this.samplesByWorker.set(workerId, (this.samplesByWorker.get(workerId) ?? 0) - message.samples);
    }
    if (this.computeMsByWorker.get(workerId) === 0) this.computeMsByWorker.delete(workerId);
    if (this.samplesByWorker.get(workerId) === 0) this.samplesByWorker.delete(workerId);
  }

  /** Takes one outstanding micro-batch back from its owner (for re-issue); [] if already in. */
  release(microBatchId: number): MicroBatchSpec[] {
    if (this.received.has(microBatchId) || !this.owner.has(microBatchId)) return [];
    this.owner.delete(microBatchId);
    return [this.specs.get(microBatchId)!];
  }

  /** Whether every micro-batch's reply is in. */
  get isComplete(): boolean {
    return this.received.size === this.specs.size;
  }

  /** Workers that still hold micro-batches without a reply. */
  outstandingOwners(): number[] {
    const owners = new Set<number>();
    for (const [id, owner] of this.owner) if (!this.received.has(id)) owners.add(owner);
    return [...owners];
  }

  /** Accepts a reply and hands its body to the reduction, or returns why it is refused. */
  accept(workerId: number, message: GradientMessage, body: Float32Array | null): ReplyRejectReason | null {
    if (message.step !== this.step) return 'stale_step';
    const spec = this.specs.get(message.microBatchId);
    if (!spec || this.owner.get(message.microBatchId) !== workerId || message.samples !== spec.end - spec.start)
      return 'unassigned';
    if (this.received.has(message.microBatchId)) return 'duplicate';
    const bodyProblem = this.reduction.check(body) ?? this.checkBatchStats(message.batchStats);
    if (bodyProblem) return bodyProblem;
    if (!Number.isFinite(message.lossSum) || !Number.isFinite(message.sqNorm)) return 'non_finite';
    this.reduction.add(message.microBatchId, message.samples, body);
    this.received.set(message.microBatchId, message);
    this.computeMsByWorker.set(workerId, (this.computeMsByWorker.get(workerId) ?? 0) + message.computeMs);
    this.samplesByWorker.set(workerId, (this.samplesByWorker.get(workerId) ?? 0) + message.samples);
    if (this.received.size === this.specs.size) this.resolve();
    return null;
  }

  private checkBatchStats(stats: Float32Array | undefined): 'bad_shape' | 'non_finite' | null {
    if ((stats?.length ?? 0) !== this.batchStatsLength) return 'bad_shape';
    return !stats || allFinite(stats) ? null : 'non_finite';
  }

  /**
   * Each reply's batch statistics, in micro-batch-id order (empty for a model without batch
   * norm). A revoked reply is no longer here, and each id counts once. Call after `done`.
   */
  batchStats(): Float32Array[] {
    const ids = [...this.received.keys()].sort((a, b) => a - b);
    return ids.flatMap((id) => {
      const stats = this.received.get(id)!.batchStats;
      return stats ? [stats] : [];
    });
  }

  /** Totals over all replies, in micro-batch-id order. Call after `done`. */
  stats(): StepStats {
    const replies = [...this.received.values()].sort((a, b) => a.microBatchId - b.microBatchId);
    return {
      samples: replies.reduce((n, r) => n + r.samples, 0),
      lossSum: replies.reduce((n, r) => n + r.lossSum, 0),
      correct: replies.reduce((n, r) => n + r.correct, 0),
      computeMsByWorker: this.computeMsByWorker,
      samplesByWorker: this.samplesByWorker,
      sqNorms: replies.map((r) => ({ samples: r.samples, sqNorm: r.sqNorm })),
    };
  }
}
