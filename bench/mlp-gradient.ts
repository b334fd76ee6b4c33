// Benchmark of per-sample gradient throughput for the default MLP (784-256-128-10, relu), measured
// side by side in one process, per backend (wasm, and the pure-JS cpu backend for reference):
//  1. one micro-batch fwd+bwd at B = 32, 128, 256: the stock path (tf.variableGrads over
//     model.apply + softmaxCrossEntropy, as worker/gradient.ts did before its dense fast path)
//     against worker/gradient.ts computeMicroBatch (which takes the dense fast path for this
//     model), with the two gradients' max relative difference as a sanity check;
//  2. a kernel-level profile (tf.profile) of one step of each, summed per kernel;
//  3. single ops at the MLP's real shapes: matMul in each transposeA/transposeB orientation
//     (forward x·W, dW = xᵀ·dy, dX = dy·Wᵀ) against the same products with the transpose
//     materialised first, and the transposes themselves.
// `--concurrent N` instead starts one process, then N processes at once, that each time
// computeMicroBatch at one batch size for 8 s (no communication between them): the machine's
// N-core ceiling for this path.
//
// Standalone: `node dist/bench/mlp-gradient.js [--quick] [--json] [--backend wasm|cpu]...
//   [--batch N]... [--concurrent N]`.

import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../shared/backend.js';
import { gatherSamples, loadDataset, type Dataset } from '../shared/data/index.js';
import { buildModel, DEFAULT_HIDDEN } from '../shared/models/index.js';
import { paramSpecsOf, writeWeights } from '../shared/param-layout.js';
import { initialWeights } from '../shared/weight-init.js';
import { computeMicroBatch, transposeInto, type GradientModel } from '../worker/gradient.js';
import { maxRelativeDifference, median } from './support.js';

export type BenchBackend = 'wasm' | 'cpu';

export interface MlpGradientBenchOptions {
  /** Fewer repetitions and no cpu backend (seconds instead of minutes); the numbers are noisier. */
  quick: boolean;
  /** Backends to measure (default wasm and cpu; wasm only when quick). */
  backends?: BenchBackend[];
  /** Micro-batch sizes (default 32, 128, 256). */
  batches?: number[];
  /** Skip the kernel profile and the single-op timings. */
  endToEndOnly?: boolean;
  /** Time only computeMicroBatch, not the stock path (for --concurrent). */
  fastOnly?: boolean;
  /** Keep timing computeMicroBatch for at least this long (for --concurrent, so the processes overlap). */
  minTimingMs?: number;
}

export interface Timing {
  /** Median ms over the repetitions. */
  medianMs: number;
  /** Fastest repetition (least disturbed by other load on the machine). */
  minMs: number;
  /** Process CPU time (user + system, all threads) per repetition: what a call costs when it has a core to itself. */
  cpuMs: number;
}

/** Kernel times of one step, as tf.profile reports them (wall time per kernel call on wasm/cpu), median of several runs. */
export interface KernelProfile {
  /** Sum of kernel ms (op wrappers whose kernels are counted separately left out). */
  kernelMs: number;
  /** Per kernel name, most time first. */
  kernels: { name: string; ms: number; calls: number }[];
  /** The slowest single calls of the middle run, with their input shapes. */
  topCalls: { name: string; inputShapes: string; ms: number }[];
}

export interface StepPoint {
  batch: number;
  stock: Timing;
  fast: Timing;
  stockSamplesPerSecond: number;
  fastSamplesPerSecond: number;
  speedup: number;
  /** max |stock - fast| / max |stock| over the gradient sum. */
  maxRelativeDifference: number;
  stockProfile?: KernelProfile;
  fastProfile?: KernelProfile;
}

export interface OpTiming {
  batch: number;
  /** e.g. "dW1 = xᵀ·dy [784×B]·[B×256]". */
  op: string;
  variant: string;
  ms: number;
  gflops: number | null;
}

export interface BackendResult {
  backend: BenchBackend;
  steps: StepPoint[];
  ops: OpTiming[];
}

export interface MlpGradientBenchResult {
  hidden: number[];
  numParams: number;
  backends: BackendResult[];
}

const HIDDEN = DEFAULT_HIDDEN.mlp;

