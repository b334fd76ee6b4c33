// Every Prometheus metric batchlab exports, in one list: name, help, type, labels and buckets
// for the coordinator and for workers (prom-client defaultMetrics style: a function of
// (registry, config)). Units are base units; see docs/METRICS.md for how to read each one.

import * as tf from '@tensorflow/tfjs-core';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets } from 'prom-client';

/** Step and phase durations: 0.5 ms to ~16 s. */
const PHASE_BUCKETS = exponentialBuckets(0.0005, 2, 16);
/** Whole steps: 5 ms to ~41 s. */
const STEP_BUCKETS = exponentialBuckets(0.005, 2, 14);

/** Labels that make "efficiency versus batch size and worker count" a direct query. */
export const CONFIG_LABELS = ['global_batch_size', 'workers'] as const;

export interface CoordinatorMetricsConfig {
  backend: string;
  /** B0 of the statistical efficiency (B_simple + B0)/(B_simple + B). */
  baseBatch: number;
  /** Filled at scrape time. */
  workersConnected: () => number;
  /** The reducer in use (sharded can fall back to star mid-run); filled at scrape time. */
  reducer: () => string;
  /** Connected workers quarantined for missing a step deadline; filled at scrape time (none when omitted). */
  workersQuarantined?: () => number;
}

/**
 * A fresh registry with the process's default metrics under their standard names
 * (`process_cpu_seconds_total`, `nodejs_heap_size_used_bytes`, ...), as every Node exporter
 * serves them: the `role` label tells the processes apart. Each endpoint has its own registry
 * (a `local` run's workers are processes of their own), so no name is registered twice.
 */
export function createRegistry(role: 'coordinator' | 'worker' | 'sweep'): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** tf.memory(), or NaN before a backend is ready: a scrape must never fail. */
function liveTensors(): { numTensors: number; numBytes: number } {
  try {
    return tf.memory();
  } catch {
    return { numTensors: NaN, numBytes: NaN };
  }
}

function defineTensorGauges(registers: Registry[]): void {
  new Gauge({
    name: 'batchlab_tensors',
    help: 'Live TensorFlow.js tensors in this process (should stay flat; growth is a leak).',
    registers,
    collect() {
      this.set(liveTensors().numTensors);
    },
  });
  new Gauge({
    name: 'batchlab_tensor_bytes',
    help: 'Bytes held by live TensorFlow.js tensors in this process.',
    registers,
    collect() {
      this.set(liveTensors().numBytes);
    },
  });
}

