// Re-issue within a step: a worker's outstanding micro-batches go to the others when it is lost,
// misses the step deadline, or returns non-finite values. Micro-batch ids fix the samples, so the
// step's result does not change. With nobody left to take the work, it waits for a worker to join.
// A worker that misses the deadline is also marked late (quarantined; membership.ts).

import { BatchlabError } from '../shared/errors.js';
import type { MicroBatchSpec } from '../shared/protocol.js';
import { REASSIGN_REASON_FOR } from '../shared/reasons.js';
import { dispatch, type DispatchTarget } from './dispatch.js';
import { splitMicroBatches, type BalanceMode } from './split.js';
import type { TrainerObserver } from './trainer-observer.js';
import type { WorkerChannel } from './worker-channel.js';

export interface ReissueContext extends DispatchTarget {
  /** How re-issued micro-batches are shared among the remaining workers. */
  balance: BalanceMode;
  /** With no live worker left, how long to wait for one before stopping the run. */
  workerWaitTimeoutMs: number;
  /** Evict a worker late this many times in a row (0: never). */
  evictAfter: number;
  observer: TrainerObserver;
  log: (line: string) => void;
  /** Ends the step with an error (divergence, no worker came back). */
  fail: (error: BatchlabError) => void;
}

export class Reissuer {
  /** Workers that returned non-finite values, per micro-batch id. */
  private readonly poisoned = new Map<number, Set<number>>();
  /** Work waiting for a worker to join: its listener and its --worker-wait timer. */
  private readonly waiting: { listener: () => void; timer: NodeJS.Timeout }[] = [];

  constructor(private readonly ctx: ReissueContext) {}

  /** A worker left: everything it held without replying goes to the others. */
  onLost(worker: WorkerChannel, why: string): void {
    const orphans = this.ctx.round.orphan(worker.workerId);
    if (orphans.length === 0) return;
    const fault = new BatchlabError(
      'WORKER_LOST',
      `step ${this.ctx.round.step}: worker ${describe(worker)} lost: ${why}; re-issuing micro-batches ${ids(orphans)}`,
    );
    this.reissue(orphans, fault, worker.workerId);
  }

  /** The step deadline passed: work still out with a worker goes to the others, if any. */
  onDeadline(deadlineMs: number): void {
    const { membership, round } = this.ctx;
    const live = membership.readyWorkers();
    for (const workerId of round.outstandingOwners()) {
      // Nobody else to hand it to: taking the work back would only queue it twice.
      if (live.every((w) => w.workerId === workerId)) continue;
      const late = round.orphan(workerId);
      const worker = membership.get(workerId);
      const who = worker ? describe(worker) : String(workerId);
      const fault = new BatchlabError(
        'TIMEOUT',
        `step ${round.step}: worker ${who} did not answer micro-batches ${ids(late)} within ${(deadlineMs / 1000).toFixed(1)} s; re-issuing them`,
      );
      this.reissue(late, fault, workerId);
      // After the re-issue: eviction closes its connection, and the loss would find nothing left to re-issue.
      membership.markLate(workerId, deadlineMs, this.ctx.evictAfter);
    }
  }

  /** A reply had NaN or Inf: recompute elsewhere; the same on two workers means divergence. */
  onNonFinite(worker: WorkerChannel, microBatchId: number): void {
    const { round, membership } = this.ctx;
    const culprits = this.poisoned.get(microBatchId) ?? new Set<number>();
    const repeated = culprits.has(worker.workerId);
    culprits.add(worker.workerId);
    this.poisoned.set(microBatchId, culprits);
    const untried = membership.readyWorkers().filter((w) => !culprits.has(w.workerId));
    if (culprits.size >= 2 || (repeated && untried.length === 0)) {
      this.ctx.fail(
        new BatchlabError(
          'NON_FINITE',
          `step ${round.step}: micro-batch ${microBatchId} gave non-finite values on two workers; the run diverged (lower --lr?)`,
        ),
      );
      return;
    }
    const fault = new BatchlabError(
      'NON_FINITE_REPLY',
      `step ${round.step}: worker ${describe(worker)} sent non-finite values for micro-batch ${microBatchId}; re-issuing it`,
    );
    this.reissue(round.release(microBatchId), fault, worker.workerId);
  }

  /** Stops waiting for workers to join; call when the step ends. */
  dispose(): void {
    for (const { listener, timer } of this.waiting) {
      clearTimeout(timer);
      this.ctx.membership.off('joined', listener);
    }
    this.waiting.length = 0;
  }

  /** Sends `specs` to live workers other than `avoid` (or to `avoid` when it is alone). */
  private reissue(specs: MicroBatchSpec[], fault: BatchlabError, avoid: number | null, announce = true): void {
    const { membership, observer, log } = this.ctx;
    const reason = REASSIGN_REASON_FOR[fault.code];
    if (specs.length === 0 || !reason) return;
    if (announce) log(fault.message);
    // A worker that cannot get this step's weights (sharded: the coordinator does not hold them) cannot help.
    // A quarantined worker is skipped (late work would only queue behind its own).
    const live = membership
      .workingWorkers()
      .filter((w) => this.ctx.reduction.canCompute(w.workerId, membership.schedule.weightsStep(w.workerId)));
    const others = live.filter((w) => w.workerId !== avoid);
    const targets = others.length > 0 ? others : live;
    if (targets.length === 0) return this.waitForWorker(specs, fault);
    if (this.waiting.length) observer.onActivity?.('stepping');
    observer.onReassign?.(reason, specs.length);
    const workers = membership.schedule.splitWorkers(targets.map((w) => w.workerId));
    dispatch(this.ctx, splitMicroBatches(specs, workers, this.ctx.balance));
  }

  private waitForWorker(specs: MicroBatchSpec[], fault: BatchlabError): void {
    const { membership, round, workerWaitTimeoutMs, log, observer } = this.ctx;
    const seconds = Math.round(workerWaitTimeoutMs / 1000);
    observer.onActivity?.('waiting-for-workers');
    log(
      `step ${round.step}: no live worker for micro-batches ${ids(specs)}; paused until one joins (--worker-wait ${seconds} s)`,
    );
    const entry = {
      listener: () => {
        clearTimeout(entry.timer);
        this.reissue(specs, fault, null, false);
      },
      timer: setTimeout(() => {
        membership.off('joined', entry.listener);
        this.ctx.fail(
          new BatchlabError(
            'NO_WORKERS',
            `step ${round.step}: no worker came back within ${seconds} s (--worker-wait)`,
          ),
        );
      }, workerWaitTimeoutMs),
    };
    this.waiting.push(entry);
    membership.once('joined', entry.listener);
  }
}

function describe(worker: WorkerChannel): string {
  return `${worker.workerId} (${worker.info.name})`;
}

function ids(specs: readonly MicroBatchSpec[]): string {
  return specs.map((m) => m.id).join(',');
}
