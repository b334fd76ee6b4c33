// The short table printed at the end of a run, from the same object `--report` writes.

import type { RunReport } from '../coordinator/report.js';
import type { SweepReport } from './sweep.js';

const pct = (v: number | null): string => (v === null ? '-' : `${(100 * v).toFixed(2)}%`);
const num = (v: number | null, digits = 4): string => (v === null ? '-' : v.toFixed(digits));

/** A two-column table of the run's headline numbers. */
export function formatSummary(report: RunReport): string {
  const rows: [string, string][] = [
    ['model / dataset', `${report.model} on ${report.dataset}`],
    [
      'backend, workers, reducer',
      `${report.backend}${report.adapter ? ` (${report.adapter})` : ''}, ${report.workers}, ${report.reducer}`,
    ],
    ['global batch / micro-batch', `${report.globalBatchSize} / ${report.microBatchSize}`],
    [
      'optimizer, lr',
      `${report.optimizer}, ${report.learningRate}${report.peakLearningRate !== report.learningRate ? ` (scaled ${+report.peakLearningRate.toPrecision(6)})` : ''}`,
    ],
    ['steps, samples', `${report.steps}, ${report.samples.toLocaleString('en-US')}`],
    ['train loss first → last', `${num(report.initialLoss)} → ${num(report.finalLoss)}`],
    ['eval loss / accuracy', `${num(report.evalLoss)} / ${pct(report.evalAccuracy)}`],
    [
      'train accuracy, gap',
      `${pct(report.trainAccuracy)}, ${report.generalizationGap === null ? '-' : `${(100 * report.generalizationGap).toFixed(2)} points`}`,
    ],
    ...(report.targetReached === null
      ? []
      : [
          [
            'steps to target',
            report.stepsToTarget === null ? `not reached in ${report.steps}` : String(report.stepsToTarget),
          ] as [string, string],
        ]),
    [
      'gradient noise scale',
      report.gradientNoiseScale === null
        ? 'not estimable (one micro-batch per step)'
        : `${Math.round(report.gradientNoiseScale)}${report.gradientNoiseScaleReliable ? '' : ' (unreliable)'}`,
    ],
    ['samples/s', report.samplesPerSecond === null ? '-' : Math.round(report.samplesPerSecond).toLocaleString('en-US')],
    ['scaling efficiency (live)', pct(report.scalingEfficiency)],
    ['wall time', `${report.wallSeconds.toFixed(1)} s`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  const rule = `  ${'─'.repeat(Math.max(...lines.map((l) => l.length)) - 2)}`;
  return ['', '  batchlab run summary', rule, ...lines, rule, ''].join('\n');
}

/** The table printed at the end of a sweep: one row per (B, N) point. */
export function formatSweepSummary(report: SweepReport): string {
  const header = [
    'B',
    'workers',
    'micro-batch',
    'lr',
    'status',
    'samples/s',
    'measured eff.',
    'steps to target',
    'eval acc.',
    'B_simple',
    'peak memory',
  ];
  const rows = report.points.map((p) => [
    String(p.globalBatchSize),
    String(p.workers),
    String(p.microBatchSize),
    String(p.learningRate),
    p.status,
    p.samplesPerSecond === null || p.samplesPerSecond === undefined
      ? '-'
      : Math.round(p.samplesPerSecond).toLocaleString('en-US'),
    pct(p.measuredScalingEfficiency),
    p.stepsToTarget === null ? '-' : String(p.stepsToTarget),
    pct(p.evalAccuracy ?? null),
    p.gradientNoiseScale === null || p.gradientNoiseScale === undefined
      ? '-'
      : String(Math.round(p.gradientNoiseScale)),
    typeof p.peakMemoryBytes === 'number' ? `${(p.peakMemoryBytes / 2 ** 20).toFixed(1)} MiB` : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => `  ${cells.map((c, i) => c.padStart(widths[i]!)).join('  ')}`;
  const critical =
    report.criticalBatchSize === null
      ? `critical batch size: - (${report.fitNote ?? 'not fittable'})`
      : `critical batch size (fit S = S_min + E_min/B): ${Math.round(report.criticalBatchSize)}`;
  return [
    '',
    '  batchlab sweep summary',
    line(header),
    ...rows.map(line),
    '',
    `  ${critical}`,
    `  average gradient noise scale: ${report.averageNoiseScale === null ? '-' : Math.round(report.averageNoiseScale)}`,
    '',
  ].join('\n');
}
