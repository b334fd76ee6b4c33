// Every metric name the code defines, read from fresh registries built by shared/metrics.ts.

import {
  defineCoordinatorMetrics,
  defineSweepMetrics,
  defineWorkerMetrics,
  createRegistry,
} from '../../shared/metrics.js';

/** Names as Prometheus sees them, with the _bucket/_sum/_count series of histograms. */
export async function definedMetricNames(): Promise<Set<string>> {
  const names = new Set<string>();
  const coordinator = createRegistry('coordinator');
  defineCoordinatorMetrics(coordinator, {
    backend: 'cpu',
    baseBatch: 1,
    workersConnected: () => 0,
    reducer: () => 'star',
  });
  const worker = createRegistry('worker');
  // On wasm: its heap gauge exists only there.
  defineWorkerMetrics(worker, { backend: 'wasm', device: 'cpu', wasmHeapBytes: () => null });
  const sweep = createRegistry('sweep');
  defineSweepMetrics(sweep);
  for (const registry of [coordinator, worker, sweep]) {
    for (const metric of await registry.getMetricsAsJSON()) {
      names.add(metric.name);
      if (String(metric.type) === 'histogram')
        for (const suffix of ['_bucket', '_sum', '_count']) names.add(metric.name + suffix);
    }
  }
  return names;
}

/** The batchlab_* metric names a PromQL expression uses. */
export function metricNamesIn(expr: string): string[] {
  return [...new Set(expr.match(/\bbatchlab_[a-z0-9_]+/g) ?? [])];
}
