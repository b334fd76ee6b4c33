// `batchlab bench` end to end for its fast sections: real child processes and sockets, JSON with
// the fields the issue names. Only structure and consistency are asserted, never speeds.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../cli/bench.js';
import { formatBench } from '../../cli/bench.js';
import { runCli } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-bench-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('batchlab bench --quick --only transport,reduce', () => {
  it('measures raw TCP and ws side by side and reduce+apply against an add loop, and writes the JSON', async () => {
    const file = join(dir, 'bench.json');
    const result = await runCli(['bench', '--quick', '--only', 'transport,reduce', '--json', file], {}, 120_000);
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    const t = report.transport!;
    expect(t.rawTcpBytesPerSecond).toBeGreaterThan(0);
    expect(t.wsBytesPerSecond).toBeGreaterThan(0);
    // The ratio is the median of the adjacent rounds' ratios (6 pairs in --quick).
    expect(t.roundRatios).toHaveLength(6);
    const sorted = [...t.roundRatios].sort((a, b) => a - b);
    expect(t.ratio).toBeCloseTo((sorted[2]! + sorted[3]!) / 2, 10);
    expect(t.points.map((p) => p.messageBytes)).toEqual([940_000, 20_000_000]);
    expect(t.wsRoundTripSeconds).toBeGreaterThan(0);
    const r = report.reduce!;
    expect(r.params).toBe(235_146);
    expect(r.vsJsAddLoopRatio).toBeCloseTo(r.paramsPerSecond / r.addLoopParamsPerSecond, 10);
    expect(r.points.length).toBeGreaterThanOrEqual(3);
    // Each section asked for is timed, and only those.
    expect(Object.keys(report.sectionSeconds).sort()).toEqual(['reduce', 'transport']);
    expect(report.sectionSeconds.transport! + report.sectionSeconds.reduce!).toBeLessThanOrEqual(report.wallSeconds);
    // Sections not asked for are absent, and so is the model check that needs them.
    expect(report.scaling).toBeUndefined();
    expect(report.peer).toBeUndefined();
    expect(report.model).toBeUndefined();
    expect(result.stdout).toContain('transport (loopback, one message in flight)');
    expect(result.stdout).toContain('reduce + apply');
  }, 150_000);
});

describe('formatBench', () => {
  it('prints the DDP comparison and the model check when the report has them', () => {
    const report: BenchReport = {
      quick: true,
      startedAt: '2026-11-28T00:00:00Z',
      machine: { cpus: 2, cpuModel: 'test cpu', memoryGiB: 24, node: '20', platform: 'linux-x64' },
      scaling: [
        {
          model: 'mlp',
          reducer: 'sharded',
          globalBatchSize: 512,
          workers: 2,
          samplesPerSecond: 5000,
          scalingEfficiency: 0.9,
        },
      ],
      peer: { available: false, reason: 'python3 cannot import torch' },
      comparison: [
        {
          globalBatchSize: 512,
          reducer: 'sharded',
          pairs: 5,
          batchlabEfficiencies: [0.9, 0.8, 0.95, 0.9, 1],
          peerEfficiencies: [0.85, 0.8, 0.9, 0.85, 0.8],
          batchlabSamplesPerSecond: 5000,
          batchlabScalingEfficiency: 0.9,
          peerSamplesPerSecond: 4000,
          peerScalingEfficiency: 0.85,
          throughputRatio: 1.25,
        },
      ],
      wallSeconds: 1,
      sectionSeconds: { scaling: 1 },
    };
    const text = formatBench(report);
    expect(text).toContain('peer (PyTorch DDP): not run: python3 cannot import torch');
    expect(text).toMatch(/B=512 +2 workers sharded +5,000 +90\.0%/);
    expect(text).toContain('batchlab (sharded) vs DDP, MLP, 2 workers, medians of 5 interleaved pairs');
    expect(text).toMatch(/B=512 .*90\.0% \/ 85\.0% .*5,000 \/ 4,000 = 1\.25/);
  });

  it('prints ResNet-20 beside PyTorch with the ratio, or why PyTorch did not run', () => {
    const base = {
      quick: true,
      startedAt: '2026-12-06T00:00:00Z',
      machine: { cpus: 2, cpuModel: 'test cpu', memoryGiB: 24, node: '20', platform: 'linux-x64' },
      backends: [
        { backend: 'wasm', model: 'resnet', batch: 32, samplesPerSecond: 80, ratioToPytorch: 0.5 },
        { backend: 'cpu', model: 'resnet', batch: 4, samplesPerSecond: 2.5, ratioToPytorch: 0.05 },
      ],
      wallSeconds: 1,
      sectionSeconds: { backends: 1 },
    } satisfies BenchReport;
    const text = formatBench({
      ...base,
      pytorchGradient: {
        available: true,
        python: '/usr/bin/python3',
        torchVersion: '1.13.0',
        threads: 1,
        model: 'resnet',
        depth: 20,
        params: 272_474,
        points: [
          { batch: 4, samplesPerSecond: 50, calls: 10, seconds: 0.8 },
          { batch: 32, samplesPerSecond: 160, calls: 30, seconds: 6 },
        ],
      },
    });
    expect(text).toMatch(/wasm +resnet batch 32 +80\.0 +0\.50×/);
    expect(text).toMatch(/cpu +resnet batch 4 +2\.5 +0\.05×/);
    expect(text).toMatch(/PyTorch 1\.13\.0, 1 thread, resnet batch 32 +160\.0/);
    const without = formatBench({
      ...base,
      pytorchGradient: { available: false, reason: 'python3 cannot import torch' },
    });
    expect(without).toContain('PyTorch resnet: not run: python3 cannot import torch');
  });
});
