// Gathering one step: feeds replies into the round until every micro-batch is in, and re-issues
// work within the same step when a worker is lost, misses the step deadline, or returns a
// non-finite gradient. Micro-batch ids fix the samples, so the step's result does not change.

import { BatchlabError } from '../shared/errors.js';
import type { GradientMessage, MicroBatchSpec } from '../shared/protocol.js';
import { dispatch } from './dispatch.js';
import type { GatherRound } from './gather-round.js';
import type { Membership, WorkerConnection } from './membership.js';
import { splitMicroBatches, type BalanceMode } from './split.js';
import type { TrainerObserver } from './trainer.js';

export type ReassignReason = 'worker_lost' | 'timeout' | 'non_finite';

export interface GatherContext {
  membership: Membership;
  round: GatherRound;
  weights: Float32Array;
  globalBatchSize: number;
  /** How re-issued micro-batches are shared among the remaining workers. */
  balance: BalanceMode;
  /** Re-issue whatever is still out after this long. */
  deadlineMs: number;
  /** With no live worker left, how long to wait for one before stopping the run. */
  workerWaitTimeoutMs: number;
  observer: TrainerObserver;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** Resolves when the round is complete; rejects on abort or when the run diverged. */
export async function gather(ctx: GatherContext): Promise<void> {
  const { membership, round, observer, log } = ctx;
  /** Workers that returned non-finite values, per micro-batch id. */
  const poisoned = new Map<number, Set<number>>();
  let fail: (error: unknown) => void = () => {};
  const failed = new Promise<never>((_resolve, reject) => (fail = reject));
  // Promise.race below handles the rejection; this keeps a late one from going unhandled.
  failed.catch(() => {});

  const waiting: { listener: () => void; timer: NodeJS.Timeout }[] = [];
  /** Sends `specs` to live workers, avoiding `avoid` when anyone else is there. */
  const reissue = (specs: MicroBatchSpec[], reason: ReassignReason, avoid: number | null): void => {
    if (specs.length === 0) return;
    const live = membership.readyWorkers();
    const others = live.filter((w) => w.workerId !== avoid);
    const targets = others.length > 0 ? others : live;
    if (targets.length === 0) {
      log(`step ${round.step}: no live worker for micro-batches ${ids(specs)}; paused until one joins (--worker-wait ${Math.round(ctx.workerWaitTimeoutMs / 1000)} s)`);
      const entry = {
        listener: () => {
          clearTimeout(entry.timer);
          reissue(specs, reason, null);
        },
        timer: setTimeout(() => {
          membership.off('joined', entry.listener);
          fail(new BatchlabError('NO_WORKERS', `step ${round.step}: no worker came back within ${Math.round(ctx.workerWaitTimeoutMs / 1000)} s (--worker-wait)`));
        }, ctx.workerWaitTimeoutMs),
      };
      waiting.push(entry);
      membership.once('joined', entry.listener);
      return;
    }
    observer.onReassign?.(reason, specs.length);
    dispatch(membership, round, splitMicroBatches(specs, targets, ctx.balance), ctx.weights, ctx.globalBatchSize);
  };

  const onGradient = (worker: WorkerConnection, message: GradientMessage, body: Float32Array): void => {
    const reason = round.accept(worker.workerId, message, body);
    if (reason === null) {
      observer.onReply?.(worker.workerId, message, performance.now());
      return;
    }
    observer.onReject?.(reason, worker.workerId);
    if (reason !== 'non_finite') return;
    // One worker may be faulty: recompute elsewhere. Two workers at the same weights: divergence.
    const culprits = poisoned.get(message.microBatchId) ?? new Set<number>();
    const repeated = culprits.has(worker.workerId);
    culprits.add(worker.workerId);
    poisoned.set(message.microBatchId, culprits);
    const untried = membership.readyWorkers().filter((w) => !culprits.has(w.workerId));
    if (culprits.size >= 2 || (repeated && untried.length === 0)) {
      fail(new BatchlabError('NON_FINITE', `step ${round.step}: micro-batch ${message.microBatchId} gave non-finite values on two workers; the run diverged (lower --lr?)`));
      return;
    }
    log(`step ${round.step}: worker ${worker.workerId} (${worker.name}) sent non-finite values for micro-batch ${message.microBatchId}; re-issuing it`);
    reissue(round.release(message.microBatchId), 'non_finite', worker.workerId);
  };

  const onLost = (worker: WorkerConnection, why: string): void => {
    const orphans = round.orphan(worker.workerId);
    if (orphans.length) log(`step ${round.step}: worker ${worker.workerId} (${worker.name}) lost: ${why}; re-issuing micro-batches ${ids(orphans)}`);
    reissue(orphans, 'worker_lost', worker.workerId);
  };

  let timer: NodeJS.Timeout | null = null;
  const armDeadline = (): void => {
    timer = setTimeout(() => {
      const live = membership.readyWorkers();
      for (const workerId of round.outstandingOwners()) {
        // Nobody else to hand it to: taking the work back would only queue it twice.
        if (live.every((w) => w.workerId === workerId)) continue;
        const late = round.orphan(workerId);
        const worker = membership.workers.get(workerId);
        log(`step ${round.step}: worker ${workerId}${worker ? ` (${worker.name})` : ''} did not answer micro-batches ${ids(late)} within ${(ctx.deadlineMs / 1000).toFixed(1)} s; re-issuing them`);
        reissue(late, 'timeout', workerId);
      }
      armDeadline();
    }, ctx.deadlineMs);
  };

  const onAbort = (): void => fail(ctx.signal!.reason);
  membership.on('gradient', onGradient);
  membership.on('lost', onLost);
  ctx.signal?.addEventListener('abort', onAbort);
  armDeadline();
  try {
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    await Promise.race([round.done, failed]);
  } finally {
    if (timer) clearTimeout(timer);
    for (const { listener, timer: waitTimer } of waiting) {
      clearTimeout(waitTimer);
      membership.off('joined', listener);
    }
    membership.off('gradient', onGradient);
    membership.off('lost', onLost);
    ctx.signal?.removeEventListener('abort', onAbort);
  }
}

function ids(specs: readonly MicroBatchSpec[]): string {
  return specs.map((m) => m.id).join(',');
}
