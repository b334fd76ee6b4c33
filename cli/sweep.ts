// `batchlab sweep`: one local run per (global batch, worker count, learning rate) point, with
// measured scaling efficiency against the 1-worker point at the same batch, steps to a target,
// the best LR of a grid, and a fit of the steps–examples law (Shallue et al. 2019;
// McCandlish et al. 2018). A point that fails or diverges is recorded and the sweep goes on.

import type { RecordedConfig, RunReport } from '../coordinator/report.js';
import type { RunConfig } from '../coordinator/run-config.js';
import { measuredScalingEfficiency } from '../shared/efficiency.js';
import { describeError, hasCode, recoveryOf } from '../shared/errors.js';
import { fitCriticalBatch } from '../shared/statistics/critical-batch.js';
import { runLocal, type RunOrigin } from './local.js';
import type { LocalRunConfig } from '../coordinator/launch-local.js';
import { ProgressReporter } from './progress.js';
import { startSweepMetrics } from './sweep-report.js';

export interface SweepSettings extends Omit<
  RunConfig,
  'globalBatchSize' | 'microBatch' | 'lr' | 'report' | 'saveModel' | 'trace'
> {
  globalBatches: number[];
  workerCounts: number[];
  /** Per-worker micro-batch; null: B / micro-batch count. */
  microBatch: number | null;
  /** Micro-batches per step when --micro-batch is not given; null: the largest worker count. */
  microBatchCount: number | null;
  lrGrid: number[];
  report?: string;
  html?: string;
}

export type PointStatus = 'ok' | 'diverged' | 'failed';

/** One (B, N) point: the report of its best-LR run, plus sweep-level columns. */
export interface SweepPoint extends Partial<RunReport> {
  globalBatchSize: number;
  workers: number;
  microBatchSize: number;
  learningRate: number;
  status: PointStatus;
  error: string | null;
  /** throughput(N) / (N × throughput(1)) at the same B and micro-batch; null without a 1-worker point. */
  measuredScalingEfficiency: number | null;
  stepsToTarget: number | null;
  samplesToTarget: number | null;
  /** Every LR tried at this point (when a grid was given). */
  grid: {
    learningRate: number;
    status: PointStatus;
    stepsToTarget: number | null;
    finalLoss: number | null;
    evalAccuracy: number | null;
  }[];
}

export interface SweepReport {
  command: string;
  /** The sweep's options as a config file holds them (see RunReport); null in process. */
  config: RecordedConfig | null;
  target: { accuracy: number | null; loss: number | null };
  points: SweepPoint[];
  /** Fit of S = S_min + E_min / B over the points that reached the target; null when not fittable. */
  criticalBatchSize: number | null;
  fit: { sMin: number; eMin: number; bCrit: number; r2: number } | null;
  /** Why there is no fit, when there is none. */
  fitNote: string | null;
  /** Mean of the points' final B_simple, to set beside criticalBatchSize (a heuristic for it). */
  averageNoiseScale: number | null;
}

/** How good a run is for picking the best LR: fewest steps to target, else lowest final loss. */
function score(r: RunReport): number {
  if (r.stepsToTarget !== null) return r.stepsToTarget;
  return 1e12 + (Number.isFinite(r.finalLoss ?? NaN) ? r.finalLoss! : 1e6);
}

