// The kernels batchlab puts in place of TF.js's for convolutional training (ResNets): on wasm
// Conv2DBackpropInput (XNNPACK convolution at stride 1, GEMM + col2im otherwise) and Tile (block
// copies); on cpu Conv2DBackpropFilter (a direct loop). Each against a float64 reference or the
// kernel it replaced, on the shapes a CIFAR ResNet has (3×3 'same' at strides 1 and 2, strided
// 1×1 projections, 3 input channels) and odd ones, and with no tensor or buffer left behind.

import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { seededUniform } from '../../bench/support.js';
import { cpuConvFilterGradStats, registerCpuConvFilterGrad } from '../../shared/cpu-conv-filter-grad.js';
import {
  registerWasmConvInputGrad,
  wasmConvInputGradStats,
  wasmConvInputGradTuning,
} from '../../shared/wasm-conv-input-grad.js';
import { registerWasmTile, wasmTileStats } from '../../shared/wasm-tile.js';
import {
  dyShapeOf,
  maxRelErr,
  referenceFilterGrad,
  referenceInputGrad,
  type Pad,
  type Shape4,
} from '../support/conv-reference.js';

interface Case {
  name: string;
  xShape: Shape4;
  filterShape: Shape4;
  strides: [number, number];
  pad: Pad;
  /** The wasm input gradient's path: stride 1 convolves, anything else multiplies and scatters. */
  path: 'conv' | 'gemm';
}

const cases: Case[] = [
  {
    name: 'ResNet 3x3 s1 same 16→16',
    xShape: [2, 8, 8, 16],
    filterShape: [3, 3, 16, 16],
    strides: [1, 1],
    pad: 'same',
    path: 'conv',
  },
  {
    name: 'ResNet stem 3x3 s1 same, 3 channels',
    xShape: [2, 8, 8, 3],
    filterShape: [3, 3, 3, 16],
    strides: [1, 1],
    pad: 'same',
    path: 'conv',
  },
  {
    name: 'ResNet 3x3 s2 same 16→32',
    xShape: [2, 8, 8, 16],
    filterShape: [3, 3, 16, 32],
    strides: [2, 2],
    pad: 'same',
    path: 'gemm',
  },
  {
    name: 'ResNet projection 1x1 s2 same 16→32',
    xShape: [2, 8, 8, 16],
    filterShape: [1, 1, 16, 32],
    strides: [2, 2],
    pad: 'same',
    path: 'gemm',
  },
  {
    name: '3x3 s2 same, odd input',
    xShape: [2, 9, 7, 4],
    filterShape: [3, 3, 4, 5],
    strides: [2, 2],
    pad: 'same',
    path: 'gemm',
  },
  {
    name: '3x3 s1 valid',
    xShape: [2, 9, 9, 3],
    filterShape: [3, 3, 3, 4],
    strides: [1, 1],
    pad: 'valid',
    path: 'conv',
  },
  {
    name: '4x4 s1 same (uneven padding)',
    xShape: [1, 7, 6, 2],
    filterShape: [4, 4, 2, 3],
    strides: [1, 1],
    pad: 'same',
    path: 'conv',
  },
  {
    name: '2x3 s3 valid, non-square',
    xShape: [3, 10, 7, 5],
    filterShape: [2, 3, 5, 6],
    strides: [3, 3],
    pad: 'valid',
    path: 'gemm',
  },
  {
    name: '3x1 strides [2,3] same',
    xShape: [2, 11, 13, 4],
    filterShape: [3, 1, 4, 2],
    strides: [2, 3],
    pad: 'same',
    path: 'gemm',
  },
];

/**
 * The float32 kernels' tolerance against float64, as for the wasm filter gradient: XNNPACK sums
 * in float32, and entries small by cancellation are compared against 1e-3 of the largest.
 */
const TOLERANCE = 1e-4;

const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

async function useBackend(name: 'cpu' | 'wasm'): Promise<void> {
  await tf.setBackend(name);
  await tf.ready();
  expect(tf.getBackend()).toBe(name);
}

/** dx through tf.grad of sum(conv2d(x, w) · r), so dy = r exactly, on the current backend. */
function inputGrad(c: Case, xv: Float32Array, wv: Float32Array, rv: Float32Array): Float32Array {
  return tf.tidy(() => {
    const w = tf.tensor4d(wv, c.filterShape);
    const r = tf.tensor4d(rv, dyShapeOf(c.xShape, c.filterShape, c.strides, c.pad));
    const g = tf.grad((x) => tf.sum(tf.mul(tf.conv2d(x as tf.Tensor4D, w, c.strides, c.pad), r)));
    return g(tf.tensor4d(xv, c.xShape)).dataSync() as Float32Array;
  });
}

/** dW the same way. */
function filterGrad(c: Case, xv: Float32Array, wv: Float32Array, rv: Float32Array): Float32Array {
  return tf.tidy(() => {
    const x = tf.tensor4d(xv, c.xShape);
    const r = tf.tensor4d(rv, dyShapeOf(c.xShape, c.filterShape, c.strides, c.pad));
    const g = tf.grad((w) => tf.sum(tf.mul(tf.conv2d(x, w as tf.Tensor4D, c.strides, c.pad), r)));
    return g(tf.tensor4d(wv, c.filterShape)).dataSync() as Float32Array;
  });
}

function inputs(c: Case): { xv: Float32Array; wv: Float32Array; rv: Float32Array } {
  return {
    xv: seededUniform(size(c.xShape), 11),
    wv: seededUniform(size(c.filterShape), 22),
    rv: seededUniform(size(dyShapeOf(c.xShape, c.filterShape, c.strides, c.pad)), 33),
  };
}