/** The stock computation: tf.variableGrads over model.apply, flat gradient, loss and correct count. */
function stockMicroBatch(
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
): { gradSum: Float32Array; lossSum: number; correct: number } {
  const vars = gm.model.trainableWeights.map((w) => w.read() as tf.Variable);
  let lossSum = 0;
  let correct = 0;
  const flat = tf.tidy(() => {
    const x = tf.tensor(images, [labels.length, ...gm.sampleShape]);
    const labelTensor = tf.tensor1d(labels, 'int32');
    const y = tf.oneHot(labelTensor, gm.numClasses);
    let logits: tf.Tensor | null = null;
    const { value, grads } = tf.variableGrads(() => {
      logits = tf.keep(gm.model.apply(x, { training: true }) as tf.Tensor);
      return tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(y, logits, undefined, 0, tf.Reduction.SUM);
    }, vars);
    lossSum = value.dataSync()[0]!;
    correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits!, 1), labelTensor), 'int32')).dataSync()[0]!;
    (logits as tf.Tensor | null)?.dispose();
    return tf.concat<tf.Tensor1D>(vars.map((v) => tf.reshape(grads[v.name]!, [-1])));
  });
  const gradSum = Float32Array.from(flat.dataSync() as Float32Array);
  flat.dispose();
  return { gradSum, lossSum, correct };
}

/**
 * Times `fn` at least `reps` times and `minMs`, after a warm-up of at least `warmup` calls and
 * `warmupMs` (a fresh process page-faults on new memory for its first few dozen micro-batches,
 * until the allocator settles). `before` runs untimed before every call.
 */
function time(
  fn: () => void,
  reps: number,
  warmup: number,
  before: () => void = () => {},
  warmupMs = 500,
  minMs = 0,
): Timing {
  const warmUntil = performance.now() + warmupMs;
  for (let i = 0; i < warmup || performance.now() < warmUntil; i++) {
    before();
    fn();
  }
  const ms: number[] = [];
  let cpuMicros = 0;
  const until = performance.now() + minMs;
  for (let i = 0; i < reps || performance.now() < until; i++) {
    before();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
    const cpu = process.cpuUsage(cpu0);
    cpuMicros += cpu.user + cpu.system;
  }
  const cpuMs = cpuMicros / 1000 / ms.length;
  ms.sort((a, b) => a - b);
  return { medianMs: ms[ms.length >> 1]!, minMs: ms[0]!, cpuMs };
}

/** Profiles `runs` calls of `fn`; per kernel name the median over runs (one run is easily disturbed). */
async function profile(fn: () => void, runs: number, before: () => void): Promise<KernelProfile> {
  const totals = new Map<string, { ms: number[]; calls: number }>();
  const calls: { name: string; inputShapes: string; ms: number }[] = [];
  for (let run = 0; run < runs; run++) {
    before();
    const info = await tf.profile(fn);
    for (const k of info.kernels) {
      // Ops built with customGrad (fusedMatMul__op, ...) are profiled as a whole *and* per kernel inside.
      if (k.name.endsWith('__op')) continue;
      const ms = k.kernelTimeMs as number;
      const e = totals.get(k.name) ?? { ms: new Array<number>(runs).fill(0), calls: 0 };
      e.ms[run]! += ms;
      if (run === 0) e.calls++;
      totals.set(k.name, e);
      if (run === runs >> 1)
        calls.push({
          name: k.name,
          inputShapes: k.inputShapes.map((shape) => `[${shape?.join('×') ?? ''}]`).join(' '),
          ms,
        });
    }
  }
  const kernels = [...totals.entries()]
    .map(([name, e]) => ({ name, ms: median(e.ms), calls: e.calls }))
    .sort((a, b) => b.ms - a.ms);
  const topCalls = calls.sort((a, b) => b.ms - a.ms).slice(0, 6);
  return { kernelMs: kernels.reduce((sum, k) => sum + k.ms, 0), kernels, topCalls };
}

/** JS transpose of [rows, cols] into [cols, rows]: the one worker/gradient.ts uses. */
function jsTranspose(src: Float32Array, rows: number, cols: number, dst: Float32Array): void {
  transposeInto(src, 0, rows, cols, dst, rows);
}

