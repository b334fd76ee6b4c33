// An in-memory worker for coordinator unit tests: a WorkerChannel that records what the
// coordinator sends it and answers work with deterministic gradients through Membership, so
// dispatch, gather, re-issue and the trainer run without sockets or processes.

import type { Membership } from '../../coordinator/membership.js';
import type { WorkerChannel, WorkerInfo } from '../../coordinator/worker-channel.js';
import type { GradientMessage, Message, MicroBatchSpec, WorkMessage } from '../../shared/protocol.js';

/** The gradient sum every worker computes for micro-batch `spec` of `step`: a function of both only. */
export function fakeGradient(step: number, spec: MicroBatchSpec, paramCount: number): Float32Array {
  const samples = spec.end - spec.start;
  return Float32Array.from({ length: paramCount }, (_, i) => Math.sin(step * 31 + spec.id * 7 + i) * samples * 1e-2);
}

/** The reply message for `spec` (loss and correct counts that depend on the micro-batch only). */
export function fakeReply(step: number, spec: MicroBatchSpec, extra: Partial<GradientMessage> = {}): GradientMessage {
  const samples = spec.end - spec.start;
  return {
    type: 'gradient',
    step,
    microBatchId: spec.id,
    samples,
    lossSum: 0.25 * samples + spec.id,
    correct: samples - 1,
    computeMs: 5,
    sqNorm: 1 + spec.id,
    ...extra,
  };
}

export class InMemoryChannel implements WorkerChannel {
  readonly info: WorkerInfo;
  /** Every message sent to this worker, with a copy of its body. */
  readonly received: { message: Message; body: Float32Array | null }[] = [];
  /** Work received and not yet answered, as (step, micro-batch). */
  readonly outstanding: { step: number; spec: MicroBatchSpec }[] = [];
  isOpen = true;
  shutdownReason: string | null = null;
  evictReason: string | null = null;

  constructor(
    readonly workerId: number,
    private readonly membership: Membership,
    private readonly paramCount: number,
    info: Partial<WorkerInfo> = {},
  ) {
    this.info = {
      name: `mem-${workerId}`,
      backend: 'none',
      device: 'memory',
      maxChunk: 1024,
      metricsTarget: null,
      maxMicroBatches: null,
      peerAddress: null,
      ...info,
    };
  }

  send(message: Message, body: Float32Array | null = null): boolean {
    if (!this.isOpen) return false;
    this.received.push({ message, body: body ? body.slice() : null });
    if (message.type === 'work')
      for (const spec of message.microBatches) this.outstanding.push({ step: message.step, spec });
    return true;
  }

  shutdown(reason: string, _code?: string): Promise<void> {
    this.isOpen = false;
    this.shutdownReason = reason;
    return Promise.resolve();
  }

  /** Eviction closes the connection: membership reports the loss, as the socket's close would. */
  evict(reason: string): void {
    this.evictReason = reason;
    this.disconnect(reason);
  }

  /** The work messages received, in order. */
  works(): WorkMessage[] {
    return this.received.map((r) => r.message).filter((m): m is WorkMessage => m.type === 'work');
  }

  /** Micro-batch ids received as work for `step`. */
  idsFor(step: number): number[] {
    return this.works()
      .filter((w) => w.step === step)
      .flatMap((w) => w.microBatches.map((m) => m.id));
  }

  /** Answers outstanding micro-batch `id` (or every outstanding one) with its deterministic gradient. */
  answer(id?: number, extra: Partial<GradientMessage> = {}): void {
    const due = this.outstanding.filter((o) => id === undefined || o.spec.id === id);
    for (const item of due) {
      this.outstanding.splice(this.outstanding.indexOf(item), 1);
      this.sendReply(item.step, item.spec, extra);
    }
  }

  /** Sends a reply for `spec` of `step` whether or not it was assigned (late, duplicate, forged). */
  sendReply(step: number, spec: MicroBatchSpec, extra: Partial<GradientMessage> = {}, body?: Float32Array): void {
    this.membership.receive(this, fakeReply(step, spec, extra), body ?? fakeGradient(step, spec, this.paramCount));
  }

  /** The connection drops: membership reports the loss. */
  disconnect(reason = 'test disconnect'): void {
    this.isOpen = false;
    this.membership.leave(this, reason);
  }
}
