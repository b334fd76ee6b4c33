// What the coordinator knows about each worker for scheduling: its measured throughput, its
// memory cap, which step's weights it holds, and whether it is quarantined for missing a step
// deadline. Kept apart from the connections so the split, dispatch and the quarantine rules can
// be tested on plain data.

import { updateThroughput, type SplitWorker } from './split.js';

interface WorkerState {
  /** Measured compute samples/s (EMA over replies after the first); null until then. */
  samplesPerSecond: number | null;
  maxMicroBatches: number | null;
  /** Step whose weights the worker holds (-1: none yet). */
  weightsStep: number;
  /** Gradient replies received (the first, with warm-up in it, is not measured). */
  replies: number;
  /** Micro-batches (step/id) sent to it and not answered yet, re-issued ones included (it still computes them). */
  owed: Set<string>;
  /** Missed a step deadline and has not caught up since: it gets no new work. */
  quarantined: boolean;
  /** Times late in a row: deadlines missed with no reply on time in between. */
  lateStreak: number;
  /** Date.now() of its last late mark or, while quarantined, of its last reply. */
  lastSignMs: number;
}

/** What the schedule reads from a gradient reply. */
export interface ReplyFacts {
  step: number;
  microBatchId: number;
  samples: number;
  computeMs: number;
}

function owedKey(step: number, microBatchId: number): string {
  return `${step}/${microBatchId}`;
}

/** What a reply did to its worker's quarantine. */
export type ReplyEffect = 'on-time' | 'still-owing' | 'released';

export class WorkerSchedule {
  private readonly states = new Map<number, WorkerState>();

  /** Starts tracking a worker that just joined. */
  add(workerId: number, maxMicroBatches: number | null): void {
    this.states.set(workerId, {
      samplesPerSecond: null,
      maxMicroBatches,
      weightsStep: -1,
      replies: 0,
      owed: new Set(),
      quarantined: false,
      lateStreak: 0,
      lastSignMs: 0,
    });
  }

  /** Forgets a worker that left. */
  remove(workerId: number): void {
    this.states.delete(workerId);
  }

  /**
   * Folds one reply's measured rate into the worker's throughput (after its first reply), and
   * settles what it owed for that micro-batch of that step.
   */
  recordReply(workerId: number, reply: ReplyFacts, nowMs = 0): ReplyEffect {
    const state = this.states.get(workerId);
    if (!state) return 'on-time';
    state.replies++;
    if (state.replies > 1)
      state.samplesPerSecond = updateThroughput(state.samplesPerSecond, reply.samples, reply.computeMs);
    state.owed.delete(owedKey(reply.step, reply.microBatchId));
    if (!state.quarantined) {
      state.lateStreak = 0;
      return 'on-time';
    }
    // A late reply: the worker is computing, just slowly. It takes work again once it owes none.
    state.lastSignMs = nowMs;
    if (state.owed.size > 0) return 'still-owing';
    state.quarantined = false;
    return 'released';
  }

  /** Records micro-batches `ids` of `step` sent to the worker. */
  recordWork(workerId: number, step: number, ids: readonly number[]): void {
    const state = this.states.get(workerId);
    if (state) for (const id of ids) state.owed.add(owedKey(step, id));
  }

  /** The worker missed a step deadline: quarantined until it has answered all it owes. Returns its late streak. */
  markLate(workerId: number, nowMs: number): number {
    const state = this.states.get(workerId);
    if (!state) return 0;
    state.quarantined = true;
    state.lateStreak++;
    state.lastSignMs = nowMs;
    return state.lateStreak;
  }

  /** Whether the worker is quarantined (no new work). */
  isQuarantined(workerId: number): boolean {
    return this.states.get(workerId)?.quarantined ?? false;
  }

  /** Quarantined workers, by id. */
  quarantined(): number[] {
    return [...this.states].filter(([, s]) => s.quarantined).map(([id]) => id);
  }

  /** Quarantined workers that still owe replies and gave no sign of life since `sinceMs`: late once more. */
  silentSince(sinceMs: number): number[] {
    return [...this.states]
      .filter(([, s]) => s.quarantined && s.owed.size > 0 && s.lastSignMs <= sinceMs)
      .map(([id]) => id)
      .sort((a, b) => a - b);
  }

  /** The split's view of `workerIds`, in the given order. */
  splitWorkers(workerIds: readonly number[]): SplitWorker[] {
    return workerIds.map((workerId) => {
      const state = this.states.get(workerId);
      return {
        workerId,
        samplesPerSecond: state?.samplesPerSecond ?? null,
        maxMicroBatches: state?.maxMicroBatches ?? null,
      };
    });
  }

  /** Step whose weights the worker holds (-1: none, or unknown worker). */
  weightsStep(workerId: number): number {
    return this.states.get(workerId)?.weightsStep ?? -1;
  }

  /** Records that the worker now holds the weights of `step`. */
  markWeights(workerId: number, step: number): void {
    const state = this.states.get(workerId);
    if (state) state.weightsStep = step;
  }
}
