// The coordinator's Prometheus metrics: one registry per coordinator, every metric listed here,
// filled from the trainer's step records (prom-client defaultMetrics style: a function of
// (registry, config)).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets } from 'prom-client';
import type { Evaluation } from '../shared/evaluate.js';
import type { StepRecord, TrainerObserver } from './trainer.js';

export interface CoordinatorMetricsConfig {
  globalBatchSize: number;
  backend: string;
  workersConnected: () => number;
}

/** Creates the registry and returns it with a trainer observer that keeps it current. */
export function createCoordinatorMetrics(config: CoordinatorMetricsConfig): { registry: Registry; observer: TrainerObserver } {
  const registry = new Registry();
  registry.setDefaultLabels({ role: 'coordinator' });
  collectDefaultMetrics({ register: registry, prefix: 'batchlab_process_' });
  const registers = [registry];
  const labels = ['global_batch_size', 'workers'] as const;

  const steps = new Counter({ name: 'batchlab_steps_total', help: 'Optimizer steps applied.', registers });
  const samples = new Counter({ name: 'batchlab_samples_total', help: 'Samples that contributed to applied steps.', registers });
  const stepDuration = new Histogram({ name: 'batchlab_step_duration_seconds', help: 'Wall time of one step.', buckets: exponentialBuckets(0.005, 2, 14), labelNames: labels, registers });
  const phase = new Histogram({ name: 'batchlab_step_phase_seconds', help: 'Wall time of one phase of a step (dispatch, compute, gather-wait, reduce, apply).', labelNames: ['phase'] as const, buckets: exponentialBuckets(0.0005, 2, 16), registers });
  const throughput = new Gauge({ name: 'batchlab_throughput_samples_per_second', help: 'Samples per second over the last step.', labelNames: labels, registers });
  const efficiency = new Gauge({ name: 'batchlab_scaling_efficiency_ratio', help: 'Mean worker compute time divided by step wall time (live estimate).', labelNames: labels, registers });
  const batch = new Gauge({ name: 'batchlab_global_batch_size', help: 'Current global batch size.', registers });
  const workers = new Gauge({ name: 'batchlab_workers', help: 'Workers that took part in the last step.', registers });
  const trainLoss = new Gauge({ name: 'batchlab_train_loss', help: 'Mean training loss of the last step.', registers });
  const trainAccuracy = new Gauge({ name: 'batchlab_train_accuracy', help: 'Training accuracy of the last step.', registers });
  const evalLoss = new Gauge({ name: 'batchlab_eval_loss', help: 'Mean loss of the last evaluation on the test split.', registers });
  const evalAccuracy = new Gauge({ name: 'batchlab_eval_accuracy', help: 'Accuracy of the last evaluation on the test split.', registers });
  const learningRate = new Gauge({ name: 'batchlab_learning_rate', help: 'Learning rate applied in the last step.', registers });
  const rejected = new Counter({ name: 'batchlab_rejected_messages_total', help: 'Refused frames and replies by reason.', labelNames: ['reason'] as const, registers });
  const reassigned = new Counter({ name: 'batchlab_microbatch_reassignments_total', help: 'Micro-batches re-issued to another worker, by reason.', labelNames: ['reason'] as const, registers });
  new Gauge({
    name: 'batchlab_workers_connected',
    help: 'Live workers that finished the handshake.',
    registers,
    collect() {
      this.set(config.workersConnected());
    },
  });
  new Gauge({ name: 'batchlab_backend_info', help: 'Compute backend of this process (value 1).', labelNames: ['backend'] as const, registers }).set({ backend: config.backend }, 1);
  batch.set(config.globalBatchSize);

  const observer: TrainerObserver = {
    onStep(record: StepRecord) {
      const l = { global_batch_size: String(config.globalBatchSize), workers: String(record.workers) };
      steps.inc();
      samples.inc(record.stats.samples);
      stepDuration.observe(l, record.wallSeconds);
      for (const [name, seconds] of Object.entries(record.phases)) phase.observe({ phase: name }, seconds);
      const computes = [...record.stats.computeMsByWorker.values()];
      const meanComputeSeconds = computes.reduce((a, b) => a + b, 0) / Math.max(1, computes.length) / 1000;
      phase.observe({ phase: 'compute' }, meanComputeSeconds);
      throughput.set(l, record.stats.samples / record.wallSeconds);
      efficiency.set(l, Math.min(1, meanComputeSeconds / record.wallSeconds));
      workers.set(record.workers);
      trainLoss.set(record.loss);
      trainAccuracy.set(record.accuracy);
      learningRate.set(record.lr);
    },
    onEval(_step: number, evaluation: Evaluation) {
      evalLoss.set(evaluation.loss);
      evalAccuracy.set(evaluation.accuracy);
    },
    onReject(reason) {
      rejected.inc({ reason });
    },
    onReassign(reason, count) {
      reassigned.inc({ reason }, count);
    },
  };
  return { registry, observer };
}
