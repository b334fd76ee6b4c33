// The keys every --report JSON must have (the README's contract), for the tests that read reports.

/** Keys of a run report, null where not measured; sweep points add stepsToTarget and samplesToTarget. */
export const REPORT_KEYS = [
  'command',
  'backend',
  'reducer',
  'workers',
  'globalBatchSize',
  'microBatchSize',
  'steps',
  'samples',
  'initialLoss',
  'finalLoss',
  'evalAccuracy',
  'samplesPerSecond',
  'scalingEfficiency',
  'gradientNoiseScale',
  'learningRate',
  'wallSeconds',
  'peakMemoryBytes',
  'peakRssBytes',
  'workerMemory',
] as const;

/**
 * The points the sweep page's memory chart draws, read from its SVG (each mark's aria-label:
 * "micro-batch size (samples): 8; peak tensor memory per worker (MiB): 0.95…; workers: …; point: B=16 N=1").
 */
export function memoryChartPoints(html: string): { point: string; microBatch: number; mib: number }[] {
  const start = html.indexOf('<h3>Peak memory vs micro-batch size</h3>');
  if (start < 0) return [];
  const svg = html.slice(start, html.indexOf('</svg>', start));
  const seen = new Map<string, { point: string; microBatch: number; mib: number }>();
  for (const m of svg.matchAll(
    /aria-label="micro-batch size \(samples\): (\d+); peak tensor memory per worker \(MiB\): ([\d.e+-]+); workers: [^;]+; point: ([^"]+)"/g,
  ))
    seen.set(m[3]!, { point: m[3]!, microBatch: Number(m[1]), mib: Number(m[2]) });
  return [...seen.values()];
}
