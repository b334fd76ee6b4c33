// The step timeline: a Chrome trace (chrome://tracing, Perfetto) with one track for the
// coordinator (steps and their phases, evaluations) and one per worker (micro-batch compute),
// so a straggler shows at a glance. Format: the Trace Event Format's "X" complete events.

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { GradientMessage } from '../shared/protocol.js';
import type { StepRecord, TrainerObserver } from './trainer-observer.js';

/** One Trace Event Format record. */
export interface TraceEvent {
  name: string;
  ph: 'X' | 'M';
  /** Microseconds since the trace began. */
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  cat?: string;
  args?: Record<string, unknown>;
}

const PID = 1;
const COORDINATOR_TID = 0;
/** Track of the sharded exchange (worker ids start at 1, so no worker shares it). */
const EXCHANGE_TID = 1_000_000;

export class TraceRecorder implements TrainerObserver {
  private readonly events: TraceEvent[] = [];
  private readonly named = new Set<number>();

  constructor(
    runName: string,
    private readonly originMs = performance.now(),
  ) {
    this.events.push({ name: 'process_name', ph: 'M', ts: 0, pid: PID, tid: COORDINATOR_TID, args: { name: runName } });
    this.nameTrack(COORDINATOR_TID, 'coordinator');
  }

  /** Names worker `workerId`'s track (first name wins). */
  nameWorker(workerId: number, name: string): void {
    this.nameTrack(workerId, `worker ${workerId} (${name})`);
  }

  /** A span on the coordinator's track, e.g. an evaluation. */
  addSpan(name: string, startMs: number, endMs: number, args: Record<string, unknown> = {}): void {
    this.events.push(this.span(name, COORDINATOR_TID, startMs, endMs - startMs, 'coordinator', args));
  }

  onStep(record: StepRecord): void {
    const total = record.wallSeconds * 1000;
    this.events.push(
      this.span(`step ${record.step}`, COORDINATOR_TID, record.startedAtMs, total, 'step', {
        step: record.step,
        loss: record.loss,
        workers: record.workers,
      }),
    );
    const { 'reduce-scatter': scatter, 'all-gather': allGather, ...phases } = record.phases;
    let at = record.startedAtMs;
    for (const [phase, seconds] of Object.entries(phases)) {
      this.events.push(this.span(phase, COORDINATOR_TID, at, seconds * 1000, 'phase', { step: record.step }));
      at += seconds * 1000;
    }
    if (scatter === undefined || allGather === undefined) return;
    // The sharded exchange happens inside gather-wait, on the workers: its own track, ending where gather-wait ends.
    this.nameTrack(EXCHANGE_TID, 'sharded exchange (slowest worker)');
    const end = record.startedAtMs + (record.phases.dispatch + record.phases['gather-wait']) * 1000;
    const args = { step: record.step };
    this.events.push(this.span('all-gather', EXCHANGE_TID, end - allGather * 1000, allGather * 1000, 'exchange', args));
    this.events.push(
      this.span('reduce-scatter', EXCHANGE_TID, end - (allGather + scatter) * 1000, scatter * 1000, 'exchange', args),
    );
  }

  /**
   * A worker's micro-batch. Workers' clocks are not the coordinator's, so the span is placed
   * to end when the reply arrived and to last the compute time the worker reported: it is late
   * by the reply's transit time, never longer than the real compute.
   */
  onReply(workerId: number, message: GradientMessage, receivedAtMs: number): void {
    this.nameTrack(workerId, `worker ${workerId}`);
    this.events.push(
      this.span(
        `step ${message.step} · mb ${message.microBatchId}`,
        workerId,
        receivedAtMs - message.computeMs,
        message.computeMs,
        'compute',
        {
          step: message.step,
          microBatchId: message.microBatchId,
          samples: message.samples,
        },
      ),
    );
  }

  /** The trace as Chrome-trace JSON. */
  toJSON(): { traceEvents: TraceEvent[]; displayTimeUnit: 'ms' } {
    return { traceEvents: this.events, displayTimeUnit: 'ms' };
  }

  /** Writes the trace to `path` (temp file + rename). */
  async write(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(`${path}.tmp`, JSON.stringify(this.toJSON()));
    await rename(`${path}.tmp`, path);
  }

  private nameTrack(tid: number, name: string): void {
    if (this.named.has(tid)) return;
    this.named.add(tid);
    this.events.push({ name: 'thread_name', ph: 'M', ts: 0, pid: PID, tid, args: { name } });
    this.events.push({ name: 'thread_sort_index', ph: 'M', ts: 0, pid: PID, tid, args: { sort_index: tid } });
  }

  private span(
    name: string,
    tid: number,
    startMs: number,
    durationMs: number,
    cat: string,
    args: Record<string, unknown>,
  ): TraceEvent {
    return {
      name,
      ph: 'X',
      ts: Math.round((startMs - this.originMs) * 1000),
      dur: Math.max(0, Math.round(durationMs * 1000)),
      pid: PID,
      tid,
      cat,
      args,
    };
  }
}
