// Benchmark of the 'wasm' Conv2DBackpropFilter kernel (shared/wasm-conv-filter-grad.ts), measured
// side by side in one process:
//  1. ms per call of the cpu-delegating kernel vs the im2col + XNNPACK kernel, on the shapes the
//     default `cnn` model produces (conv1: 28×28×1 → 8 filters, conv2: 13×13×8 → 16 filters, 3×3
//     valid) at batch 64 and 128, with the two results' max relative difference as a sanity check;
//  2. CNN training throughput (worker/gradient.ts computeMicroBatch, one micro-batch per step) on
//     wasm with the new kernel, on wasm with the old cpu-delegating kernel, and on the pure-JS cpu
//     backend.
//
// Standalone: `node dist/bench/conv-filter-grad.js [--quick] [--json]`.

import { pathToFileURL } from 'node:url';
import { maxRelativeDifference, median, seededUniform } from './support.js';
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { selectBackend } from '../shared/backend.js';
import { buildModel, DEFAULT_HIDDEN } from '../shared/models/index.js';
import {
  conv2DBackpropFilterIm2col,
  conv2DBackpropFilterViaCpu,
  registerWasmConvFilterGrad,
  wasmConvFilterGradStats,
} from '../shared/wasm-conv-filter-grad.js';
import { computeMicroBatch, type GradientModel } from '../worker/gradient.js';

export interface ConvFilterGradBenchOptions {
  /** Fewer repetitions (seconds instead of a minute); the numbers are noisier. */
  quick: boolean;
}

export interface KernelTiming {
  layer: 'conv1' | 'conv2';
  batch: number;
  xShape: number[];
  dyShape: number[];
  filterShape: number[];
  /** Median ms per call of the old kernel (copy to cpu, cpu reference kernel, copy back). */
  cpuDelegateMs: number;
  /** Median ms per call of the im2col + wasm BatchMatMul (XNNPACK) kernel. */
  im2colMs: number;
  speedup: number;
  /** max |im2col − cpu| / max |cpu| over the filter gradient. */
  maxRelDiff: number;
  calls: number;
}

export interface TrainingThroughput {
  batch: number;
  /** wasm backend with the im2col kernel (what batchlab registers). */
  wasmSamplesPerSecond: number;
  /** wasm backend with the previous cpu-delegating kernel, for reference. */
  wasmCpuDelegateSamplesPerSecond: number;
  /** Pure-JS cpu backend. */
  cpuSamplesPerSecond: number;
  /** wasmSamplesPerSecond / cpuSamplesPerSecond. */
  speedupVsCpu: number;
  /** Timed micro-batches per backend. */
  steps: { wasm: number; wasmCpuDelegate: number; cpu: number };
}

export interface ConvFilterGradBenchResult {
  quick: boolean;
  model: { name: 'cnn'; hidden: number[]; inputShape: number[]; numClasses: number };
  kernels: KernelTiming[];
  training: TrainingThroughput[];
}

const INPUT_SHAPE = [28, 28, 1];
const NUM_CLASSES = 10;
const BATCHES = [64, 128];

/** Times both kernels on one shape, alternating calls so drift affects both alike. */
function timeKernels(
  layer: 'conv1' | 'conv2',
  batch: number,
  inHW: number,
  inC: number,
  outC: number,
  calls: number,
): KernelTiming {
  const backend = tf.backend() as BackendWasm;
  const outHW = inHW - 2; // 3×3, stride 1, valid
  const xShape = [batch, inHW, inHW, inC];
  const dyShape = [batch, outHW, outHW, outC];
  const filterShape = [3, 3, inC, outC] as [number, number, number, number];
  const x = tf.tensor4d(seededUniform(batch * inHW * inHW * inC, 1), xShape as [number, number, number, number]);
  const dy = tf.tensor4d(seededUniform(batch * outHW * outHW * outC, 2), dyShape as [number, number, number, number]);
  const args = {
    inputs: { x, dy },
    backend,
    attrs: {
      strides: [1, 1],
      pad: 'valid',
      dataFormat: 'NHWC',
      dimRoundingMode: undefined,
      filterShape,
    } as unknown as tf.NamedAttrMap,
  };
  const run = (kernel: tf.KernelFunc): { ms: number; values: Float32Array } => {
    const start = performance.now();
    const out = kernel(args) as tf.TensorInfo;
    const ms = performance.now() - start;
    const values = backend.readSync(out.dataId) as Float32Array;
    backend.disposeData(out.dataId);
    return { ms, values };
  };
  try {
    const reference = run(conv2DBackpropFilterViaCpu).values; // also the warm-up
    const fast = run(conv2DBackpropFilterIm2col).values;
    const cpuMs: number[] = [];
    const im2colMs: number[] = [];
    for (let i = 0; i < calls; i++) {
      cpuMs.push(run(conv2DBackpropFilterViaCpu).ms);
      im2colMs.push(run(conv2DBackpropFilterIm2col).ms);
    }
    const cpuDelegateMs = median(cpuMs);
    const fastMs = median(im2colMs);
    return {
      layer,
      batch,
      xShape,
      dyShape,
      filterShape,
      cpuDelegateMs,
      im2colMs: fastMs,
      speedup: cpuDelegateMs / fastMs,
      maxRelDiff: maxRelativeDifference(reference, fast),
      calls,
    };
  } finally {
    tf.dispose([x, dy]);
  }
}

