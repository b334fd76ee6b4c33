// Scaling efficiency as defined in docs/METRICS.md, and the coordinator's metric values after a
// few known steps, each test on a fresh registry.

import type { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createCoordinatorMetrics } from '../../coordinator/metrics.js';
import type { StepRecord } from '../../coordinator/trainer-observer.js';
import { liveScalingEfficiency, measuredScalingEfficiency } from '../../shared/efficiency.js';
import { createRegistry, defineWorkerMetrics } from '../../shared/metrics.js';

describe('scaling efficiency', () => {
  it('live: mean worker compute time divided by step wall time', () => {
    expect(liveScalingEfficiency([0.3, 0.5], 0.5)).toBeCloseTo(0.8, 12);
    expect(liveScalingEfficiency([0.25], 1)).toBe(0.25);
  });

  it('live: clamps to 1 when reported compute exceeds the wall time, and is NaN without data', () => {
    expect(liveScalingEfficiency([1.2, 1.0], 1)).toBe(1);
    expect(liveScalingEfficiency([], 1)).toBeNaN();
    expect(liveScalingEfficiency([0.1], 0)).toBeNaN();
  });

  it('measured: throughput(N) / (N × throughput(1))', () => {
    expect(measuredScalingEfficiency(1800, 2, 1000)).toBeCloseTo(0.9, 12);
    expect(measuredScalingEfficiency(1000, 1, 1000)).toBe(1);
    expect(measuredScalingEfficiency(3000, 4, 1000)).toBeCloseTo(0.75, 12);
    expect(measuredScalingEfficiency(100, 2, 0)).toBeNaN();
  });
});

function record(step: number, overrides: Partial<StepRecord> = {}): StepRecord {
  return {
    step,
    startedAtMs: 1000 * step,
    gradSqNorm: 0.25,
    noise: null,
    lr: 0.01,
    loss: 2 - 0.1 * step,
    accuracy: 0.1 * step,
    wallSeconds: 0.5,
    workers: 2,
    phases: { dispatch: 0.01, 'gather-wait': 0.4, reduce: 0.05, apply: 0.04 },
    stats: {
      samples: 64,
      lossSum: 64 * (2 - 0.1 * step),
      correct: 6 * step,
      computeMsByWorker: new Map([
        [1, 300],
        [2, 500],
      ]),
      samplesByWorker: new Map([
        [1, 32],
        [2, 32],
      ]),
      sqNorms: [
        { samples: 32, sqNorm: 1 },
        { samples: 32, sqNorm: 3 },
      ],
    },
    ...overrides,
  };
}

async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`${name} is not registered`);
  const { values } = await metric.get();
  const match = values.find(
    (v) =>
      Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l) &&
      (!('le' in v.labels) || labels.le !== undefined),
  );
  return match?.value;
}

/** A coordinator registry and its metrics observer: cpu, base batch 32, two workers, the star reducer. */
function coordinatorMetrics(options: Partial<Parameters<typeof createCoordinatorMetrics>[1]> = {}) {
  const registry = createRegistry('coordinator');
  const observer = createCoordinatorMetrics(registry, {
    backend: 'cpu',
    baseBatch: 32,
    workersConnected: () => 2,
    reducer: () => 'star',
    ...options,
  });
  return { registry, observer };
}