/** Single ops at the MLP's shapes for micro-batch `b`. */
function opTimings(b: number, reps: number): OpTiming[] {
  const dims = [784, ...HIDDEN, 10];
  const out: OpTiming[] = [];
  const add = (op: string, variant: string, flops: number | null, fn: () => tf.Tensor | void) => {
    const t = time(
      () =>
        tf.tidy(() => {
          fn(); // Not returned: tidy disposes the result too, so the heap stays the same size.
        }),
      reps,
      2,
      undefined,
      0,
    );
    out.push({ batch: b, op, variant, ms: t.medianMs, gflops: flops === null ? null : flops / t.medianMs / 1e6 });
  };
  for (let l = 0; l < dims.length - 1; l++) {
    const k = dims[l]!;
    const n = dims[l + 1]!;
    const flops = 2 * b * k * n;
    const x = tf.randomNormal<tf.Rank.R2>([b, k]);
    const w = tf.randomNormal<tf.Rank.R2>([k, n]);
    const bias = tf.randomNormal<tf.Rank.R1>([n]);
    const dy = tf.randomNormal<tf.Rank.R2>([b, n]);
    const name = `L${l + 1}`;
    add(`${name} fwd x·W [${b}×${k}]·[${k}×${n}]`, 'matMul NN', flops, () => tf.matMul(x, w));
    add(`${name} fwd x·W [${b}×${k}]·[${k}×${n}]`, 'fused matMul + bias + relu', flops, () =>
      tf.fused.matMul({ a: x, b: w, bias, activation: 'relu' }),
    );
    // XNNPACK packs a matMul's right operand once per tensor: new weights every step mean a repack.
    const wValues = w.dataSync() as Float32Array;
    add(`${name} fwd x·W [${b}×${k}]·[${k}×${n}]`, 'fused, new W tensor (repack)', flops, () =>
      tf.fused.matMul({ a: x, b: tf.tensor2d(wValues, [k, n]), bias, activation: 'relu' }),
    );
    const wT = tf.randomNormal<tf.Rank.R2>([n, k + 1]);
    const xTValues = tf.randomNormal([k + 1, b]).dataSync() as Float32Array;
    add(`${name} fwd x·W [${b}×${k}]·[${k}×${n}]`, 'transposed [Wᵀ|b]·[xᵀ;1], new xᵀ', flops, () =>
      tf.fused.matMul({ a: wT, b: tf.tensor2d(xTValues, [k + 1, b]), activation: 'relu' }),
    );
    const wTBuffer = new Float32Array(n * (k + 1));
    add(`${name} transpose W [${k}×${n}]`, 'JS loop into a reused buffer', null, () =>
      jsTranspose(wValues, k, n, wTBuffer),
    );
    add(`${name} dW = xᵀ·dy [${k}×${b}]·[${b}×${n}]`, 'matMul transposeA', flops, () => tf.matMul(x, dy, true, false));
    add(`${name} dW = xᵀ·dy [${k}×${b}]·[${b}×${n}]`, 'transpose(x) then matMul NN', flops, () =>
      tf.matMul(tf.transpose(x), dy),
    );
    const xT = tf.transpose(x);
    add(`${name} dW = xᵀ·dy [${k}×${b}]·[${b}×${n}]`, 'xᵀ given, matMul NN only', flops, () => tf.matMul(xT, dy));
    add(`${name} dX = dy·Wᵀ [${b}×${n}]·[${n}×${k}]`, 'matMul transposeB', flops, () => tf.matMul(dy, w, false, true));
    add(`${name} dX = dy·Wᵀ [${b}×${n}]·[${n}×${k}]`, 'transpose(W) then matMul NN', flops, () =>
      tf.matMul(dy, tf.transpose(w)),
    );
    add(`${name} transpose x [${b}×${k}]`, 'tf.transpose', null, () => tf.transpose(x));
    const xs = x.dataSync() as Float32Array;
    const dst = new Float32Array(xs.length);
    add(`${name} transpose x [${b}×${k}]`, 'JS loop into a reused buffer', null, () => jsTranspose(xs, b, k, dst));
    add(`${name} relu grad dy⊙step(y) [${b}×${n}]`, 'mul(dy, step(y))', null, () => tf.mul(dy, tf.step(dy)));
    tf.dispose([x, w, bias, dy, xT, wT]);
  }
  return out;
}

