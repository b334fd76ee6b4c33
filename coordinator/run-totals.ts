// Totals of a run gathered from the trainer's records: first and last loss, time spent
// computing versus wall time, the latest noise-scale estimate, and a downsampled history for
// reports and charts.

import { performance } from 'node:perf_hooks';
import type { Evaluation } from '../shared/evaluate.js';
import type { GradientMessage } from '../shared/protocol.js';
import { meanComputeSeconds } from './gather-round.js';
import type { StepRecord, TrainerObserver } from './trainer-observer.js';

/** One row of the per-run history (noise scale over training, loss curves). */
export interface HistoryPoint {
  step: number;
  loss: number;
  accuracy: number;
  lr: number;
  /** B_simple when estimable at this step, else null. */
  bSimple: number | null;
  evalAccuracy: number | null;
}

/** One worker's memory over the run, from the `memory` of its accepted replies (bytes). */
export interface WorkerMemoryPeak {
  workerId: number;
  /** Highest live tensor bytes of its backend while computing any one micro-batch. */
  peakTensorBytes: number;
  /** Highest resident set size of its process after a micro-batch. */
  peakRssBytes: number;
  /** wasm: the heap's size at the end (it never shrinks); else null. */
  wasmHeapBytes: number | null;
  /** Live tensors after its last micro-batch (flat over a run unless it leaks). */
  tensors: number;
}

/** Largest number of history rows kept; longer runs keep every k-th step. */
const MAX_HISTORY = 400;

export class RunTotals implements TrainerObserver {
  initialLoss: number | null = null;
  last: StepRecord | null = null;
  maxWorkers = 0;
  /** Latest B_simple and whether the estimator called it reliable. */
  noiseScale: number | null = null;
  noiseScaleReliable = false;
  readonly history: HistoryPoint[] = [];
  /** Per worker id, in the order they first replied. */
  readonly memory = new Map<number, WorkerMemoryPeak>();
  /** Σ seconds per phase over the run (compute = mean worker compute). */
  readonly phaseSeconds: Record<string, number> = {};
  private computeSeconds = 0;
  private evalSeconds = 0;
  private wallSeconds = 0;
  private startMs = 0;
  private stride: number;

  constructor(totalSteps: number) {
    this.stride = Math.max(1, Math.ceil(totalSteps / MAX_HISTORY));
  }

  onStep(record: StepRecord): void {
    if (this.initialLoss === null) {
      this.initialLoss = record.loss;
      this.startMs = performance.now() - record.wallSeconds * 1000;
    }
    this.last = record;
    const meanCompute = meanComputeSeconds(record.stats);
    this.computeSeconds += meanCompute;
    for (const [phase, seconds] of [...Object.entries(record.phases), ['compute', meanCompute] as const])
      this.phaseSeconds[phase] = (this.phaseSeconds[phase] ?? 0) + seconds;
    this.wallSeconds += record.wallSeconds;
    this.maxWorkers = Math.max(this.maxWorkers, record.workers);
    const bSimple = record.noise?.bSimple ?? null;
    if (bSimple !== null && Number.isFinite(bSimple)) {
      this.noiseScale = bSimple;
      this.noiseScaleReliable = record.noise?.reliable ?? false;
    }
    if (record.step % this.stride === 0) {
      this.history.push({
        step: record.step,
        loss: record.loss,
        accuracy: record.accuracy,
        lr: record.lr,
        bSimple,
        evalAccuracy: null,
      });
    }
  }

  onReply(workerId: number, message: GradientMessage): void {
    const m = message.memory;
    if (!m) return;
    const seen = this.memory.get(workerId);
    this.memory.set(workerId, {
      workerId,
      peakTensorBytes: Math.max(seen?.peakTensorBytes ?? 0, m.peakTensorBytes),
      peakRssBytes: Math.max(seen?.peakRssBytes ?? 0, m.rssBytes),
      wasmHeapBytes: m.wasmHeapBytes ?? null,
      tensors: m.tensors,
    });
  }

  /** The largest per-worker peak of live tensor bytes and of RSS; null when no reply carried memory. */
  peakMemory(): { peakMemoryBytes: number | null; peakRssBytes: number | null } {
    const workers = [...this.memory.values()];
    if (workers.length === 0) return { peakMemoryBytes: null, peakRssBytes: null };
    return {
      peakMemoryBytes: Math.max(...workers.map((w) => w.peakTensorBytes)),
      peakRssBytes: Math.max(...workers.map((w) => w.peakRssBytes)),
    };
  }

  onEval(step: number, evaluation: Evaluation): void {
    const row = this.history[this.history.length - 1];
    if (row && row.step === step) row.evalAccuracy = evaluation.accuracy;
    else if (this.last)
      this.history.push({
        step,
        loss: this.last.loss,
        accuracy: this.last.accuracy,
        lr: this.last.lr,
        bSimple: this.last.noise?.bSimple ?? null,
        evalAccuracy: evaluation.accuracy,
      });
  }

  /** Mean seconds per step in each phase. */
  meanPhaseSeconds(steps: number): Record<string, number> {
    return Object.fromEntries(
      Object.entries(this.phaseSeconds).map(([phase, total]) => [phase, steps ? total / steps : 0]),
    );
  }

  /** Records time spent evaluating, which training throughput leaves out. */
  addEvalSeconds(seconds: number): void {
    this.evalSeconds += seconds;
  }

  /** Seconds of training from the first step's start until now, evaluations excluded. */
  trainSeconds(): number {
    return this.startMs ? (performance.now() - this.startMs) / 1000 - this.evalSeconds : 0;
  }

  /** Σ mean worker compute / Σ step wall time over the run. */
  scalingEfficiency(): number | null {
    return this.wallSeconds > 0 ? Math.min(1, this.computeSeconds / this.wallSeconds) : null;
  }
}