describe('coordinator metrics after known steps', () => {
  it('counts steps and samples and keeps the last step values', async () => {
    const { registry, observer } = coordinatorMetrics();
    for (let s = 0; s < 3; s++) observer.onStep(record(s));
    expect(await value(registry, 'batchlab_steps_total')).toBe(3);
    expect(await value(registry, 'batchlab_samples_total')).toBe(192);
    expect(await value(registry, 'batchlab_train_loss')).toBeCloseTo(1.8, 12);
    expect(await value(registry, 'batchlab_train_accuracy')).toBeCloseTo(0.2, 12);
    expect(await value(registry, 'batchlab_learning_rate')).toBe(0.01);
    expect(await value(registry, 'batchlab_global_batch_size')).toBe(64);
    expect(await value(registry, 'batchlab_workers')).toBe(2);
    expect(await value(registry, 'batchlab_workers_connected')).toBe(2);
  });

  it('counts late and evicted workers and reads the quarantined ones at scrape time', async () => {
    let quarantined = 1;
    const { registry, observer } = coordinatorMetrics({ workersQuarantined: () => quarantined });
    expect(await value(registry, 'batchlab_workers_late_total')).toBe(0);
    expect(await value(registry, 'batchlab_workers_evicted_total')).toBe(0);
    expect(await value(registry, 'batchlab_workers_quarantined')).toBe(1);
    observer.onLate();
    observer.onLate();
    observer.onEvicted();
    quarantined = 0;
    expect(await value(registry, 'batchlab_workers_late_total')).toBe(2);
    expect(await value(registry, 'batchlab_workers_evicted_total')).toBe(1);
    expect(await value(registry, 'batchlab_workers_quarantined')).toBe(0);
  });

  it('labels throughput and efficiency with the global batch size and worker count', async () => {
    const { registry, observer } = coordinatorMetrics();
    observer.onStep(record(0));
    const labels = { global_batch_size: '64', workers: '2' };
    expect(await value(registry, 'batchlab_throughput_samples_per_second', labels)).toBeCloseTo(128, 9);
    // Mean compute (0.3 + 0.5) / 2 = 0.4 s over a 0.5 s step.
    expect(await value(registry, 'batchlab_scaling_efficiency_ratio', labels)).toBeCloseTo(0.8, 9);
  });

  it('records per-worker compute time and throughput, phases, and squared norms', async () => {
    const { registry, observer } = coordinatorMetrics();
    observer.onStep(record(0));
    observer.onStep(record(1));
    expect(await value(registry, 'batchlab_worker_throughput_samples_per_second', { worker: '2' })).toBeCloseTo(64, 9);
    const compute = await registry.getSingleMetric('batchlab_worker_compute_seconds')!.get();
    const sum = compute.values.find(
      (v) =>
        (v as { metricName?: string }).metricName === 'batchlab_worker_compute_seconds_sum' && v.labels.worker === '1',
    );
    const count = compute.values.find(
      (v) =>
        (v as { metricName?: string }).metricName === 'batchlab_worker_compute_seconds_count' &&
        v.labels.worker === '1',
    );
    expect(sum?.value).toBeCloseTo(0.6, 9);
    expect(count?.value).toBe(2);
    const phases = await registry.getSingleMetric('batchlab_step_phase_seconds')!.get();
    const phaseCounts = phases.values
      .filter((v) => (v as { metricName?: string }).metricName === 'batchlab_step_phase_seconds_count')
      .map((v) => v.labels.phase)
      .sort();
    expect(phaseCounts).toEqual(['apply', 'compute', 'dispatch', 'gather-wait', 'reduce']);
    expect(await value(registry, 'batchlab_gradient_sq_norm', { scope: 'global' })).toBe(0.25);
    // Sample-weighted mean of the micro-batch squared norms: (32·1 + 32·3) / 64.
    expect(await value(registry, 'batchlab_gradient_sq_norm', { scope: 'local' })).toBe(2);
  });

  it('starts reason counters at zero, counts rejections, reassignments and bytes, and says NaN for the noise scale', async () => {
    const { registry, observer } = coordinatorMetrics({ workersConnected: () => 0 });
    expect(await value(registry, 'batchlab_rejected_messages_total', { reason: 'stale_step' })).toBe(0);
    expect(await value(registry, 'batchlab_microbatch_reassignments_total', { reason: 'worker_lost' })).toBe(0);
    observer.onReject('stale_step');
    observer.onReject('stale_step');
    observer.onReassign('worker_lost', 3);
    observer.onBytes('in', 1000);
    observer.onBytes('out', 400);
    observer.onEval(9, { loss: 0.5, accuracy: 0.8, samples: 100 });
    expect(await value(registry, 'batchlab_rejected_messages_total', { reason: 'stale_step' })).toBe(2);
    expect(await value(registry, 'batchlab_microbatch_reassignments_total', { reason: 'worker_lost' })).toBe(3);
    expect(await value(registry, 'batchlab_gradient_bytes_total', { direction: 'in' })).toBe(1000);
    expect(await value(registry, 'batchlab_gradient_bytes_total', { direction: 'out' })).toBe(400);
    expect(await value(registry, 'batchlab_eval_accuracy')).toBe(0.8);
    expect(await value(registry, 'batchlab_gradient_noise_scale')).toBeNaN();
    expect(await value(registry, 'batchlab_goodput_samples_per_second')).toBeNaN();
  });

  it('exports B_simple, the statistical efficiency relative to the base batch, and goodput', async () => {
    const { registry, observer } = coordinatorMetrics();
    const noise = {
      estimable: true,
      sHat: 10,
      g2Hat: 0.1,
      sEma: 10,
      g2Ema: 0.1,
      bSimple: 96,
      relativeError: 0.1,
      reliable: true,
      temperature: 1,
      stepsSinceReset: 20,
      reset: false,
    } as const;
    observer.onStep(record(0, { noise }));
    expect(await value(registry, 'batchlab_gradient_noise_scale')).toBe(96);
    // (B_simple + B0) / (B_simple + B) = (96 + 32) / (96 + 64).
    expect(await value(registry, 'batchlab_statistical_efficiency_ratio')).toBeCloseTo(0.8, 12);
    // 64 samples in 0.5 s, times 0.8.
    expect(await value(registry, 'batchlab_goodput_samples_per_second')).toBeCloseTo(102.4, 9);
  });

  it('drops every worker-labelled series of a worker that left, and keeps the others', async () => {
    const { registry, observer } = coordinatorMetrics();
    observer.onStep(record(0));
    const perWorker = (await registry.getMetricsAsJSON()).filter((m) =>
      (m as { values: { labels: Record<string, unknown> }[] }).values.some((v) => 'worker' in v.labels),
    );
    // Every metric labelled by worker (found from the registry, so a new one is covered too).
    expect(perWorker.map((m) => m.name).sort()).toEqual([
      'batchlab_worker_compute_seconds',
      'batchlab_worker_throughput_samples_per_second',
    ]);
    expect(await registry.metrics()).toMatch(/\{[^}]*worker="2"/);
    observer.onWorkerLeft(2);
    const text = await registry.metrics();
    expect(text).not.toMatch(/\{[^}]*worker="2"/);
    expect(text).toMatch(/^batchlab_worker_throughput_samples_per_second\{worker="1",role="coordinator"\} /m);
    expect(text).toMatch(/^batchlab_worker_compute_seconds_count\{role="coordinator",worker="1"\} 1$/m);
    // The step it took part in can finish after it left (its replies arrived first): its series stay gone.
    observer.onStep(record(1));
    const later = await registry.metrics();
    expect(later).not.toMatch(/\{[^}]*worker="2"/);
    expect(later).toMatch(/^batchlab_worker_compute_seconds_count\{role="coordinator",worker="1"\} 2$/m);
  });

  it("exports Node's process metrics under their standard names, once, in every role", async () => {
    for (const role of ['coordinator', 'worker', 'sweep'] as const) {
      const text = await createRegistry(role).metrics();
      expect(text).toMatch(new RegExp(`^process_cpu_seconds_total\\{role="${role}"\\} `, 'm'));
      expect(text).toMatch(new RegExp(`^nodejs_heap_size_used_bytes\\{role="${role}"\\} `, 'm'));
      expect(text).not.toMatch(/batchlab_process_|process_process_/);
    }
  });

  it('keeps registries apart: a second coordinator starts from zero', async () => {
    const first = createRegistry('coordinator');
    createCoordinatorMetrics(first, {
      backend: 'cpu',
      baseBatch: 32,
      workersConnected: () => 0,
      reducer: () => 'star',
    }).onStep(record(0));
    const second = createRegistry('coordinator');
    createCoordinatorMetrics(second, {
      backend: 'cpu',
      baseBatch: 32,
      workersConnected: () => 0,
      reducer: () => 'star',
    });
    expect(await value(first, 'batchlab_steps_total')).toBe(1);
    expect(await value(second, 'batchlab_steps_total')).toBe(0);
  });
});

