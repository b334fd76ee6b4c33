// `batchlab sweep` end to end on small synthetic points: every (B, N) point is run by real
// processes and reported in JSON, CSV and a self-contained HTML page of SVG charts.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { runCli, startCli } from '../support/cli.js';
import { waitForText, watch } from '../support/processes.js';
import { memoryChartPoints, REPORT_KEYS } from '../support/report.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-sweep-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('runs every point, measures efficiency against 1 worker, finds steps to target, and writes JSON, CSV and HTML', async () => {
  const report = join(dir, 'sweep.json');
  const html = join(dir, 'sweep.html');
  const result = await runCli(
    [
      'sweep',
      '--dataset',
      'synthetic',
      '--hidden',
      '32',
      '--global-batch',
      '16,64',
      '--workers',
      '1,2',
      '--steps',
      '40',
      '--optimizer',
      'adam',
      '--lr-grid',
      '0.003,0.01',
      '--target-loss',
      '1.9',
      '--eval-every',
      '0',
      '--report',
      report,
      '--html',
      html,
    ],
    {},
    300_000,
  );
  expect(result.code, result.stderr.slice(-3000)).toBe(0);
  const sweep = JSON.parse(readFileSync(report, 'utf8'));

  expect(
    sweep.points.map((p: { globalBatchSize: number; workers: number }) => `${p.globalBatchSize}x${p.workers}`),
  ).toEqual(['16x1', '16x2', '64x1', '64x2']);
  for (const p of sweep.points) {
    for (const key of [...REPORT_KEYS, 'stepsToTarget', 'samplesToTarget']) {
      expect(p, key).toHaveProperty(key);
    }
    expect(p.status).toBe('ok');
    // Micro-batch = B / largest worker count, the same for 1 and 2 workers.
    expect(p.microBatchSize).toBe(p.globalBatchSize / 2);
    expect(p.grid.map((g: { learningRate: number }) => g.learningRate)).toEqual([0.003, 0.01]);
    expect([0.003, 0.01]).toContain(p.learningRate);
    expect(p.measuredScalingEfficiency).toBeGreaterThan(0);
  }
  const byKey = new Map(
    sweep.points.map((p: { globalBatchSize: number; workers: number }) => [`${p.globalBatchSize}x${p.workers}`, p]),
  );
  expect((byKey.get('16x1') as { measuredScalingEfficiency: number }).measuredScalingEfficiency).toBe(1);
  // Same batch, same LR: 1 and 2 workers train the same weights, so they end with the same loss
  // and reach the target at the same step (which they do reach: null = null would prove nothing).
  for (const b of [16, 64]) {
    const one = byKey.get(`${b}x1`) as { stepsToTarget: number | null; learningRate: number; finalLoss: number };
    const two = byKey.get(`${b}x2`) as { stepsToTarget: number | null; learningRate: number; finalLoss: number };
    expect(two.learningRate).toBe(one.learningRate);
    expect(one.stepsToTarget, `B=${b}, 1 worker`).not.toBeNull();
    expect(two.stepsToTarget).toBe(one.stepsToTarget);
    expect(two.finalLoss).toBe(one.finalLoss);
  }
  expect(sweep).toHaveProperty('criticalBatchSize');
  expect(sweep).toHaveProperty('fit');
  // Memory: a micro-batch of 32 needs more than one of 8, and the worker count does not change it.
  type Measured = { peakMemoryBytes: number; workerMemory: { peakTensorBytes: number }[] };
  for (const p of sweep.points as Measured[]) {
    expect(p.peakMemoryBytes).toBeGreaterThan(0);
    expect(p.peakMemoryBytes).toBe(Math.max(...p.workerMemory.map((w) => w.peakTensorBytes)));
  }
  const peak = (key: string): number => (byKey.get(key) as Measured).peakMemoryBytes;
  expect(peak('64x1')).toBeGreaterThan(peak('16x1'));
  expect(peak('16x2')).toBe(peak('16x1'));
  expect(peak('64x2')).toBe(peak('64x1'));

  const csv = readFileSync(join(dir, 'sweep.csv'), 'utf8').trim().split('\n');
  expect(csv[0]).toMatch(
    /^globalBatchSize,workers,microBatchSize,learningRate,status,samplesPerSecond,measuredScalingEfficiency/,
  );
  expect(csv).toHaveLength(5);
  expect(csv[0]).toContain(',peakMemoryBytes,peakRssBytes,');

  const page = readFileSync(html, 'utf8');
  expect(page).toMatch(/^<!doctype html>/);
  expect(page).not.toMatch(/<script/);
  expect(page.match(/<svg /g)?.length ?? 0).toBeGreaterThanOrEqual(4);
  for (const title of [
    'Scaling efficiency vs batch size',
    'Throughput vs batch size',
    'Gradient noise scale over training',
    'Step time breakdown',
  ])
    expect(page).toContain(title);
  // The memory chart draws every point at its micro-batch size and peak.
  expect(memoryChartPoints(page).sort((a, b) => a.point.localeCompare(b.point))).toEqual(
    ['16x1', '16x2', '64x1', '64x2'].map((key) => {
      const p = byKey.get(key) as { globalBatchSize: number; workers: number; microBatchSize: number };
      return {
        point: `B=${p.globalBatchSize} N=${p.workers}`,
        microBatch: p.microBatchSize,
        mib: +(peak(key) / 2 ** 20).toPrecision(12),
      };
    }),
  );
  expect(result.stdout).toMatch(/peak memory/);
  expect(result.stdout).toMatch(/batchlab sweep summary/);
}, 300_000);