/** Samples/s of computeMicroBatch on the current backend: one warm-up step, then `steps` timed. */
function trainingThroughput(batch: number, steps: number): number {
  const model = buildModel('cnn', { inputShape: INPUT_SHAPE, numClasses: NUM_CLASSES, hidden: DEFAULT_HIDDEN.cnn });
  try {
    const gm: GradientModel = { model, sampleShape: INPUT_SHAPE, numClasses: NUM_CLASSES };
    const images = seededUniform(batch * 28 * 28, 3).map((v) => (v + 1) / 2);
    const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % NUM_CLASSES);
    computeMicroBatch(gm, images, labels, batch);
    const start = performance.now();
    for (let i = 0; i < steps; i++) computeMicroBatch(gm, images, labels, batch);
    return (batch * steps) / ((performance.now() - start) / 1000);
  } finally {
    model.dispose();
  }
}

/** Runs `fn` with the wasm Conv2DBackpropFilter kernel temporarily replaced by `kernelFunc`. */
function withWasmKernel<T>(kernelFunc: tf.KernelFunc, fn: () => T): T {
  const original = tf.getKernel(tf.Conv2DBackpropFilter, 'wasm');
  tf.unregisterKernel(tf.Conv2DBackpropFilter, 'wasm');
  tf.registerKernel({ kernelName: tf.Conv2DBackpropFilter, backendName: 'wasm', kernelFunc });
  try {
    return fn();
  } finally {
    tf.unregisterKernel(tf.Conv2DBackpropFilter, 'wasm');
    tf.registerKernel(original);
  }
}

/**
 * Measures the kernel both ways and CNN training on wasm vs cpu. Switches backends while it runs and
 * restores the one that was active before (if any); registers the wasm kernel if it was not yet.
 */
export async function benchConvFilterGrad(options: ConvFilterGradBenchOptions): Promise<ConvFilterGradBenchResult> {
  const { quick } = options;
  const previousBackend = tf.engine().backendName;
  await selectBackend('wasm');
  registerWasmConvFilterGrad();

  const kernels: KernelTiming[] = [];
  for (const batch of BATCHES) {
    const calls = quick ? 3 : 10;
    kernels.push(timeKernels('conv1', batch, 28, INPUT_SHAPE[2]!, DEFAULT_HIDDEN.cnn[0]!, calls));
    kernels.push(timeKernels('conv2', batch, 13, DEFAULT_HIDDEN.cnn[0]!, DEFAULT_HIDDEN.cnn[1]!, calls));
  }

  const training: TrainingThroughput[] = [];
  for (const batch of BATCHES) {
    const steps = { wasm: quick ? 3 : 20, wasmCpuDelegate: quick ? 2 : 5, cpu: quick ? 1 : 3 };
    await selectBackend('wasm');
    const fastBefore = wasmConvFilterGradStats.im2col;
    const wasmSamplesPerSecond = trainingThroughput(batch, steps.wasm);
    if (wasmConvFilterGradStats.im2col === fastBefore)
      throw new Error('the wasm CNN step did not use the im2col kernel');
    const wasmCpuDelegateSamplesPerSecond = withWasmKernel(conv2DBackpropFilterViaCpu, () =>
      trainingThroughput(batch, steps.wasmCpuDelegate),
    );
    await selectBackend('cpu');
    const cpuSamplesPerSecond = trainingThroughput(batch, steps.cpu);
    training.push({
      batch,
      wasmSamplesPerSecond,
      wasmCpuDelegateSamplesPerSecond,
      cpuSamplesPerSecond,
      speedupVsCpu: wasmSamplesPerSecond / cpuSamplesPerSecond,
      steps,
    });
  }

  if (previousBackend) await tf.setBackend(previousBackend);
  return {
    quick,
    model: { name: 'cnn', hidden: [...DEFAULT_HIDDEN.cnn], inputShape: INPUT_SHAPE, numClasses: NUM_CLASSES },
    kernels,
    training,
  };
}

function fmt(n: number, digits = 1): string {
  return n.toFixed(digits).padStart(9);
}

export function formatConvFilterGradBench(r: ConvFilterGradBenchResult): string {
  const lines = [
    `Conv2DBackpropFilter on wasm, cnn ${r.model.hidden.join(',')} shapes${r.quick ? ' (quick)' : ''}: median ms per call`,
    '  layer  batch  x shape          filter        cpu-delegate    im2col   speedup  max rel diff',
  ];
  for (const k of r.kernels) {
    lines.push(
      `  ${k.layer}  ${String(k.batch).padStart(5)}  ${k.xShape.join('x').padEnd(15)}  ${k.filterShape.join('x').padEnd(12)}` +
        `${fmt(k.cpuDelegateMs)}ms ${fmt(k.im2colMs, 2)}ms ${fmt(k.speedup)}x  ${k.maxRelDiff.toExponential(1)}`,
    );
  }
  lines.push('', 'CNN training (computeMicroBatch, one chunk per micro-batch): samples/s');
  lines.push('  batch  wasm(im2col)  wasm(cpu-delegate)    cpu   wasm/cpu');
  for (const t of r.training) {
    lines.push(
      `  ${String(t.batch).padStart(5)}  ${fmt(t.wasmSamplesPerSecond, 0)}    ${fmt(t.wasmCpuDelegateSamplesPerSecond, 0)}        ` +
        `${fmt(t.cpuSamplesPerSecond, 0)} ${fmt(t.speedupVsCpu)}x`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const quick = process.argv.includes('--quick');
  const result = await benchConvFilterGrad({ quick });
  console.log(process.argv.includes('--json') ? JSON.stringify(result, null, 2) : formatConvFilterGradBench(result));
}