describe('checkpoint metrics', () => {
  it('count failed writes by reason (known reasons from 0) and keep the step of the last good one', async () => {
    const { registry, observer } = coordinatorMetrics({ workersConnected: () => 1 });
    expect(await value(registry, 'batchlab_checkpoint_last_success_step')).toBeNaN();
    expect(await value(registry, 'batchlab_checkpoint_failures_total', { reason: 'no_space' })).toBe(0);
    observer.onCheckpointWritten(5);
    observer.onCheckpointFailed('no_space');
    observer.onCheckpointFailed('no_space');
    observer.onCheckpointFailed('read_only');
    expect(await value(registry, 'batchlab_checkpoint_last_success_step')).toBe(5);
    expect(await value(registry, 'batchlab_checkpoint_failures_total', { reason: 'no_space' })).toBe(2);
    expect(await value(registry, 'batchlab_checkpoint_failures_total', { reason: 'read_only' })).toBe(1);
    expect(await value(registry, 'batchlab_checkpoint_failures_total', { reason: 'io_error' })).toBe(0);
  });
});

describe('worker info metric', () => {
  it('labels a webgpu worker with its adapter and whether it is a software fallback, and others with none', async () => {
    const gpu = createRegistry('worker');
    defineWorkerMetrics(gpu, {
      backend: 'webgpu',
      device: 'adapter llvmpipe: Mesa 25.0.7, software fallback',
      adapter: { description: 'llvmpipe: Mesa 25.0.7', fallback: true },
    });
    expect(await gpu.metrics()).toMatch(
      /^batchlab_worker_info\{backend="webgpu",adapter="llvmpipe: Mesa 25.0.7",fallback="true",role="worker"\} 1$/m,
    );
    const wasm = createRegistry('worker');
    defineWorkerMetrics(wasm, { backend: 'wasm', device: 'cpu', adapter: null });
    expect(await wasm.metrics()).toMatch(
      /^batchlab_worker_info\{backend="wasm",adapter="none",fallback="false",role="worker"\} 1$/m,
    );
  });
});