it('records a diverging learning rate as diverged and goes on with the rest of the grid', async () => {
  const report = join(dir, 'diverge.json');
  const result = await runCli(
    [
      'sweep',
      '--dataset',
      'synthetic',
      '--hidden',
      '64',
      '--global-batch',
      '32',
      '--workers',
      '1',
      '--steps',
      '30',
      '--optimizer',
      'sgd',
      '--lr-grid',
      '90,0.05',
      '--eval-every',
      '0',
      '--report',
      report,
    ],
    {},
    300_000,
  );
  expect(result.code, result.stderr.slice(-3000)).toBe(0);
  const sweep = JSON.parse(readFileSync(report, 'utf8'));
  expect(sweep.points).toHaveLength(1);
  const [point] = sweep.points;
  expect(point.grid.map((g: { learningRate: number; status: string }) => `${g.learningRate}:${g.status}`)).toEqual([
    '90:diverged',
    '0.05:ok',
  ]);
  expect(point.status).toBe('ok');
  expect(point.learningRate).toBe(0.05);
  expect(result.stderr).toMatch(/diverged: \[NON_FINITE\]/);
}, 300_000);

it("serves each point's measured efficiency, throughput and steps to target on --metrics-port as the point completes", async () => {
  const report = join(dir, 'served.json');
  const child = startCli([
    'sweep',
    '--dataset',
    'synthetic',
    '--hidden',
    '32',
    '--global-batch',
    '16,32',
    '--workers',
    '1,2',
    '--steps',
    '15',
    '--target-loss',
    '5',
    '--eval-every',
    '0',
    '--metrics-port',
    '0',
    '--report',
    report,
  ]);
  const { output, exit } = watch(child);
  const url = (await waitForText(output, /sweep metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/, 120_000))[1]!;
  // Three points are recorded before the fourth starts; the sweep is still serving then.
  await waitForText(output, /\[4\/4\]/, 240_000);
  const text = await (await fetch(url)).text();
  expect(await exit, output().slice(-3000)).toBe(0);
  const sweep = JSON.parse(readFileSync(report, 'utf8'));
  const series = (name: string): Map<string, number> =>
    new Map(
      [
        ...text.matchAll(
          new RegExp(`^${name}\\{global_batch_size="(\\d+)",workers="(\\d+)",role="sweep"\\} (\\S+)$`, 'gm'),
        ),
      ].map((m) => [`${m[1]}x${m[2]}`, Number(m[3])]),
    );
  const efficiency = series('batchlab_sweep_scaling_efficiency_ratio');
  const throughput = series('batchlab_sweep_throughput_samples_per_second');
  const steps = series('batchlab_sweep_steps_to_target');
  expect([...efficiency.keys()].sort()).toEqual(['16x1', '16x2', '32x1']);
  expect([...throughput.keys()].sort()).toEqual(['16x1', '16x2', '32x1']);
  expect([...steps.keys()].sort()).toEqual(['16x1', '16x2', '32x1']);
  for (const p of sweep.points.slice(0, 3)) {
    const key = `${p.globalBatchSize}x${p.workers}`;
    expect(efficiency.get(key), key).toBeCloseTo(p.measuredScalingEfficiency, 9);
    expect(throughput.get(key), key).toBeCloseTo(p.samplesPerSecond, 6);
    expect(steps.get(key), key).toBe(p.stepsToTarget);
  }
  expect(efficiency.get('16x1')).toBe(1);
  expect(text).toMatch(/^batchlab_sweep_points_total\{status="ok",role="sweep"\} 3$/m);
  expect(text).toMatch(/^batchlab_sweep_points_planned\{role="sweep"\} 4$/m);
  expect(text).toMatch(/^process_cpu_seconds_total\{role="sweep"\} /m);
  // The runs serve no endpoint of their own: the only metrics address printed is the sweep's.
  expect(output().match(/metrics at http/g)).toHaveLength(1);
}, 300_000);