async function benchBackend(
  backend: BenchBackend,
  ds: Dataset,
  batches: number[],
  options: MlpGradientBenchOptions,
): Promise<BackendResult> {
  const { quick } = options;
  const endToEndOnly = options.endToEndOnly ?? false;
  await selectBackend(backend);
  const model = buildModel('mlp', { inputShape: ds.sampleShape, numClasses: ds.numClasses, hidden: HIDDEN });
  const weights = initialWeights(paramSpecsOf(model), 1);
  writeWeights(model, weights);
  const gm: GradientModel = { model, sampleShape: ds.sampleShape, numClasses: ds.numClasses };
  const slow = backend === 'cpu';
  const steps: StepPoint[] = [];
  const ops: OpTiming[] = [];
  for (const b of batches) {
    const indices = Array.from({ length: b }, (_, i) => (i * 7919) % ds.train.count);
    const { images, labels } = gatherSamples(ds.train, ds.sampleShape, indices);
    const reps = quick ? 10 : slow ? 7 : 60;
    // New weight tensors before every step, as in training: the wasm backend's XNNPACK operators
    // repack a matMul's right-hand operand whenever it is a new tensor.
    const newWeights = () => writeWeights(model, weights);
    const fast = time(
      () => computeMicroBatch(gm, images, labels, b),
      reps,
      3,
      newWeights,
      500,
      options.minTimingMs ?? 0,
    );
    const stock = options.fastOnly
      ? { medianMs: NaN, minMs: NaN, cpuMs: NaN }
      : time(
          () => stockMicroBatch(gm, images, labels),
          quick || slow ? Math.max(3, reps >> 2) : reps >> 2,
          2,
          newWeights,
        );
    const diff = options.fastOnly
      ? NaN
      : maxRelativeDifference(
          stockMicroBatch(gm, images, labels).gradSum,
          computeMicroBatch(gm, images, labels, b).gradSum,
        );
    const point: StepPoint = {
      batch: b,
      stock,
      fast,
      stockSamplesPerSecond: (b * 1000) / stock.medianMs,
      fastSamplesPerSecond: (b * 1000) / fast.medianMs,
      speedup: stock.medianMs / fast.medianMs,
      maxRelativeDifference: diff,
    };
    if (!endToEndOnly) {
      const runs = quick ? 1 : 7;
      point.stockProfile = await profile(() => void stockMicroBatch(gm, images, labels), runs, newWeights);
      point.fastProfile = await profile(() => void computeMicroBatch(gm, images, labels, b), runs, newWeights);
      ops.push(...opTimings(b, quick ? 5 : slow ? 3 : 20));
    }
    steps.push(point);
  }
  model.dispose();
  return { backend, steps, ops };
}

/** Runs the benchmark; see the file comment. */
export async function benchMlpGradient(options: MlpGradientBenchOptions): Promise<MlpGradientBenchResult> {
  const backends = options.backends ?? (options.quick ? ['wasm'] : ['wasm', 'cpu']);
  const batches = options.batches ?? [32, 128, 256];
  const ds = await loadDataset({ name: 'synthetic', seed: 1, syntheticTrain: 1024, syntheticTest: 16 });
  const results: BackendResult[] = [];
  for (const backend of backends) results.push(await benchBackend(backend, ds, batches, options));
  const numParams = [784, ...HIDDEN, 10].reduce((p, d, i, all) => (i === 0 ? 0 : p + (all[i - 1]! + 1) * d), 0);
  return { hidden: HIDDEN, numParams, backends: results };
}

export interface ConcurrentResult {
  processes: number;
  batch: number;
  backend: BenchBackend;
  /** samples/s of each process (median step), and their sum. */
  perProcess: number[];
  total: number;
  /** samples per CPU-second of each process, and their sum: the ceiling if each had a core to itself. */
  perProcessPerCpuSecond: number[];
  totalPerCpuSecond: number;
}

/** Starts `processes` copies of this script, each timing computeMicroBatch at `batch` alone, at the same time. */
export async function benchConcurrent(
  processes: number,
  batch: number,
  backend: BenchBackend,
  quick: boolean,
): Promise<ConcurrentResult> {
  const self = fileURLToPath(import.meta.url);
  const runs = Array.from({ length: processes }, () => {
    const args = [
      self,
      '--child',
      '--json',
      '--backend',
      backend,
      '--batch',
      String(batch),
      ...(quick ? ['--quick'] : []),
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    return new Promise<StepPoint>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code) => {
        if (code !== 0) return reject(new Error(`bench child exited with ${code}`));
        const r = JSON.parse(text) as MlpGradientBenchResult;
        resolve(r.backends[0]!.steps[0]!);
      });
    });
  });
  const points = await Promise.all(runs);
  const perProcess = points.map((p) => p.fastSamplesPerSecond);
  const perProcessPerCpuSecond = points.map((p) => (p.batch * 1000) / p.fast.cpuMs);
  const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
  return {
    processes,
    batch,
    backend,
    perProcess,
    total: sum(perProcess),
    perProcessPerCpuSecond,
    totalPerCpuSecond: sum(perProcessPerCpuSecond),
  };
}

const fmt = (v: number, digits = 2) => v.toFixed(digits);

