// What the coordinator knows about each worker for scheduling: its measured throughput, its
// memory cap, and which step's weights it holds. Kept apart from the connections so the split
// and dispatch can be tested on plain data.

import { updateThroughput, type SplitWorker } from './split.js';

interface WorkerState {
  /** Measured compute samples/s (EMA over replies after the first); null until then. */
  samplesPerSecond: number | null;
  maxMicroBatches: number | null;
  /** Step whose weights the worker holds (-1: none yet). */
  weightsStep: number;
  /** Gradient replies received (the first, with warm-up in it, is not measured). */
  replies: number;
}

export class WorkerSchedule {
  private readonly states = new Map<number, WorkerState>();

  /** Starts tracking a worker that just joined. */
  add(workerId: number, maxMicroBatches: number | null): void {
    this.states.set(workerId, { samplesPerSecond: null, maxMicroBatches, weightsStep: -1, replies: 0 });
  }

  /** Forgets a worker that left. */
  remove(workerId: number): void {
    this.states.delete(workerId);
  }

  /** Folds one reply's measured rate into the worker's throughput (after its first reply). */
  recordReply(workerId: number, samples: number, computeMs: number): void {
    const state = this.states.get(workerId);
    if (!state) return;
    state.replies++;
    if (state.replies > 1) state.samplesPerSecond = updateThroughput(state.samplesPerSecond, samples, computeMs);
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
