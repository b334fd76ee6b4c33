// Sweep outputs: the JSON report, a CSV beside it, and a self-contained HTML page whose charts
// are Vega-Lite specs rendered to SVG in Node (no script, no network when the page is opened).

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { startMetricsServer } from '../shared/metrics-server.js';
import { createRegistry, defineSweepMetrics } from '../shared/metrics.js';
import type { SweepPoint, SweepReport } from './sweep.js';

const CSV_COLUMNS = [
  'globalBatchSize',
  'workers',
  'microBatchSize',
  'learningRate',
  'status',
  'samplesPerSecond',
  'measuredScalingEfficiency',
  'scalingEfficiency',
  'steps',
  'samples',
  'stepsToTarget',
  'samplesToTarget',
  'initialLoss',
  'finalLoss',
  'evalAccuracy',
  'trainAccuracy',
  'generalizationGap',
  'gradientNoiseScale',
  'gradientNoiseScaleReliable',
  'peakMemoryBytes',
  'peakRssBytes',
  'wallSeconds',
  'error',
] as const;

async function writeAtomically(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

/** One CSV row per point, columns in CSV_COLUMNS order (RFC 4180 quoting). */
export function sweepCsv(report: SweepReport): string {
  const cell = (v: unknown): string => {
    if (v === null || v === undefined) return '';
    const s = typeof v === 'number' ? String(+v.toPrecision(8)) : typeof v === 'string' ? v : JSON.stringify(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const rows = report.points.map((p) =>
    CSV_COLUMNS.map((c) => cell((p as unknown as Record<string, unknown>)[c])).join(','),
  );
  return `${[CSV_COLUMNS.join(','), ...rows].join('\n')}\n`;
}

/** A sweep's metrics endpoint (`--metrics-port`): one series per (B, N) point as it completes. */
export interface SweepMetricsEndpoint {
  url: string;
  record(point: SweepPoint): void;
  close(): Promise<void>;
}

/** Serves the sweep's metrics on 127.0.0.1:`port` (0: any free port), where `local` serves a run's. */
export async function startSweepMetrics(port: number, planned: number): Promise<SweepMetricsEndpoint> {
  const registry = createRegistry('sweep');
  const metrics = defineSweepMetrics(registry);
  metrics.pointsPlanned.set(planned);
  for (const status of ['ok', 'diverged', 'failed'] as const) metrics.points.inc({ status }, 0);
  let done = 0;
  const server = await startMetricsServer(registry, port, '127.0.0.1', {
    details: () => ({ role: 'sweep', points: done, planned }),
  });
  return {
    url: server.url,
    record(point) {
      done++;
      metrics.points.inc({ status: point.status });
      if (point.status !== 'ok') return;
      const labels = { global_batch_size: String(point.globalBatchSize), workers: String(point.workers) };
      if (point.measuredScalingEfficiency !== null)
        metrics.scalingEfficiency.set(labels, point.measuredScalingEfficiency);
      if (typeof point.samplesPerSecond === 'number') metrics.throughput.set(labels, point.samplesPerSecond);
      if (point.stepsToTarget !== null) metrics.stepsToTarget.set(labels, point.stepsToTarget);
    },
    close: () => server.close(),
  };
}

/** The CSV written beside the sweep's JSON report: FILE.json → FILE.csv. */
export function sweepCsvPath(reportPath: string): string {
  return reportPath.replace(/\.json$/i, '') + '.csv';
}

/** Writes `report` to `path` as JSON and the CSV beside it (same name, .csv). Returns the CSV path. */
export async function writeSweepReport(path: string, report: SweepReport): Promise<string> {
  await writeAtomically(path, `${JSON.stringify(report, null, 2)}\n`);
  const csvPath = sweepCsvPath(path);
  await writeAtomically(csvPath, sweepCsv(report));
  return csvPath;
}

async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const WIDTH = 420;
const HEIGHT = 260;
const ok = (p: SweepPoint): boolean => p.status === 'ok';
const pointLabel = (p: SweepPoint): string => `B=${p.globalBatchSize} N=${p.workers}`;

/** A one-layer chart of the standard size. */
function singleChart(
  title: string,
  note: string,
  values: unknown[],
  mark: unknown,
  encoding: unknown,
): { title: string; note: string; spec: TopLevelSpec } {
  return { title, note, spec: { width: WIDTH, height: HEIGHT, data: { values }, mark, encoding } as TopLevelSpec };
}

/** The Vega-Lite specs of the report's charts, by title. Exported for tests. */
export function sweepCharts(report: SweepReport): { title: string; note: string; spec: TopLevelSpec }[] {
  const points = report.points.filter(ok);
  const batchAxis = {
    field: 'globalBatchSize',
    type: 'quantitative',
    title: 'global batch size B',
    scale: { type: 'log', base: 2 },
  } as const;
  const charts: { title: string; note: string; spec: TopLevelSpec }[] = [];
  const efficiency = points
    .filter((p) => p.measuredScalingEfficiency !== null)
    .map((p) => ({
      globalBatchSize: p.globalBatchSize,
      workers: `${p.workers} workers`,
      efficiency: p.measuredScalingEfficiency,
    }));
  charts.push({
    title: 'Scaling efficiency vs batch size',
    note: 'Measured: throughput(N) / (N × throughput(1)) at the same B and per-worker micro-batch. Larger batches amortize communication.',
    spec: {
      width: WIDTH,
      height: HEIGHT,
      data: { values: efficiency },
      layer: [
        {
          mark: { type: 'line', point: true },
          encoding: {
            x: batchAxis,
            y: { field: 'efficiency', type: 'quantitative', title: 'scaling efficiency', scale: { domain: [0, 1.1] } },
            color: { field: 'workers', type: 'nominal' },
          },
        },
        { mark: { type: 'rule', strokeDash: [4, 4], color: '#888' }, encoding: { y: { datum: 1 } } },
      ],
    },
  });
  charts.push(
    singleChart(
      'Throughput vs batch size',
      'Samples per second of wall time, per worker count.',
      points.map((p) => ({
        globalBatchSize: p.globalBatchSize,
        workers: `${p.workers} workers`,
        samplesPerSecond: p.samplesPerSecond,
      })),
      { type: 'line', point: true },
      {
        x: batchAxis,
        y: { field: 'samplesPerSecond', type: 'quantitative', title: 'samples / s' },
        color: { field: 'workers', type: 'nominal' },
      },
    ),
  );
  const memory = points
    .filter((p) => typeof p.peakMemoryBytes === 'number')
    .map((p) => ({
      microBatchSize: p.microBatchSize,
      peakMemoryMiB: p.peakMemoryBytes! / 2 ** 20,
      workers: `${p.workers} workers`,
      point: pointLabel(p),
    }));
  if (memory.length > 0) {
    charts.push(
      singleChart(
        'Peak memory vs micro-batch size',
        'Per point: the largest per-worker peak of live tensor bytes while computing one micro-batch (weights, ' +
          'activations and gradients of a chunk of at most --max-chunk samples, or of the whole micro-batch for a model ' +
          'with batch norm, which computes it in one pass). The micro-batch is B / --micro-batches ' +
          'unless --micro-batch fixes it; it does not depend on the worker count.',
        memory,
        { type: 'line', point: true },
        {
          x: {
            field: 'microBatchSize',
            type: 'quantitative',
            title: 'micro-batch size (samples)',
            scale: { type: 'log', base: 2 },
          },
          y: { field: 'peakMemoryMiB', type: 'quantitative', title: 'peak tensor memory per worker (MiB)' },
          color: { field: 'workers', type: 'nominal' },
          tooltip: [{ field: 'point' }],
        },
      ),
    );
  }
  const reached = points.filter(
    (p) => p.stepsToTarget !== null && p.workers === Math.min(...points.map((q) => q.workers)),
  );
  if (reached.length > 0) {
    const bs = reached.map((p) => p.globalBatchSize);
    const [bMin, bMax] = [Math.min(...bs), Math.max(...bs)];
    const first = reached.reduce((a, b) => (a.globalBatchSize < b.globalBatchSize ? a : b));
    const grid = Array.from({ length: 40 }, (_, i) => bMin * (bMax / bMin) ** (i / 39));
    const curves = [
      ...grid.map((b) => ({
        globalBatchSize: b,
        steps: (first.stepsToTarget! * first.globalBatchSize) / b,
        curve: 'perfect scaling (slope −1)',
      })),
      ...(report.fit
        ? grid.map((b) => ({
            globalBatchSize: b,
            steps: report.fit!.sMin + report.fit!.eMin / b,
            curve: 'fit S = S_min + E_min / B',
          }))
        : []),
    ];
    const layers: unknown[] = [
      {
        data: { values: curves },
        mark: { type: 'line', strokeDash: [5, 3] },
        encoding: {
          x: batchAxis,
          y: { field: 'steps', type: 'quantitative', scale: { type: 'log' }, title: 'steps to target' },
          color: { field: 'curve', type: 'nominal', title: null },
        },
      },
      {
        data: { values: reached.map((p) => ({ globalBatchSize: p.globalBatchSize, steps: p.stepsToTarget })) },
        mark: { type: 'point', filled: true, size: 70, color: 'black' },
        encoding: { x: batchAxis, y: { field: 'steps', type: 'quantitative', scale: { type: 'log' } } },
      },
    ];
    if (report.criticalBatchSize !== null && report.criticalBatchSize > 0) {
      layers.push({
        data: { values: [{ b: report.criticalBatchSize }] },
        mark: { type: 'rule', color: '#c00' },
        encoding: { x: { field: 'b', type: 'quantitative', scale: { type: 'log', base: 2 } } },
      });
    }
    charts.push({
      title: 'Steps to target vs batch size (log–log)',
      note: `Dashed: perfect scaling through the smallest batch, and the fitted S = S_min + E_min/B${report.criticalBatchSize !== null ? `; red rule: B_crit = ${Math.round(report.criticalBatchSize)}` : ''}${report.fitNote ? ` (${report.fitNote})` : ''}.`,
      spec: { width: WIDTH, height: HEIGHT, layer: layers } as TopLevelSpec,
    });
  }
  const noise = points.flatMap((p) =>
    (p.history ?? [])
      .filter((h) => h.bSimple !== null)
      .map((h) => ({ step: h.step, bSimple: h.bSimple, run: pointLabel(p) })),
  );
  if (noise.length > 0) {
    charts.push(
      singleChart(
        'Gradient noise scale over training',
        'B_simple = tr(Σ)/|G|² (McCandlish et al. 2018), smoothed; a heuristic for the critical batch size.',
        noise,
        'line',
        {
          x: { field: 'step', type: 'quantitative' },
          y: { field: 'bSimple', type: 'quantitative', title: 'B_simple', scale: { type: 'symlog' } },
          color: { field: 'run', type: 'nominal' },
        },
      ),
    );
  }
  const phases = points.flatMap((p) =>
    Object.entries(p.phaseSeconds ?? {})
      .filter(([phase]) => phase !== 'compute')
      .map(([phase, seconds]) => ({ point: pointLabel(p), phase, ms: seconds * 1000 })),
  );
  if (phases.length > 0) {
    charts.push(
      singleChart(
        'Step time breakdown',
        'Mean milliseconds per step by coordinator phase; gather-wait includes the workers\u2019 compute.',
        phases,
        'bar',
        {
          x: { field: 'point', type: 'nominal', sort: null, title: null },
          y: { field: 'ms', type: 'quantitative', title: 'ms per step', stack: 'zero' },
          color: { field: 'phase', type: 'nominal' },
        },
      ),
    );
  }
  const gap = points.filter((p) => typeof p.trainAccuracy === 'number' && typeof p.evalAccuracy === 'number');
  if (gap.length > 0) {
    charts.push(
      singleChart(
        'Generalization: train vs eval accuracy',
        'Accuracy on training samples (inference mode) and on the test split at the end of each run.',
        gap.flatMap((p) => [
          { globalBatchSize: p.globalBatchSize, workers: p.workers, split: 'train', accuracy: p.trainAccuracy },
          { globalBatchSize: p.globalBatchSize, workers: p.workers, split: 'eval', accuracy: p.evalAccuracy },
        ]),
        { type: 'line', point: true },
        {
          x: batchAxis,
          y: { field: 'accuracy', type: 'quantitative', scale: { zero: false } },
          color: { field: 'split', type: 'nominal' },
          detail: { field: 'workers' },
        },
      ),
    );
  }
  return charts;
}

const escape = (s: string | number | boolean | null | undefined): string =>
  String(s ?? '').replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const fmt = (v: string | number | boolean | null | undefined, digits = 3): string =>
  typeof v === 'number' && Number.isFinite(v)
    ? String(+v.toPrecision(digits))
    : v === null || v === undefined
      ? '–'
      : escape(v);

/** The self-contained HTML page: summary, charts as inline SVG, and the table of points. */
export async function renderSweepHtml(report: SweepReport): Promise<string> {
  const charts = await Promise.all(sweepCharts(report).map(async (c) => ({ ...c, svg: await renderSvg(c.spec) })));
  const rows = report.points
    .map(
      (p) =>
        `<tr class="${p.status}"><td>${p.globalBatchSize}</td><td>${p.workers}</td><td>${p.microBatchSize}</td><td>${fmt(p.learningRate)}</td><td>${p.status}</td>` +
        `<td>${fmt(p.samplesPerSecond, 4)}</td><td>${fmt(p.measuredScalingEfficiency)}</td><td>${fmt(p.scalingEfficiency)}</td><td>${fmt(p.stepsToTarget)}</td>` +
        `<td>${fmt(p.finalLoss, 4)}</td><td>${fmt(p.evalAccuracy, 4)}</td><td>${fmt(p.generalizationGap, 3)}</td><td>${fmt(p.gradientNoiseScale)}</td><td>${fmt(typeof p.peakMemoryBytes === 'number' ? p.peakMemoryBytes / 2 ** 20 : null)}</td><td>${escape(p.error ?? '')}</td></tr>`,
    )
    .join('\n');
  const target =
    report.target.accuracy !== null
      ? `eval accuracy ≥ ${report.target.accuracy}`
      : report.target.loss !== null
        ? `smoothed training loss ≤ ${report.target.loss}`
        : 'none';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>batchlab sweep</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
.charts{display:flex;flex-wrap:wrap;gap:1.5em}.chart{border:1px solid #ddd;padding:.8em;border-radius:6px}
.chart p{font-size:.85em;color:#555;max-width:${WIDTH + 80}px}table{border-collapse:collapse;font-size:.85em;margin-top:1em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}tr.diverged,tr.failed{background:#fee}code{background:#f4f4f4;padding:.1em .3em}
</style></head><body>
<h1>batchlab sweep</h1>
<p><code>${escape(report.command)}</code></p>
<p>Target: ${escape(target)}. Critical batch size from the steps-to-target fit: <b>${fmt(report.criticalBatchSize)}</b>${report.fit ? ` (S_min ${fmt(report.fit.sMin)}, E_min ${fmt(report.fit.eMin)}, R² ${fmt(report.fit.r2)})` : report.fitNote ? ` (${escape(report.fitNote)})` : ''}.
Average gradient noise scale B_simple: <b>${fmt(report.averageNoiseScale)}</b> (a heuristic for the critical batch size, not the same quantity).</p>
<div class="charts">
${charts.map((c) => `<div class="chart"><h3>${escape(c.title)}</h3>${c.svg}<p>${escape(c.note)}</p></div>`).join('\n')}
</div>
<h2>Points</h2>
<table><tr><th>B</th><th>workers</th><th>micro-batch</th><th>lr</th><th>status</th><th>samples/s</th><th>measured eff.</th><th>live eff.</th><th>steps to target</th><th>final loss</th><th>eval acc.</th><th>gap</th><th>B_simple</th><th>peak memory (MiB)</th><th>error</th></tr>
${rows}
</table>
</body></html>
`;
}

/** Writes the HTML page to `path`. */
export async function writeSweepHtml(path: string, report: SweepReport): Promise<void> {
  await writeAtomically(path, await renderSweepHtml(report));
}