/** The coordinator's metrics. */
export function defineCoordinatorMetrics(registry: Registry, config: CoordinatorMetricsConfig) {
  const registers = [registry];
  defineTensorGauges(registers);
  new Gauge({
    name: 'batchlab_workers_connected',
    help: 'Live workers that finished the handshake.',
    registers,
    collect() {
      this.set(config.workersConnected());
    },
  });
  new Gauge({
    name: 'batchlab_workers_quarantined',
    help: 'Connected workers that missed a step deadline and get no new work until they have answered.',
    registers,
    collect() {
      this.set(config.workersQuarantined?.() ?? 0);
    },
  });
  new Gauge({
    name: 'batchlab_backend_info',
    help: 'Compute backend of this process (value 1).',
    labelNames: ['backend'] as const,
    registers,
  }).set({ backend: config.backend }, 1);
  new Gauge({
    name: 'batchlab_reducer_info',
    help: 'The reducer in use (value 1): star (the coordinator sums) or sharded (the workers do).',
    labelNames: ['reducer'] as const,
    registers,
    collect() {
      const current = config.reducer();
      for (const reducer of ['star', 'sharded']) this.set({ reducer }, reducer === current ? 1 : 0);
    },
  });
  return {
    stepsTotal: new Counter({ name: 'batchlab_steps_total', help: 'Optimizer steps applied.', registers }),
    samplesTotal: new Counter({
      name: 'batchlab_samples_total',
      help: 'Samples that contributed to applied steps.',
      registers,
    }),
    stepDuration: new Histogram({
      name: 'batchlab_step_duration_seconds',
      help: 'Wall time of one step, from dispatch to applied update.',
      labelNames: CONFIG_LABELS,
      buckets: STEP_BUCKETS,
      registers,
    }),
    stepPhase: new Histogram({
      name: 'batchlab_step_phase_seconds',
      help: 'Time of one phase of a step: dispatch, compute (mean worker compute), gather-wait, reduce, apply.',
      labelNames: ['phase'] as const,
      buckets: PHASE_BUCKETS,
      registers,
    }),
    throughput: new Gauge({
      name: 'batchlab_throughput_samples_per_second',
      help: 'Samples per second of wall time over the last step.',
      labelNames: CONFIG_LABELS,
      registers,
    }),
    scalingEfficiency: new Gauge({
      name: 'batchlab_scaling_efficiency_ratio',
      help: 'Live scaling efficiency: mean worker compute time / step wall time (0-1).',
      labelNames: CONFIG_LABELS,
      registers,
    }),
    globalBatchSize: new Gauge({
      name: 'batchlab_global_batch_size',
      help: 'Global batch size of the last step.',
      registers,
    }),
    workers: new Gauge({ name: 'batchlab_workers', help: 'Workers that took part in the last step.', registers }),
    workerCompute: new Histogram({
      name: 'batchlab_worker_compute_seconds',
      help: 'Compute time of one worker in one step (sum over its micro-batches).',
      labelNames: ['worker'] as const,
      buckets: PHASE_BUCKETS,
      registers,
    }),
    workerThroughput: new Gauge({
      name: 'batchlab_worker_throughput_samples_per_second',
      help: 'Samples per second of compute time of one worker in the last step it took part in.',
      labelNames: ['worker'] as const,
      registers,
    }),
    gradientBytes: new Counter({
      name: 'batchlab_gradient_bytes_total',
      help: 'Bytes of frames on the wire as seen by the coordinator: out = work frames (weights), in = gradient frames.',
      labelNames: ['direction'] as const,
      registers,
    }),
    trainLoss: new Gauge({
      name: 'batchlab_train_loss',
      help: 'Mean training loss over the global batch of the last step.',
      registers,
    }),
    trainAccuracy: new Gauge({
      name: 'batchlab_train_accuracy',
      help: 'Training accuracy over the global batch of the last step (0-1).',
      registers,
    }),
    evalLoss: new Gauge({
      name: 'batchlab_eval_loss',
      help: 'Mean loss of the last evaluation on the test split.',
      registers,
    }),
    evalAccuracy: new Gauge({
      name: 'batchlab_eval_accuracy',
      help: 'Accuracy of the last evaluation on the test split (0-1).',
      registers,
    }),
    learningRate: new Gauge({
      name: 'batchlab_learning_rate',
      help: 'Learning rate applied in the last step.',
      registers,
    }),
    noiseScale: new Gauge({
      name: 'batchlab_gradient_noise_scale',
      help: 'Simple gradient noise scale B_simple = tr(Sigma)/|G|^2 (smoothed); NaN until estimable.',
      registers,
    }),
    gradientSqNorm: new Gauge({
      name: 'batchlab_gradient_sq_norm',
      help: 'Squared gradient norm of the last step: scope=global is |mean gradient|^2, scope=local the sample-weighted mean of micro-batch |g_k|^2.',
      labelNames: ['scope'] as const,
      registers,
    }),
    statisticalEfficiency: new Gauge({
      name: 'batchlab_statistical_efficiency_ratio',
      help: 'Predicted statistical efficiency (B_simple + B0)/(B_simple + B); NaN until the noise scale is estimable.',
      registers,
    }),
    goodput: new Gauge({
      name: 'batchlab_goodput_samples_per_second',
      help: 'Throughput times statistical efficiency; NaN until the noise scale is estimable.',
      registers,
    }),
    reassignments: new Counter({
      name: 'batchlab_microbatch_reassignments_total',
      help: 'Micro-batches re-issued to another worker, by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
    workersLate: new Counter({
      name: 'batchlab_workers_late_total',
      help: 'Times a worker was marked late: it missed a step deadline, or stayed silent a further deadline while quarantined.',
      registers,
    }),
    workersEvicted: new Counter({
      name: 'batchlab_workers_evicted_total',
      help: 'Workers whose connection was closed for being late --evict-after times in a row.',
      registers,
    }),
    rejected: rejectedCounter(
      registers,
      'Refused frames, replies and connections, by reason (auth, bad_frame, stale_step, unassigned, duplicate, non_finite, ...).',
    ),
    checkpointFailures: new Counter({
      name: 'batchlab_checkpoint_failures_total',
      help: 'Checkpoint writes that failed (earlier checkpoints kept, the run goes on), by reason (no_space, too_many_files, io_error, read_only, permission, verify, other).',
      labelNames: ['reason'] as const,
      registers,
    }),
    checkpointLastStep: new Gauge({
      name: 'batchlab_checkpoint_last_success_step',
      help: 'Step of the last checkpoint written and read back whole in this session; NaN before the first.',
      registers,
    }),
  };
}

export type CoordinatorMetrics = ReturnType<typeof defineCoordinatorMetrics>;

/** `batchlab_rejected_messages_total{reason}`: the coordinator's refusals, or a worker's on its peer links. */
function rejectedCounter(registers: Registry[], help: string): Counter<'reason'> {
  return new Counter({ name: 'batchlab_rejected_messages_total', help, labelNames: ['reason'] as const, registers });
}

/** A worker process's metrics. */
export function defineWorkerMetrics(
  registry: Registry,
  config: {
    backend: string;
    device: string;
    adapter?: { description: string; fallback: boolean } | null;
    /** wasm: the heap's size, read at scrape time (the gauge exists only on wasm). */
    wasmHeapBytes?: () => number | null;
  },
) {
  const registers = [registry];
  defineTensorGauges(registers);
  const heap = config.wasmHeapBytes;
  if (config.backend === 'wasm' && heap) {
    new Gauge({
      name: 'batchlab_worker_wasm_heap_bytes',
      help: 'Size of the wasm heap: it grows to the highest demand so far and never shrinks.',
      registers,
      collect() {
        this.set(heap() ?? NaN);
      },
    });
  }
  new Gauge({
    name: 'batchlab_backend_info',
    help: 'Compute backend of this process (value 1).',
    labelNames: ['backend', 'device'] as const,
    registers,
  }).set({ backend: config.backend, device: config.device }, 1);
  new Gauge({
    name: 'batchlab_worker_info',
    help: "The worker's backend and, for webgpu, its adapter and whether that is a software fallback (value 1).",
    labelNames: ['backend', 'adapter', 'fallback'] as const,
    registers,
  }).set(
    {
      backend: config.backend,
      adapter: config.adapter?.description ?? 'none',
      fallback: config.adapter ? String(config.adapter.fallback) : 'false',
    },
    1,
  );
  return {
    microBatchesTotal: new Counter({
      name: 'batchlab_microbatches_total',
      help: 'Micro-batches this worker computed.',
      registers,
    }),
    microBatchSamplesTotal: new Counter({
      name: 'batchlab_microbatch_samples_total',
      help: 'Samples in the micro-batches this worker computed.',
      registers,
    }),
    microBatchCompute: new Histogram({
      name: 'batchlab_microbatch_compute_seconds',
      help: 'Forward + backward time of one micro-batch on this worker.',
      buckets: PHASE_BUCKETS,
      registers,
    }),
    wireBytes: new Counter({
      name: 'batchlab_worker_wire_bytes_total',
      help: 'Bytes of frames on the wire as seen by this worker: in = work frames, out = gradient frames.',
      labelNames: ['direction'] as const,
      registers,
    }),
    step: new Gauge({ name: 'batchlab_worker_step', help: 'Last step this worker computed for.', registers }),
    peakTensorBytes: new Gauge({
      name: 'batchlab_worker_peak_tensor_bytes',
      help: 'Highest live tensor bytes of the backend while this worker computed its last micro-batch.',
      registers,
    }),
    maxChunk: new Gauge({
      name: 'batchlab_worker_max_chunk',
      help: 'Most samples this worker computes at once (--max-chunk, or what auto probed).',
      registers,
    }),
    peerBytes: new Counter({
      name: 'batchlab_peer_bytes_total',
      help: 'Bytes of frames on the peer links of the sharded reducer, per peer worker and direction.',
      labelNames: ['peer', 'direction'] as const,
      registers,
    }),
    peerSendSeconds: new Counter({
      name: 'batchlab_peer_send_seconds_total',
      help: 'Seconds from handing a frame to a peer link until the kernel took it, per peer worker.',
      labelNames: ['peer'] as const,
      registers,
    }),
    rejected: rejectedCounter(registers, 'Peer frames or connections this worker refused, by reason.'),
  };
}

export type WorkerMetrics = ReturnType<typeof defineWorkerMetrics>;

/**
 * A sweep's metrics (`batchlab sweep --metrics-port`): the measured result of each (B, N)
 * point, set as the point completes, so a scrape during the sweep fills "efficiency versus
 * batch size" with the measured definition (docs/METRICS.md).
 */
export function defineSweepMetrics(registry: Registry) {
  const registers = [registry];
  return {
    scalingEfficiency: new Gauge({
      name: 'batchlab_sweep_scaling_efficiency_ratio',
      help: 'Measured scaling efficiency of a sweep point: throughput(N) / (N x throughput(1)) at the same global batch and micro-batch.',
      labelNames: CONFIG_LABELS,
      registers,
    }),
    throughput: new Gauge({
      name: 'batchlab_sweep_throughput_samples_per_second',
      help: 'Samples per second of wall time over the whole run of a sweep point (its best learning rate).',
      labelNames: CONFIG_LABELS,
      registers,
    }),
    stepsToTarget: new Gauge({
      name: 'batchlab_sweep_steps_to_target',
      help: 'Steps a sweep point needed to reach --target-accuracy or --target-loss (no series when not reached).',
      labelNames: CONFIG_LABELS,
      registers,
    }),
    points: new Counter({
      name: 'batchlab_sweep_points_total',
      help: 'Sweep points completed, by status (ok, diverged, failed).',
      labelNames: ['status'] as const,
      registers,
    }),
    pointsPlanned: new Gauge({
      name: 'batchlab_sweep_points_planned',
      help: 'Points of this sweep (global batches x worker counts).',
      registers,
    }),
  };
}

export type SweepMetrics = ReturnType<typeof defineSweepMetrics>;
