// The sweep page's memory chart draws each point's peakMemoryBytes against its micro-batch size.

import { describe, expect, it } from 'vitest';
import { renderSweepHtml } from '../../cli/sweep-report.js';
import { formatSweepSummary } from '../../cli/summary.js';
import type { SweepPoint, SweepReport } from '../../cli/sweep.js';
import { memoryChartPoints } from '../support/report.js';

function point(globalBatchSize: number, workers: number, microBatchSize: number, peak: number | null): SweepPoint {
  return {
    globalBatchSize,
    workers,
    microBatchSize,
    learningRate: 0.01,
    status: 'ok',
    error: null,
    measuredScalingEfficiency: 1,
    stepsToTarget: null,
    samplesToTarget: null,
    grid: [],
    samplesPerSecond: 100,
    ...(peak === null ? {} : { peakMemoryBytes: peak }),
  };
}

const report = (points: SweepPoint[]): SweepReport => ({
  command: 'batchlab sweep',
  config: null,
  target: { accuracy: null, loss: null },
  points,
  criticalBatchSize: null,
  fit: null,
  fitNote: 'no target given',
  averageNoiseScale: null,
});

describe('sweep report: peak memory', () => {
  it('charts each point at its micro-batch size and peak, in MiB', async () => {
    const html = await renderSweepHtml(
      report([
        point(16, 1, 8, 1_048_576),
        point(16, 2, 8, 1_048_576),
        point(64, 1, 32, 3_145_728),
        point(64, 2, 16, 2_097_152),
      ]),
    );
    expect(memoryChartPoints(html).sort((a, b) => a.point.localeCompare(b.point))).toEqual([
      { point: 'B=16 N=1', microBatch: 8, mib: 1 },
      { point: 'B=16 N=2', microBatch: 8, mib: 1 },
      { point: 'B=64 N=1', microBatch: 32, mib: 3 },
      { point: 'B=64 N=2', microBatch: 16, mib: 2 },
    ]);
    expect(html).toContain("X-axis titled 'micro-batch size (samples)'");
    // A batch-norm model computes the micro-batch in one pass: the note must not promise chunks only.
    expect(html).toContain('or of the whole micro-batch for a model with batch norm, which computes it in one pass');
  });

  it('has no memory chart when no point measured memory, and the table says so', async () => {
    const r = report([point(16, 1, 8, null)]);
    const html = await renderSweepHtml(r);
    expect(html).not.toContain('Peak memory vs micro-batch size');
    expect(memoryChartPoints(html)).toEqual([]);
    expect(formatSweepSummary(r)).toMatch(/peak memory\n.* - *\n/);
  });

  it('prints the micro-batch and the peak in the summary table', () => {
    const text = formatSweepSummary(report([point(64, 2, 32, 3_145_728)]));
    expect(text).toMatch(/micro-batch .* peak memory/);
    expect(text).toMatch(/ 64 +2 +32 .* 3\.0 MiB/);
  });
});