describe('wasm Conv2DBackpropInput', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    registerWasmConvInputGrad();
  });
  afterEach(() => {
    wasmConvInputGradTuning.maxColBytes = 64 * 1024 * 1024;
  });

  it('is registered once, keeping the set-up of the kernel it replaces', () => {
    const first = tf.getKernel(tf.Conv2DBackpropInput, 'wasm');
    registerWasmConvInputGrad();
    expect(tf.getKernel(tf.Conv2DBackpropInput, 'wasm')).toBe(first);
    expect(first.setupFunc).toBeDefined();
  });

  it.each(cases)('matches a float64 reference: $name', async (c) => {
    await useBackend('wasm');
    const { xv, wv, rv } = inputs(c);
    const before = { ...wasmConvInputGradStats };
    const dx = inputGrad(c, xv, wv, rv);
    expect(wasmConvInputGradStats[c.path]).toBe(before[c.path] + 1);
    expect(wasmConvInputGradStats.fallback).toBe(before.fallback);
    expect(maxRelErr(dx, referenceInputGrad(c.xShape, wv, rv, c.filterShape, c.strides, c.pad))).toBeLessThan(
      TOLERANCE,
    );
  });

  it('gives the same bits when the strided path works a few images at a time', async () => {
    await useBackend('wasm');
    const c = cases.find((k) => k.name.startsWith('2x3 s3'))!;
    const { xv, wv, rv } = inputs(c);
    const whole = inputGrad(c, xv, wv, rv);
    const [, oh, ow] = dyShapeOf(c.xShape, c.filterShape, c.strides, c.pad);
    // One image's columns: three chunks of one image.
    wasmConvInputGradTuning.maxColBytes = oh * ow * c.filterShape[0] * c.filterShape[1] * c.filterShape[2] * 4;
    expect(Array.from(inputGrad(c, xv, wv, rv))).toEqual(Array.from(whole));
  });

  it('leaves no tensor or wasm buffer behind', async () => {
    await useBackend('wasm');
    const wasm = tf.backend() as BackendWasm;
    const run = (): void => {
      for (const c of cases.slice(0, 4)) {
        const { xv, wv, rv } = inputs(c);
        inputGrad(c, xv, wv, rv);
      }
    };
    run();
    const tensors = tf.memory().numTensors;
    const ids = wasm.numDataIds();
    run();
    run();
    expect(tf.memory().numTensors).toBe(tensors);
    expect(wasm.numDataIds()).toBe(ids);
  });
});

describe('wasm Tile', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    registerWasmTile();
  });

  const tiles: { shape: number[]; reps: number[]; dtype: 'float32' | 'int32' }[] = [
    // What the batch-norm gradient tiles: a per-channel vector over [N, H, W].
    { shape: [1, 1, 1, 16], reps: [4, 8, 8, 1], dtype: 'float32' },
    { shape: [3], reps: [5], dtype: 'float32' },
    { shape: [2, 3], reps: [3, 2], dtype: 'int32' },
    { shape: [2, 1, 3, 2], reps: [2, 3, 1, 4], dtype: 'float32' },
    { shape: [2, 3, 4], reps: [1, 1, 1], dtype: 'float32' },
    { shape: [2, 0, 3], reps: [2, 2, 2], dtype: 'float32' },
  ];

  it.each(tiles)('copies what tfjs-core computes: $shape × $reps ($dtype)', async ({ shape, reps, dtype }) => {
    const values = Array.from(seededUniform(size(shape), 5), (v) => (dtype === 'int32' ? Math.round(v * 1000) : v));
    await useBackend('cpu');
    const expected = tf.tidy(() => tf.tile(tf.tensor(values, shape, dtype), reps).dataSync());
    await useBackend('wasm');
    const before = wasmTileStats.copy;
    const actual = tf.tidy(() => tf.tile(tf.tensor(values, shape, dtype), reps).dataSync());
    expect(wasmTileStats.copy).toBe(before + 1);
    expect(Array.from(actual)).toEqual(Array.from(expected));
  });

  it('hands bool tensors to the kernel it replaced', async () => {
    await useBackend('wasm');
    const before = wasmTileStats.fallback;
    const out = tf.tidy(() => Array.from(tf.tile(tf.tensor([true, false], [2], 'bool'), [2]).dataSync()));
    expect(wasmTileStats.fallback).toBe(before + 1);
    expect(out).toEqual([1, 0, 1, 0]);
  });
});

describe('cpu Conv2DBackpropFilter', () => {
  beforeAll(async () => {
    await useBackend('cpu');
    registerCpuConvFilterGrad();
  });

  it.each(cases)('matches a float64 reference: $name', async (c) => {
    await useBackend('cpu');
    const { xv, wv, rv } = inputs(c);
    const before = cpuConvFilterGradStats.direct;
    const dw = filterGrad(c, xv, wv, rv);
    expect(cpuConvFilterGradStats.direct).toBe(before + 1);
    expect(maxRelErr(dw, referenceFilterGrad(xv, c.xShape, rv, c.filterShape, c.strides, c.pad))).toBeLessThan(1e-6);
  });

  it('leaves no tensor or cpu buffer behind', async () => {
    await useBackend('cpu');
    const cpu = tf.backend() as MathBackendCPU;
    const c = cases[0]!;
    const { xv, wv, rv } = inputs(c);
    filterGrad(c, xv, wv, rv);
    const tensors = tf.memory().numTensors;
    const ids = cpu.numDataIds();
    filterGrad(c, xv, wv, rv);
    filterGrad(c, xv, wv, rv);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(cpu.numDataIds()).toBe(ids);
  });
});
