// Keeps the coordinator's Prometheus metrics (defined in shared/metrics.ts) current from the
// trainer's step records. Point-in-time gauges are filled at scrape time there.

import type { Registry } from 'prom-client';
import { liveScalingEfficiency } from '../shared/efficiency.js';
import { goodput, statisticalEfficiency } from '../shared/statistics/statistical-efficiency.js';
import type { Evaluation } from '../shared/evaluate.js';
import { defineCoordinatorMetrics, type CoordinatorMetrics, type CoordinatorMetricsConfig } from '../shared/metrics.js';
import { REASSIGN_REASONS, REJECT_REASONS, type ReassignReason, type RejectReason } from '../shared/reasons.js';
import { CHECKPOINT_FAILURE_REASONS, type CheckpointFailureReason } from './checkpoint.js';
import { meanComputeSeconds } from './gather-round.js';
import type { StepRecord, TrainerObserver } from './trainer-observer.js';

/** Trainer observer that records every step into `metrics`. */
export class CoordinatorMetricsObserver implements TrainerObserver {
  /** Ids of workers that left (ids are never reused): a step finishing after a loss must not bring their series back. */
  private readonly departed = new Set<number>();

  constructor(
    private readonly metrics: CoordinatorMetrics,
    private readonly baseBatch: number,
  ) {
    // Not estimable before the first steps (or ever, with one micro-batch per step): NaN says so, 0 would lie.
    metrics.noiseScale.set(NaN);
    metrics.statisticalEfficiency.set(NaN);
    metrics.goodput.set(NaN);
    // Known label values start at 0, so "none yet" is a series at zero rather than no data.
    for (const reason of REASSIGN_REASONS) metrics.reassignments.inc({ reason }, 0);
    for (const reason of REJECT_REASONS) metrics.rejected.inc({ reason }, 0);
    for (const direction of ['in', 'out'] as const) metrics.gradientBytes.inc({ direction }, 0);
    for (const reason of CHECKPOINT_FAILURE_REASONS) metrics.checkpointFailures.inc({ reason }, 0);
    metrics.checkpointLastStep.set(NaN);
  }

  onStep(record: StepRecord): void {
    const m = this.metrics;
    const { stats } = record;
    const labels = { global_batch_size: String(stats.samples), workers: String(record.workers) };
    m.stepsTotal.inc();
    m.samplesTotal.inc(stats.samples);
    m.stepDuration.observe(labels, record.wallSeconds);
    for (const [phase, seconds] of Object.entries(record.phases)) m.stepPhase.observe({ phase }, seconds);
    m.stepPhase.observe({ phase: 'compute' }, meanComputeSeconds(stats));
    for (const [workerId, ms] of stats.computeMsByWorker) {
      if (this.departed.has(workerId)) continue;
      const worker = String(workerId);
      m.workerCompute.observe({ worker }, ms / 1000);
      const samples = stats.samplesByWorker.get(workerId) ?? 0;
      if (ms > 0) m.workerThroughput.set({ worker }, samples / (ms / 1000));
    }
    const throughput = stats.samples / record.wallSeconds;
    m.throughput.set(labels, throughput);
    const bSimple = record.noise?.bSimple ?? null;
    const efficiency = statisticalEfficiency(bSimple, this.baseBatch, stats.samples);
    m.noiseScale.set(bSimple ?? NaN);
    m.statisticalEfficiency.set(efficiency);
    m.goodput.set(goodput(throughput, efficiency));
    m.scalingEfficiency.set(
      labels,
      liveScalingEfficiency(
        [...stats.computeMsByWorker.values()].map((ms) => ms / 1000),
        record.wallSeconds,
      ),
    );
    m.globalBatchSize.set(stats.samples);
    m.workers.set(record.workers);
    m.trainLoss.set(record.loss);
    m.trainAccuracy.set(record.accuracy);
    m.learningRate.set(record.lr);
    m.gradientSqNorm.set({ scope: 'global' }, record.gradSqNorm);
    const local = stats.sqNorms.reduce((acc, k) => acc + k.samples * k.sqNorm, 0) / stats.samples;
    m.gradientSqNorm.set({ scope: 'local' }, local);
  }

  onEval(_step: number, evaluation: Evaluation): void {
    this.metrics.evalLoss.set(evaluation.loss);
    this.metrics.evalAccuracy.set(evaluation.accuracy);
  }

  onReject(reason: RejectReason): void {
    this.metrics.rejected.inc({ reason });
  }

  onReassign(reason: ReassignReason, count: number): void {
    this.metrics.reassignments.inc({ reason }, count);
  }

  /** A checkpoint of `step` was written and read back whole. */
  onCheckpointWritten(step: number): void {
    this.metrics.checkpointLastStep.set(step);
  }

  onCheckpointFailed(reason: CheckpointFailureReason): void {
    this.metrics.checkpointFailures.inc({ reason });
  }

  /** A worker was marked late (quarantined). */
  onLate(): void {
    this.metrics.workersLate.inc();
  }

  /** A worker was evicted. */
  onEvicted(): void {
    this.metrics.workersEvicted.inc();
  }

  /** A worker left (closed, lost or evicted): its `worker`-labelled series go, not frozen at their last value. */
  onWorkerLeft(workerId: number): void {
    this.departed.add(workerId);
    const labels = { worker: String(workerId) };
    this.metrics.workerCompute.remove(labels);
    this.metrics.workerThroughput.remove(labels);
  }

  /** Bytes of one frame sent (`out`) or received (`in`) by the coordinator. */
  onBytes(direction: 'in' | 'out', bytes: number): void {
    this.metrics.gradientBytes.inc({ direction }, bytes);
  }
}

/** Defines the coordinator's metrics on `registry` and returns the observer that fills them. */
export function createCoordinatorMetrics(
  registry: Registry,
  config: CoordinatorMetricsConfig,
): CoordinatorMetricsObserver {
  return new CoordinatorMetricsObserver(defineCoordinatorMetrics(registry, config), config.baseBatch);
}