export function formatMlpGradientBench(r: MlpGradientBenchResult): string {
  const lines: string[] = [
    `MLP 784-${r.hidden.join('-')}-10 (${r.numParams} params): one micro-batch fwd+bwd, median ms (min)`,
  ];
  for (const b of r.backends) {
    lines.push('', `backend ${b.backend}`);
    lines.push(
      '  B    stock ms (min)      fast ms (min, cpu)        stock samples/s  fast samples/s  speedup  max rel diff',
    );
    for (const s of b.steps) {
      lines.push(
        `  ${String(s.batch).padEnd(4)} ${`${fmt(s.stock.medianMs)} (${fmt(s.stock.minMs)})`.padEnd(19)} ${`${fmt(s.fast.medianMs)} (${fmt(s.fast.minMs)}, ${fmt(s.fast.cpuMs)})`.padEnd(25)} ` +
          `${fmt(s.stockSamplesPerSecond, 0).padStart(15)} ${fmt(s.fastSamplesPerSecond, 0).padStart(15)} ${fmt(s.speedup, 1).padStart(8)}x  ${s.maxRelativeDifference.toExponential(1)}`,
      );
    }
    for (const s of b.steps) {
      for (const [label, p] of [
        ['stock', s.stockProfile],
        ['fast', s.fastProfile],
      ] as const) {
        if (!p) continue;
        const stepMs = label === 'stock' ? s.stock.medianMs : s.fast.medianMs;
        lines.push(
          `  profile B=${s.batch} ${label}: kernels ${fmt(p.kernelMs)} ms of a ${fmt(stepMs)} ms step (the rest: JS, op overhead, copies)`,
        );
        for (const k of p.kernels.filter((k) => k.ms >= 0.01 * p.kernelMs))
          lines.push(`    ${k.name.padEnd(16)} ${fmt(k.ms).padStart(8)} ms  ${String(k.calls).padStart(3)} calls`);
        lines.push(
          `    slowest calls: ${p.topCalls
            .slice(0, 4)
            .map((c) => `${c.name} ${c.inputShapes} ${fmt(c.ms)} ms`)
            .join('; ')}`,
        );
      }
    }
    if (b.ops.length > 0) {
      lines.push('  single ops (median ms, GFLOP/s):');
      for (const o of b.ops)
        lines.push(
          `    B=${String(o.batch).padEnd(4)} ${o.op.padEnd(38)} ${o.variant.padEnd(30)} ${fmt(o.ms, 3).padStart(8)} ms ${o.gflops === null ? '' : `${fmt(o.gflops, 1)} GF/s`}`,
        );
    }
  }
  return lines.join('\n');
}

function argValues(name: string): string[] {
  const values: string[] = [];
  process.argv.forEach((a, i) => {
    if (a === name && process.argv[i + 1] !== undefined) values.push(process.argv[i + 1]!);
  });
  return values;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const quick = process.argv.includes('--quick');
  const json = process.argv.includes('--json');
  const backends = argValues('--backend') as BenchBackend[];
  const batches = argValues('--batch').map(Number);
  const concurrent = Number(argValues('--concurrent')[0] ?? 0);
  if (concurrent > 0) {
    const backend = backends[0] ?? 'wasm';
    const batch = batches[0] ?? 256;
    const alone = await benchConcurrent(1, batch, backend, quick);
    const together = await benchConcurrent(concurrent, batch, backend, quick);
    if (json) console.log(JSON.stringify({ alone, together }, null, 2));
    else {
      console.log(
        `${backend} B=${batch}: 1 process ${fmt(alone.total, 0)} samples/s (${fmt(alone.totalPerCpuSecond, 0)} per CPU-second)`,
      );
      console.log(
        `${concurrent} processes at once: ${together.perProcess.map((v) => fmt(v, 0)).join(' + ')} = ${fmt(together.total, 0)} samples/s (${fmt(together.total / alone.total, 2)}x one process); ` +
          `per CPU-second ${together.perProcessPerCpuSecond.map((v) => fmt(v, 0)).join(' + ')} = ${fmt(together.totalPerCpuSecond, 0)}`,
      );
    }
  } else {
    const child = process.argv.includes('--child');
    const result = await benchMlpGradient({
      quick,
      ...(backends.length > 0 ? { backends } : {}),
      ...(batches.length > 0 ? { batches } : {}),
      endToEndOnly: child || process.argv.includes('--e2e-only'),
      fastOnly: child,
      ...(child ? { minTimingMs: quick ? 2000 : 8000 } : {}),
    });
    console.log(json ? JSON.stringify(result, null, 2) : formatMlpGradientBench(result));
  }
}
