// Membership: the workers taking part in the run, whatever carries their frames. It records
// joins and losses, keeps each worker's scheduling state, and routes gradient replies to the
// gather of the step in progress; between steps a reply is late and refused as stale. A worker
// that misses a step deadline is quarantined (no new work) until it has answered what it owes,
// and evicted when late too many times in a row.

import { EventEmitter } from 'node:events';
import { describeError } from '../shared/errors.js';
import type { GradientMessage, ProbeResultMessage, ReducedMessage, StateMessage } from '../shared/protocol.js';
import type { RejectReason } from '../shared/reasons.js';
import type { WorkerChannel } from './worker-channel.js';
import { WorkerSchedule } from './worker-schedule.js';

export interface MembershipEvents {
  joined: [worker: WorkerChannel];
  lost: [worker: WorkerChannel, reason: string];
  rejected: [reason: RejectReason, detail: string];
  /** It missed a step deadline (`streak` times in a row) and is quarantined. */
  late: [worker: WorkerChannel, streak: number];
  evicted: [worker: WorkerChannel, reason: string];
}

/** Receives the gradient replies of the step being gathered. */
export type GradientHandler = (worker: WorkerChannel, message: GradientMessage, body: Float32Array | null) => void;

/** What a worker tells the reducer (sharded): its exchange finished, its state, or its probe. */
export type ReducerReply = ReducedMessage | StateMessage | ProbeResultMessage;
export type ReducerReplyHandler = (worker: WorkerChannel, message: ReducerReply, body: Float32Array | null) => void;

export class Membership extends EventEmitter<MembershipEvents> {
  readonly schedule = new WorkerSchedule();
  private readonly workers = new Map<number, WorkerChannel>();
  private gradientHandler: GradientHandler | null = null;
  private reducerHandler: ReducerReplyHandler | null = null;
  private closed = false;
  /** Workers evicted, or gone for good by their own report (OUT_OF_MEMORY), so far: a step no longer waits for them (see `requiredWorkers`). */
  private evictedCount = 0;

  constructor(private readonly log: (line: string) => void) {
    super();
  }

  /** Live workers that finished the handshake, by ascending id (the split's order). */
  readyWorkers(): WorkerChannel[] {
    return [...this.workers.values()].sort((a, b) => a.workerId - b.workerId);
  }

  /** Ready workers that take new work: those not quarantined (all of them if every one is). */
  workingWorkers(): WorkerChannel[] {
    const ready = this.readyWorkers();
    const working = ready.filter((w) => !this.schedule.isQuarantined(w.workerId));
    return working.length > 0 ? working : ready;
  }

  /** Workers a step waits for: `minWorkers` less one per eviction or departure for good, at least one. */
  requiredWorkers(minWorkers: number): number {
    return Math.max(1, minWorkers - this.evictedCount);
  }

  /**
   * `workerId` missed a step deadline: quarantined (no new work until it has answered what it
   * owes). Late `evictAfter` times in a row (0: never), it is evicted.
   */
  markLate(workerId: number, deadlineMs: number, evictAfter: number): void {
    const worker = this.workers.get(workerId);
    if (!worker || this.closed) return;
    const streak = this.schedule.markLate(workerId, Date.now());
    this.emitSafely('late', worker, streak);
    if (evictAfter > 0 && streak >= evictAfter)
      this.evict(
        worker,
        `late ${streak === 1 ? 'once' : `${streak} times in a row`} (step deadline ${(deadlineMs / 1000).toFixed(1)} s)`,
      );
  }

  /** A quarantined worker that still owes replies and stayed silent for another deadline is late again. */
  checkSilent(deadlineMs: number, evictAfter: number): void {
    for (const workerId of this.schedule.silentSince(Date.now() - deadlineMs))
      this.markLate(workerId, deadlineMs, evictAfter);
  }

  /** Closes the worker's connection with `reason`; its loss follows when the connection ends. */
  evict(worker: WorkerChannel, reason: string): void {
    if (!this.workers.has(worker.workerId)) return;
    this.evictedCount++;
    this.log(`worker ${worker.workerId} (${worker.info.name}) evicted: ${reason}`);
    this.emitSafely('evicted', worker, reason);
    worker.evict(`evicted: ${reason}`);
  }

  /**
   * A worker that said it cannot work in this run (its memory cannot hold one sample, or its
   * chunk): like an evicted one it will not come back, so steps stop waiting for it. Its loss (and
   * the re-issue of its work) follows when its connection ends.
   */
  departForGood(): void {
    this.evictedCount++;
  }

  /** The live worker with this id, if any. */
  get(workerId: number): WorkerChannel | undefined {
    return this.workers.get(workerId);
  }

  /** A worker finished its handshake (data and model loaded): it takes work from the next split. Ignored after close. */
  join(worker: WorkerChannel): void {
    if (this.closed) return;
    this.workers.set(worker.workerId, worker);
    this.schedule.add(worker.workerId, worker.info.maxMicroBatches);
    this.emitSafely('joined', worker);
  }

  /** A joined worker's connection ended; its outstanding work is re-issued by the gather. */
  leave(worker: WorkerChannel, reason: string): void {
    if (!this.workers.delete(worker.workerId)) return;
    this.schedule.remove(worker.workerId);
    if (!this.closed) this.emitSafely('lost', worker, reason);
  }

  /** A gradient reply from a joined worker. */
  receive(worker: WorkerChannel, message: GradientMessage, body: Float32Array | null): void {
    const effect = this.schedule.recordReply(worker.workerId, message, Date.now());
    if (effect === 'released')
      this.log(`worker ${worker.workerId} (${worker.info.name}) answered its late work; it takes work again`);
    const handler = this.gradientHandler;
    // Between steps (evaluation, a checkpoint write) no gather listens: the reply is late.
    if (!handler) this.reject('stale_step', `worker ${worker.workerId}: reply for step ${message.step} between steps`);
    else this.callSafely('gradient', () => handler(worker, message, body));
  }

  /** A message for the reducer; refused as unexpected when the run's reducer takes none. */
  receiveReducerReply(worker: WorkerChannel, message: ReducerReply, body: Float32Array | null): void {
    const handler = this.reducerHandler;
    if (!handler) this.reject('unassigned', `worker ${worker.workerId}: ${message.type} but the reducer expects none`);
    else this.callSafely(message.type, () => handler(worker, message, body));
  }

  /** Routes reducer messages (`reduced`, `state`, `probe-result`) to `handler`. */
  setReducerHandler(handler: ReducerReplyHandler | null): void {
    this.reducerHandler = handler;
  }

  /** Counts a refused connection, frame or reply. */
  reject(reason: RejectReason, detail: string): void {
    this.emit('rejected', reason, detail);
  }

  /** Routes replies to `handler` until it is replaced or cleared (null). */
  setGradientHandler(handler: GradientHandler | null): void {
    this.gradientHandler = handler;
  }

  /** Tells every worker to exit with `reason` (and `code` when the run failed); no loss is reported after this. Idempotent. */
  async close(reason: string, code?: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.readyWorkers().map((w) => w.shutdown(reason, code)));
  }

  private emitSafely<K extends keyof MembershipEvents>(event: K, ...args: MembershipEvents[K]): void {
    this.callSafely(event, () => this.emit(event, ...(args as never)));
  }

  /** Runs the coordinator's own handler; its failure is a coordinator bug, not the worker's. */
  private callSafely(what: string, handle: () => void): void {
    try {
      handle();
    } catch (error) {
      this.log(`internal error while handling ${what}: ${describeError(error)}`);
    }
  }
}
