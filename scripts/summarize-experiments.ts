// Prints the numbers docs/EXPERIMENTS.md quotes, from the reports scripts/run-experiments.sh
// wrote to docs/experiments/. Usage: node dist/scripts/summarize-experiments.js [DIR]

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] ?? 'docs/experiments';

interface History {
  step: number;
  bSimple: number | null;
}
interface Report {
  samplesPerSecond: number | null;
  evalAccuracy: number | null;
  trainAccuracy: number | null;
  finalLoss: number | null;
  steps: number;
  peakLearningRate: number;
  gradientNoiseScale: number | null;
  history: History[];
}

function read<T>(name: string): T | null {
  const path = join(dir, name);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as T) : null;
}

const pct = (v: number | null | undefined): string =>
  v === null || v === undefined ? '-' : `${(100 * v).toFixed(2)}%`;

function sweep(): void {
  const report = read<{
    points: (Report & { globalBatchSize: number; workers: number; measuredScalingEfficiency: number | null })[];
  }>('sweep-32-512.json');
  if (!report) return;
  console.log('## sweep (B = 32, 512; N = 1, 2)');
  for (const p of report.points)
    console.log(
      `B=${p.globalBatchSize} N=${p.workers}: ${Math.round(p.samplesPerSecond ?? 0)} samples/s, measured efficiency ${pct(p.measuredScalingEfficiency)}, B_simple ${Math.round(p.gradientNoiseScale ?? NaN)}`,
    );
}

function meanNoise(history: History[], from: number, to: number): number {
  const values = history.filter((h) => h.step >= from && h.step < to && h.bSimple !== null).map((h) => h.bSimple!);
  return values.reduce((a, b) => a + b, 0) / values.length;
}

function temperature(): void {
  const report = read<Report>('temperature.json');
  if (!report) return;
  const before = meanNoise(report.history, 250, 300);
  const during = meanNoise(report.history, 550, 600);
  const after = meanNoise(report.history, 850, 900);
  console.log('## temperature law (LR / 4 for steps 300-600)');
  console.log(
    `mean B_simple: steps 250-299 ${before.toFixed(1)}, 550-599 ${during.toFixed(1)}, 850-899 ${after.toFixed(1)}`,
  );
  console.log(
    `rise during the window: ${(during / before).toFixed(2)}x (expected 2-8x); after / before: ${(after / before).toFixed(2)} (expected 0.5-1.5)`,
  );
  const control = read<Report>('temperature-control.json');
  if (!control) return;
  const c = [
    meanNoise(control.history, 250, 300),
    meanNoise(control.history, 550, 600),
    meanNoise(control.history, 850, 900),
  ];
  console.log(`control run (no window): ${c.map((v) => v.toFixed(1)).join(', ')}`);
  console.log(
    `windowed / control at the same steps: during ${(during / c[1]!).toFixed(2)}x, after ${(after / c[2]!).toFixed(2)}x`,
  );
}

function goyal(): void {
  const runs = ['baseline-128', 'none-1024', 'sqrt-1024', 'linear-1024'].map(
    (name) => [name, read<Report>(`goyal-${name}.json`)] as const,
  );
  if (runs.some(([, r]) => !r)) return;
  console.log('## Goyal ordering (3 epochs, SGD momentum 0.9, eta 0.05 at B0 = 128)');
  const base = runs[0]![1]!.evalAccuracy!;
  for (const [name, r] of runs) {
    console.log(
      `${name}: peak lr ${r!.peakLearningRate.toPrecision(3)}, ${r!.steps} steps, test error ${pct(1 - r!.evalAccuracy!)}, vs baseline ${((base - r!.evalAccuracy!) * 100).toFixed(2)} points worse`,
    );
  }
}

function anchor(): void {
  const k1 = read<Report>('anchor-k1.json');
  const k4 = read<Report>('anchor-k4.json');
  if (!k1 || !k4) return;
  console.log('## accuracy anchor (MLP 784-100-10, Adam 1e-3, B = 200, 10 epochs)');
  console.log(
    `K=1: test accuracy ${pct(k1.evalAccuracy)}, train ${pct(k1.trainAccuracy)}; K=4: test accuracy ${pct(k4.evalAccuracy)}`,
  );
  const a = readFileSync(join(dir, 'anchor-k1-model', 'weights.bin'));
  const b = readFileSync(join(dir, 'anchor-k4-model', 'weights.bin'));
  const wa = new Float32Array(a.buffer, a.byteOffset, a.byteLength / 4);
  const wb = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < wa.length; i++) {
    diff = Math.max(diff, Math.abs(wa[i]! - wb[i]!));
    scale = Math.max(scale, Math.abs(wa[i]!));
  }
  console.log(
    `K=1 vs K=4 weights: max |a-b| / max |a| = ${(diff / scale).toExponential(2)}${a.equals(b) ? ' (identical bytes)' : ''}`,
  );
  const long = read<Report>('anchor-30-epochs.json');
  if (long) console.log(`30 epochs (K=2): test accuracy ${pct(long.evalAccuracy)}, train ${pct(long.trainAccuracy)}`);
}

sweep();
temperature();
goyal();
anchor();
