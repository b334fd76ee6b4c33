// Gathering one step: feeds replies into the round until every micro-batch is in and the step's
// reduction has its result, re-issuing work (reissue.ts) when a worker is lost, misses the step
// deadline, or returns a non-finite gradient. Each deadline also counts quarantined workers that
// stay silent as late once more (membership.ts).

import type { BatchlabError } from '../shared/errors.js';
import type { GradientMessage } from '../shared/protocol.js';
import type { StepResult } from './reducer.js';
import { Reissuer, type ReissueContext } from './reissue.js';
import type { WorkerChannel } from './worker-channel.js';

export interface GatherContext extends Omit<ReissueContext, 'fail'> {
  /** Re-issue whatever is still out after this long (and again after each further period). */
  deadlineMs: number;
  signal?: AbortSignal;
}

/** Resolves with the step's result; rejects on abort, divergence, or no worker within --worker-wait. */
export async function gather(ctx: GatherContext): Promise<StepResult> {
  const { membership, round, reduction, observer } = ctx;
  let fail: (error: unknown) => void = () => {};
  const failed = new Promise<never>((_resolve, reject) => (fail = reject));
  // Promise.race below handles the rejection; this keeps a late one from going unhandled.
  failed.catch(() => {});
  const reissuer = new Reissuer({ ...ctx, fail: (error: BatchlabError) => fail(error) });

  const onGradient = (worker: WorkerChannel, message: GradientMessage, body: Float32Array | null): void => {
    // Taken before accept(): the last reply's accept also applies the update.
    const receivedAtMs = performance.now();
    const reason = round.accept(worker.workerId, message, body);
    if (reason === null) return observer.onReply?.(worker.workerId, message, receivedAtMs);
    observer.onReject?.(reason, worker.workerId);
    if (reason === 'non_finite') reissuer.onNonFinite(worker, message.microBatchId);
  };
  const onLost = (worker: WorkerChannel, why: string): void => {
    // Sharded: the gradients of its replies left with it, so they are computed again as well.
    if (reduction.workerLost(worker.workerId)) round.revoke(worker.workerId);
    reissuer.onLost(worker, why);
  };
  const deadline = setInterval(() => {
    // Every reply in and still no result: the reduction itself stalled (sharded), not a worker's compute.
    if (round.isComplete) reduction.restart();
    else reissuer.onDeadline(ctx.deadlineMs);
    membership.checkSilent(ctx.deadlineMs, ctx.evictAfter);
  }, ctx.deadlineMs);
  const onAbort = (): void => fail(ctx.signal!.reason);
  membership.setGradientHandler(onGradient);
  membership.on('lost', onLost);
  ctx.signal?.addEventListener('abort', onAbort);
  try {
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    const [, result] = await Promise.race([Promise.all([round.done, reduction.result]), failed]);
    return result;
  } catch (error) {
    // Sharded: a late `reduced` must not commit a step the run gave up (its checkpoint holds the step before).
    reduction.abandon();
    throw error;
  } finally {
    clearInterval(deadline);
    reissuer.dispose();
    membership.setGradientHandler(null);
    membership.off('lost', onLost);
    ctx.signal?.removeEventListener('abort', onAbort);
  }
}