/** Runs every point in order (batches ascending, then worker counts ascending) and returns the report. */
export async function runSweep(
  settings: SweepSettings,
  { command, config }: RunOrigin,
  out: NodeJS.WritableStream & { isTTY?: boolean },
): Promise<SweepReport> {
  const batches = [...settings.globalBatches].sort((a, b) => a - b);
  const workerCounts = [...settings.workerCounts].sort((a, b) => a - b);
  const maxWorkers = workerCounts[workerCounts.length - 1]!;
  const total = batches.length * workerCounts.length * settings.lrGrid.length;
  const points: SweepPoint[] = [];
  // --metrics-port is the sweep's own endpoint: each point's result appears there as it completes.
  // The runs serve none, so nothing else takes that port and no run's gauges outlive it.
  const endpoint =
    settings.metricsPort === null
      ? null
      : await startSweepMetrics(settings.metricsPort, batches.length * workerCounts.length);
  if (endpoint) out.write(`sweep metrics at ${endpoint.url}\n`);
  try {
    await runPoints();
  } finally {
    await endpoint?.close();
  }
  return summarize(settings, { command, config }, batches, points);

  async function runPoints(): Promise<void> {
    let index = 0;
    for (const globalBatchSize of batches) {
      // Every point of a batch uses the same micro-batches, so only the worker count varies.
      const microBatch =
        settings.microBatch ?? Math.max(1, Math.floor(globalBatchSize / (settings.microBatchCount ?? maxWorkers)));
      for (const workers of workerCounts) {
        const runs: { lr: number; report: RunReport | null; status: PointStatus; error: string | null }[] = [];
        for (const lr of settings.lrGrid) {
          index++;
          out.write(
            `\n[${index}/${total}] global batch ${globalBatchSize}, ${workers} worker${workers > 1 ? 's' : ''}, micro-batch ${microBatch}, lr ${lr}\n`,
          );
          const local: LocalRunConfig = {
            ...settings,
            globalBatchSize,
            microBatch: Math.min(microBatch, globalBatchSize),
            lr,
            workers,
            minWorkers: workers,
            metricsPort: null,
            debugSlowdown: [],
          };
          delete (local as Partial<SweepSettings>).report;
          const progress = new ProgressReporter(out);
          try {
            const report = await runLocal(local, { command }, progress, true);
            progress.finish();
            runs.push({ lr, report, status: 'ok', error: null });
            out.write(
              `  → ${Math.round(report.samplesPerSecond ?? 0)} samples/s, final loss ${report.finalLoss?.toFixed(4)}, eval accuracy ${((report.evalAccuracy ?? 0) * 100).toFixed(2)}%` +
                `${report.targetReached === null ? '' : report.targetReached ? `, target after ${report.stepsToTarget} steps` : ', target not reached'}\n`,
            );
          } catch (error) {
            progress.finish();
            if (recoveryOf(error) === 'interrupted') throw error;
            const message = describeError(error);
            const status: PointStatus = hasCode(error, 'NON_FINITE') ? 'diverged' : 'failed';
            runs.push({ lr, report: null, status, error: message });
            out.write(`  → ${status}: ${message}\n`);
          }
        }
        const ok = runs.filter((r) => r.report !== null).sort((a, b) => score(a.report!) - score(b.report!));
        const best = ok[0] ?? runs[0]!;
        // A point's run has no config of its own: the sweep's is in the sweep report.
        const { history: _history, config: _config, ...reportWithoutHistory } = best.report ?? ({} as RunReport);
        const point: SweepPoint = {
          ...(best.report ? reportWithoutHistory : {}),
          history: best.report?.history ?? [],
          globalBatchSize,
          workers,
          microBatchSize: Math.min(microBatch, globalBatchSize),
          learningRate: best.lr,
          status: best.status,
          error: best.error,
          measuredScalingEfficiency: null,
          stepsToTarget: best.report?.stepsToTarget ?? null,
          samplesToTarget: best.report?.samplesToTarget ?? null,
          grid: runs.map((r) => ({
            learningRate: r.lr,
            status: r.status,
            stepsToTarget: r.report?.stepsToTarget ?? null,
            finalLoss: r.report?.finalLoss ?? null,
            evalAccuracy: r.report?.evalAccuracy ?? null,
          })),
        };
        // Worker counts run in ascending order: the 1-worker point of this batch, if any, is done.
        const single = [...points, point].find(
          (p) => p.globalBatchSize === point.globalBatchSize && p.workers === 1 && p.status === 'ok',
        );
        if (single?.samplesPerSecond && point.status === 'ok' && point.samplesPerSecond) {
          point.measuredScalingEfficiency = measuredScalingEfficiency(
            point.samplesPerSecond,
            point.workers,
            single.samplesPerSecond,
          );
        }
        points.push(point);
        endpoint?.record(point);
      }
    }
  }
}

/** The sweep-level results over every point: the steps–examples fit and the mean noise scale. */
function summarize(
  settings: SweepSettings,
  { command, config }: RunOrigin,
  batches: number[],
  points: SweepPoint[],
): SweepReport {
  // Steps to target do not depend on the worker count (same weights): one point per batch size.
  const reached = batches
    .map((b) => points.find((p) => p.globalBatchSize === b && p.stepsToTarget !== null))
    .filter((p): p is SweepPoint => p !== undefined)
    .map((p) => ({ globalBatchSize: p.globalBatchSize, steps: p.stepsToTarget! }));
  const fit = fitCriticalBatch(reached);
  const fitted = fit.fittable ? fit : null;
  const noise = points
    .map((p) => p.gradientNoiseScale)
    .filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  return {
    command,
    config: config ?? null,
    target: { accuracy: settings.targetAccuracy, loss: settings.targetLoss },
    points,
    criticalBatchSize: fitted ? fitted.bCrit : null,
    fit: fitted ? { sMin: fitted.sMin, eMin: fitted.eMin, bCrit: fitted.bCrit, r2: fitted.r2 } : null,
    fitNote: fit.fittable
      ? null
      : settings.targetAccuracy === null && settings.targetLoss === null
        ? 'no target given (--target-accuracy or --target-loss)'
        : fit.reason,
    averageNoiseScale: noise.length ? noise.reduce((a, b) => a + b, 0) / noise.length : null,
  };
}
