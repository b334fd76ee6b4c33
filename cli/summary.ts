// The short table printed at the end of a run, from the same object `--report` writes.

import type { RunReport } from '../coordinator/report.js';

const pct = (v: number | null): string => (v === null ? '-' : `${(100 * v).toFixed(2)}%`);
const num = (v: number | null, digits = 4): string => (v === null ? '-' : v.toFixed(digits));

/** A two-column table of the run's headline numbers. */
export function formatSummary(report: RunReport): string {
  const rows: [string, string][] = [
    ['model / dataset', `${report.model} on ${report.dataset}`],
    ['backend, workers', `${report.backend}, ${report.workers}`],
    ['global batch / micro-batch', `${report.globalBatchSize} / ${report.microBatchSize}`],
    ['optimizer, lr', `${report.optimizer}, ${report.learningRate}`],
    ['steps, samples', `${report.steps}, ${report.samples.toLocaleString('en-US')}`],
    ['train loss first → last', `${num(report.initialLoss)} → ${num(report.finalLoss)}`],
    ['eval loss / accuracy', `${num(report.evalLoss)} / ${pct(report.evalAccuracy)}`],
    ['samples/s', report.samplesPerSecond === null ? '-' : Math.round(report.samplesPerSecond).toLocaleString('en-US')],
    ['scaling efficiency (live)', pct(report.scalingEfficiency)],
    ['wall time', `${report.wallSeconds.toFixed(1)} s`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  const rule = `  ${'─'.repeat(Math.max(...lines.map((l) => l.length)) - 2)}`;
  return ['', '  batchlab run summary', rule, ...lines, rule, ''].join('\n');
}
