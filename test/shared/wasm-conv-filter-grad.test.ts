import { seededUniform } from '../../bench/support.js';
import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import {
  registerWasmConvFilterGrad,
  wasmConvFilterGradStats,
  wasmConvFilterGradTuning,
} from '../../shared/wasm-conv-filter-grad.js';

type Pad = 'same' | 'valid';
type Shape4 = [number, number, number, number];

interface Case {
  name: string;
  xShape: Shape4;
  filterShape: Shape4;
  strides: [number, number];
  pad: Pad;
}

const TOLERANCE = 1e-4;

const seededValues = seededUniform;

const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** TF's output size and leading (top/left) padding for one spatial dimension. */
function outAndPad(inSize: number, k: number, stride: number, pad: Pad): [number, number] {
  if (pad === 'valid') return [Math.ceil((inSize - k + 1) / stride), 0];
  const out = Math.ceil(inSize / stride);
  const total = Math.max((out - 1) * stride + k - inSize, 0);
  return [out, Math.floor(total / 2)];
}

/**
 * Float64 loop reference for dW (NHWC), independent of every TF.js kernel, so a wrong answer that
 * cpu and wasm happened to share would still be caught.
 */
function referenceFilterGrad(
  x: Float32Array,
  xShape: Shape4,
  dy: Float32Array,
  dyShape: Shape4,
  filterShape: Shape4,
  strides: [number, number],
  pad: Pad,
): Float64Array {
  const [b, h, w, ci] = xShape;
  const [fh, fw, , co] = filterShape;
  const [oh, top] = outAndPad(h, fh, strides[0], pad);
  const [ow, left] = outAndPad(w, fw, strides[1], pad);
  expect([dyShape[1], dyShape[2]]).toEqual([oh, ow]);
  const dW = new Float64Array(size(filterShape));
  for (let n = 0; n < b; n++)
    for (let yr = 0; yr < oh; yr++)
      for (let yc = 0; yc < ow; yc++)
        for (let r = 0; r < fh; r++) {
          const xr = yr * strides[0] + r - top;
          if (xr < 0 || xr >= h) continue;
          for (let c = 0; c < fw; c++) {
            const xc = yc * strides[1] + c - left;
            if (xc < 0 || xc >= w) continue;
            for (let i = 0; i < ci; i++) {
              const xv = x[((n * h + xr) * w + xc) * ci + i]!;
              for (let o = 0; o < co; o++) {
                dW[((r * fw + c) * ci + i) * co + o]! += xv * dy[((n * oh + yr) * ow + yc) * co + o]!;
              }
            }
          }
        }
  return dW;
}

/**
 * Max element-wise relative error. The denominator is floored at 1e-3 of the reference's largest
 * magnitude so entries that are nearly zero by cancellation do not dominate.
 */
function maxRelErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  const floor = Math.max(scale * 1e-3, 1e-12);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!) / Math.max(Math.abs(expected[i]!), floor);
    worst = Math.max(worst, d);
  }
  return worst;
}

async function useBackend(name: 'cpu' | 'wasm'): Promise<void> {
  await tf.setBackend(name);
  await tf.ready();
  expect(tf.getBackend()).toBe(name);
}

/**
 * dW two ways on the current backend: through tf.grad of sum(conv2d(x, w) * r), which exercises
 * the Conv2D gradient's attrs wiring (dy = r exactly), and by running the kernel directly
 * (tfjs-core does not export the conv2DBackpropFilter op).
 */
function filterGrads(c: Case, xv: Float32Array, wv: Float32Array, rv: Float32Array, dyShape: Shape4) {
  return tf.tidy(() => {
    const x = tf.tensor4d(xv, c.xShape);
    const w = tf.tensor4d(wv, c.filterShape);
    const r = tf.tensor4d(rv, dyShape);
    const viaGrad = tf.grad((f) => tf.sum(tf.mul(tf.conv2d(x, f as tf.Tensor4D, c.strides, c.pad), r)))(w);
    const direct = tf
      .engine()
      .runKernel<tf.Tensor>(
        tf.Conv2DBackpropFilter,
        { x, dy: r },
        { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', filterShape: c.filterShape },
      );
    return { viaGrad: viaGrad.dataSync().slice(), direct: direct.dataSync().slice() };
  });
}

const cases: Case[] = [];
for (const s of [1, 2, 3]) {
  for (const pad of ['same', 'valid'] as const) {
    cases.push({ name: `3x3 s${s} ${pad}`, xShape: [2, 9, 9, 3], filterShape: [3, 3, 3, 4], strides: [s, s], pad });
    cases.push({
      name: `2x3 s${s} ${pad} non-square`,
      xShape: [3, 10, 7, 5],
      filterShape: [2, 3, 5, 6],
      strides: [s, s],
      pad,
    });
  }
}
cases.push({
  name: '5x5 s2 same (even input)',
  xShape: [1, 12, 12, 2],
  filterShape: [5, 5, 2, 3],
  strides: [2, 2],
  pad: 'same',
});
cases.push({
  name: '3x1 strides [2,3] same',
  xShape: [2, 11, 13, 4],
  filterShape: [3, 1, 4, 2],
  strides: [2, 3],
  pad: 'same',
});
cases.push({
  name: '4x2 strides [3,1] valid',
  xShape: [2, 11, 8, 3],
  filterShape: [4, 2, 3, 5],
  strides: [3, 1],
  pad: 'valid',
});

describe('wasm Conv2DBackpropFilter (tensorflow/tfjs#8474)', () => {
  describe('before registration', () => {
    it('wasm in tfjs 4.22.0 has no Conv2DBackpropFilter kernel', async () => {
      await useBackend('wasm');
      expect(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm')).toBeUndefined();
      expect(() =>
        tf.tidy(() =>
          tf.grad((f) => tf.sum(tf.conv2d(tf.ones<tf.Rank.R4>([1, 4, 4, 1]), f as tf.Tensor4D, 1, 'same')))(
            tf.ones<tf.Rank.R4>([2, 2, 1, 1]),
          ),
        ),
      ).toThrow(/Conv2DBackpropFilter/);
    });
  });

  describe('after registration', () => {
    beforeAll(async () => {
      await useBackend('wasm');
      registerWasmConvFilterGrad();
    });

    it('is idempotent', () => {
      const first = tf.getKernel(tf.Conv2DBackpropFilter, 'wasm');
      expect(first).toBeDefined();
      registerWasmConvFilterGrad();
      registerWasmConvFilterGrad();
      expect(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm')).toBe(first);
    });

    it.each(cases)('matches cpu and a float64 reference: $name', async (c) => {
      const [oh] = outAndPad(c.xShape[1], c.filterShape[0], c.strides[0], c.pad);
      const [ow] = outAndPad(c.xShape[2], c.filterShape[1], c.strides[1], c.pad);
      const dyShape: Shape4 = [c.xShape[0], oh, ow, c.filterShape[3]];
      const xv = seededValues(size(c.xShape), 11);
      const wv = seededValues(size(c.filterShape), 22);
      const rv = seededValues(size(dyShape), 33);

      await useBackend('cpu');
      const cpu = filterGrads(c, xv, wv, rv, dyShape);
      await useBackend('wasm');
      const wasm = filterGrads(c, xv, wv, rv, dyShape);
      const ref = referenceFilterGrad(xv, c.xShape, rv, dyShape, c.filterShape, c.strides, c.pad);

      const errs = {
        gradVsCpu: maxRelErr(wasm.viaGrad, cpu.viaGrad),
        directVsCpu: maxRelErr(wasm.direct, cpu.direct),
        gradVsRef: maxRelErr(wasm.viaGrad, ref),
        cpuVsRef: maxRelErr(cpu.viaGrad, ref),
      };
      for (const e of Object.values(errs)) expect(e).toBeLessThanOrEqual(TOLERANCE);
    });

    it('does not leak tensors or backend buffers across repeated gradients', async () => {
      await useBackend('wasm');
      const cpuBackend = tf.findBackend('cpu') as MathBackendCPU;
      const wasmBackend = tf.findBackend('wasm') as BackendWasm;
      const x = tf.tensor4d(seededValues(2 * 8 * 8 * 3, 1), [2, 8, 8, 3]);
      const w = tf.tensor4d(seededValues(3 * 3 * 3 * 4, 2), [3, 3, 3, 4]);
      const g = tf.grad((f) => tf.sum(tf.square(tf.conv2d(x, f as tf.Tensor4D, 2, 'same'))));
      const step = (): void => {
        g(w).dispose();
      };
      step();
      const tensors = tf.memory().numTensors;
      const wasmIds = wasmBackend.numDataIds();
      const cpuIds = cpuBackend.numDataIds();
      for (let i = 0; i < 5; i++) step();
      expect(tf.memory().numTensors).toBe(tensors);
      expect(wasmBackend.numDataIds()).toBe(wasmIds);
      // The shim's cpu-side copies are invisible to tf.memory(), so check the cpu backend directly.
      expect(cpuBackend.numDataIds()).toBe(cpuIds);
      x.dispose();
      w.dispose();
    });

    it('trains a tfjs-layers conv2d model with variableGrads + SGD', async () => {
      await useBackend('wasm');
      const model = tfl.sequential({
        layers: [
          tfl.layers.conv2d({
            inputShape: [8, 8, 2],
            filters: 4,
            kernelSize: [3, 2],
            strides: 2,
            padding: 'same',
            activation: 'relu',
            kernelInitializer: tfl.initializers.glorotUniform({ seed: 7 }),
          }),
          tfl.layers.flatten(),
          tfl.layers.dense({ units: 1, kernelInitializer: tfl.initializers.glorotUniform({ seed: 8 }) }),
        ],
      });
      const xs = tf.tensor4d(seededValues(6 * 8 * 8 * 2, 3), [6, 8, 8, 2]);
      const ys = tf.tensor2d(seededValues(6, 4), [6, 1]);
      const vars = model.trainableWeights.map((v) => v.read() as tf.Variable);
      const lr = tf.scalar(0.05);
      const losses: number[] = [];
      let tensorsAfterFirst = -1;
      for (let i = 0; i < 8; i++) {
        const { value, grads } = tf.variableGrads(
          () => tf.losses.meanSquaredError<tf.Tensor, tf.Scalar>(ys, model.apply(xs) as tf.Tensor),
          vars,
        );
        tf.tidy(() => {
          for (const v of vars) v.assign(tf.sub(v, tf.mul(lr, grads[v.name]!)));
        });
        losses.push(value.dataSync()[0]!);
        value.dispose();
        tf.dispose(grads);
        if (i === 0) tensorsAfterFirst = tf.memory().numTensors;
      }
      expect(losses.every(Number.isFinite)).toBe(true);
      for (let i = 1; i < losses.length; i++) expect(losses[i]!).toBeLessThan(losses[i - 1]!);
      expect(tf.memory().numTensors).toBe(tensorsAfterFirst);
      model.dispose();
      tf.dispose([xs, ys, lr]);
    });

    it('trains a tfjs-layers conv2d model with model.fit', async () => {
      await useBackend('wasm');
      const model = tfl.sequential({
        layers: [
          tfl.layers.conv2d({
            inputShape: [9, 9, 3],
            filters: 5,
            kernelSize: 3,
            strides: 3,
            padding: 'valid',
            activation: 'tanh',
            kernelInitializer: tfl.initializers.glorotUniform({ seed: 9 }),
          }),
          tfl.layers.flatten(),
          tfl.layers.dense({ units: 2, kernelInitializer: tfl.initializers.glorotUniform({ seed: 10 }) }),
        ],
      });
      model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
      const xs = tf.tensor4d(seededValues(8 * 9 * 9 * 3, 5), [8, 9, 9, 3]);
      const ys = tf.tensor2d(seededValues(8 * 2, 6), [8, 2]);
      const history = await model.fit(xs, ys, { epochs: 6, batchSize: 8, shuffle: false, verbose: 0 });
      const losses = history.history['loss'] as number[];
      expect(losses.every(Number.isFinite)).toBe(true);
      for (let i = 1; i < losses.length; i++) expect(losses[i]!).toBeLessThan(losses[i - 1]!);
      model.dispose();
      tf.dispose([xs, ys]);
    });
  });

  describe('im2col + XNNPACK fast path against the cpu kernel', () => {
    beforeAll(async () => {
      await useBackend('wasm');
      registerWasmConvFilterGrad();
    });

    /**
     * Tolerance. cpu accumulates each dW entry in float64 (JS numbers) and rounds once; wasm sums the
     * M = batch·oh·ow products in float32 inside XNNPACK's GEMM, in a blocked SIMD order, so the two
     * differ by float32 summation error. For a dot product that error is, in practice (rounding
     * errors accumulate like a random walk), about eps·sqrt(M)·S[k, o], where S[k, o] = Σ_m |x·dy|
     * is the magnitude of the entry's terms and eps = 2^-23; the worst case, M·eps·S, would be too
     * loose to catch indexing bugs at large M. We require, per entry,
     *   |wasm − cpu| <= 4·eps·sqrt(M)·S[k, o]
     * (observed: at most ~0.06 of this bound over these cases). A wrong tap, offset or missing row
     * shows up as an error of order S/sqrt(M) (the entry's own size for zero-mean data), which is
     * 2^23 / (4·M) >= 48 times the bound for every M used here (M <= 43264).
     */
    const EPS32 = 2 ** -23;
    const SUM_ORDER_FACTOR = 4;

    interface FastCase {
      name: string;
      xShape: Shape4;
      filterShape: Shape4;
      strides: [number, number];
      pad: Pad | number | [[number, number], [number, number], [number, number], [number, number]];
    }

    /** Output size and leading padding for any padding form (mirrors TF's conv_util, floor rounding). */
    function outAndPadAny(
      inSize: number,
      k: number,
      stride: number,
      pad: FastCase['pad'],
      dim: 1 | 2,
    ): [number, number] {
      if (pad === 'same' || pad === 'valid') return outAndPad(inSize, k, stride, pad);
      const [before, after] = typeof pad === 'number' ? [pad, pad] : pad[dim];
      return [Math.floor((inSize + before + after - k) / stride) + 1, before];
    }

    /** Per-entry magnitude S[k, o] = sum over m of |x·dy|, in float64. */
    function termMagnitudes(x: Float32Array, dy: Float32Array, c: FastCase, dyShape: Shape4): Float64Array {
      const [b, h, w, ci] = c.xShape;
      const [fh, fw, , co] = c.filterShape;
      const [, oh, ow] = dyShape;
      const [, top] = outAndPadAny(h, fh, c.strides[0], c.pad, 1);
      const [, left] = outAndPadAny(w, fw, c.strides[1], c.pad, 2);
      const mag = new Float64Array(size(c.filterShape));
      for (let n = 0; n < b; n++)
        for (let yr = 0; yr < oh; yr++)
          for (let yc = 0; yc < ow; yc++)
            for (let r = 0; r < fh; r++) {
              const xr = yr * c.strides[0] + r - top;
              if (xr < 0 || xr >= h) continue;
              for (let cc = 0; cc < fw; cc++) {
                const xc = yc * c.strides[1] + cc - left;
                if (xc < 0 || xc >= w) continue;
                for (let i = 0; i < ci; i++) {
                  const xv = Math.abs(x[((n * h + xr) * w + xc) * ci + i]!);
                  const row = ((r * fw + cc) * ci + i) * co;
                  const dyAt = ((n * oh + yr) * ow + yc) * co;
                  for (let o = 0; o < co; o++) mag[row + o]! += xv * Math.abs(dy[dyAt + o]!);
                }
              }
            }
      return mag;
    }

    function runFilterGradKernel(
      c: FastCase,
      xv: Float32Array,
      dyv: Float32Array,
      dyShape: Shape4,
      dataFormat: 'NHWC' | 'NCHW' = 'NHWC',
    ): Float32Array {
      return tf.tidy(() => {
        const out = tf.engine().runKernel<tf.Tensor>(
          tf.Conv2DBackpropFilter,
          { x: tf.tensor4d(xv, c.xShape), dy: tf.tensor4d(dyv, dyShape) },
          {
            strides: c.strides,
            pad: c.pad,
            dataFormat,
            filterShape: c.filterShape,
          },
        );
        expect(out.shape).toEqual(c.filterShape);
        return out.dataSync().slice() as Float32Array;
      });
    }

    /** Runs the case on cpu and wasm and returns the worst |wasm − cpu| / bound (must be <= 1). */
    async function compareWithCpu(c: FastCase): Promise<{ ratio: number; maxAbsDiff: number; m: number }> {
      const [oh] = outAndPadAny(c.xShape[1], c.filterShape[0], c.strides[0], c.pad, 1);
      const [ow] = outAndPadAny(c.xShape[2], c.filterShape[1], c.strides[1], c.pad, 2);
      const dyShape: Shape4 = [c.xShape[0], oh, ow, c.filterShape[3]];
      const xv = seededValues(size(c.xShape), 101);
      const dyv = seededValues(size(dyShape), 202);
      await useBackend('cpu');
      const cpu = runFilterGradKernel(c, xv, dyv, dyShape);
      await useBackend('wasm');
      const before = wasmConvFilterGradStats.im2col;
      const wasm = runFilterGradKernel(c, xv, dyv, dyShape);
      expect(wasmConvFilterGradStats.im2col).toBe(before + 1);
      const mag = termMagnitudes(xv, dyv, c, dyShape);
      const m = c.xShape[0] * oh * ow;
      let ratio = 0;
      let maxAbsDiff = 0;
      for (let j = 0; j < cpu.length; j++) {
        const diff = Math.abs(wasm[j]! - cpu[j]!);
        maxAbsDiff = Math.max(maxAbsDiff, diff);
        // The floor only matters for entries whose every term is exactly zero (then both are 0).
        const bound = Math.max(SUM_ORDER_FACTOR * EPS32 * Math.sqrt(m) * mag[j]!, 1e-30);
        ratio = Math.max(ratio, diff / bound);
      }
      return { ratio, maxAbsDiff, m };
    }

    const fastCases: FastCase[] = [
      // The default cnn's real shapes (3x3 valid, 8 and 16 filters) at a worker's micro-batch size.
      {
        name: 'cnn conv1 b64 28x28x1 -> 8',
        xShape: [64, 28, 28, 1],
        filterShape: [3, 3, 1, 8],
        strides: [1, 1],
        pad: 'valid',
      },
      {
        name: 'cnn conv2 b64 13x13x8 -> 16',
        xShape: [64, 13, 13, 8],
        filterShape: [3, 3, 8, 16],
        strides: [1, 1],
        pad: 'valid',
      },
      {
        name: 'b1 1x1 s1 valid c3 -> 8',
        xShape: [1, 9, 9, 3],
        filterShape: [1, 1, 3, 8],
        strides: [1, 1],
        pad: 'valid',
      },
      {
        name: 'b1 5x5 s1 same c1 -> 1',
        xShape: [1, 12, 12, 1],
        filterShape: [5, 5, 1, 1],
        strides: [1, 1],
        pad: 'same',
      },
      {
        name: 'b64 1x1 s2 valid c16 -> 3',
        xShape: [64, 7, 7, 16],
        filterShape: [1, 1, 16, 3],
        strides: [2, 2],
        pad: 'valid',
      },
      {
        name: 'b64 5x5 s2 same c1 -> 8',
        xShape: [64, 14, 14, 1],
        filterShape: [5, 5, 1, 8],
        strides: [2, 2],
        pad: 'same',
      },
    ];
    const batches = [1, 3, 8, 17];
    const channels = [1, 3, 8, 16];
    let idx = 0;
    for (const kSize of [1, 3, 5]) {
      for (const stride of [1, 2, 3]) {
        for (const pad of ['valid', 'same'] as const) {
          const b = batches[idx % batches.length]!;
          const ci = channels[idx % channels.length]!;
          const co = channels[(idx + 1) % channels.length]!;
          const h = 11 + (idx % 3); // odd and even sizes, non-square below
          fastCases.push({
            name: `b${b} ${kSize}x${kSize} s${stride} ${pad} ${h}x${h + 2}x${ci} -> ${co}`,
            xShape: [b, h, h + 2, ci],
            filterShape: [kSize, kSize, ci, co],
            strides: [stride, stride],
            pad,
          });
          idx++;
        }
      }
    }
    fastCases.push(
      {
        name: 'strides [1,3] same c3 -> 16',
        xShape: [4, 10, 16, 3],
        filterShape: [3, 5, 3, 16],
        strides: [1, 3],
        pad: 'same',
      },
      { name: 'numeric pad 2, 3x3 s2', xShape: [3, 9, 10, 8], filterShape: [3, 3, 8, 3], strides: [2, 2], pad: 2 },
      {
        name: 'explicit pads [[1,2],[0,1]], 3x2 s[2,1]',
        xShape: [5, 8, 7, 3],
        filterShape: [3, 2, 3, 8],
        strides: [2, 1],
        pad: [
          [0, 0],
          [1, 2],
          [0, 1],
          [0, 0],
        ],
      },
      {
        name: 'kernel larger than the stride gap (4x4 s3 same)',
        xShape: [2, 10, 10, 2],
        filterShape: [4, 4, 2, 5],
        strides: [3, 3],
        pad: 'same',
      },
    );

    it.each(fastCases)(
      '$name',
      async (c) => {
        const { ratio } = await compareWithCpu(c);
        expect(ratio).toBeLessThanOrEqual(1);
      },
      30_000,
    );

    it('splits large problems along the batch and still matches the cpu kernel', async () => {
      const saved = wasmConvFilterGradTuning.maxIm2colBytes;
      // 3 images per chunk for this shape (per image: K·oh·ow·4 = 27·81·4 bytes), 7 images: chunks 3,3,1.
      wasmConvFilterGradTuning.maxIm2colBytes = 27 * 81 * 4 * 3;
      try {
        const { ratio } = await compareWithCpu({
          name: 'chunked',
          xShape: [7, 11, 11, 3],
          filterShape: [3, 3, 3, 4],
          strides: [1, 1],
          pad: 'valid',
        });
        expect(ratio).toBeLessThanOrEqual(1);
        await useBackend('wasm');
        const wasmBackend = tf.findBackend('wasm') as BackendWasm;
        const x = tf.tensor4d(seededValues(7 * 11 * 11 * 3, 5), [7, 11, 11, 3]);
        const dy = tf.tensor4d(seededValues(7 * 9 * 9 * 4, 6), [7, 9, 9, 4]);
        const run = (): void => {
          tf.engine().runKernel(
            tf.Conv2DBackpropFilter,
            { x, dy },
            {
              strides: [1, 1],
              pad: 'valid',
              dataFormat: 'NHWC',
              filterShape: [3, 3, 3, 4],
            },
          );
        };
        tf.tidy(run);
        const tensors = tf.memory().numTensors;
        const ids = wasmBackend.numDataIds();
        for (let i = 0; i < 3; i++) tf.tidy(run);
        expect(tf.memory().numTensors).toBe(tensors);
        expect(wasmBackend.numDataIds()).toBe(ids);
        tf.dispose([x, dy]);
      } finally {
        wasmConvFilterGradTuning.maxIm2colBytes = saved;
      }
    });

    it('the default cnn trains through the fast path without leaking', async () => {
      await useBackend('wasm');
      const wasmBackend = tf.findBackend('wasm') as BackendWasm;
      const x = tf.tensor4d(seededValues(16 * 28 * 28, 7), [16, 28, 28, 1]);
      const w1 = tf.variable(tf.tensor4d(seededValues(3 * 3 * 1 * 8, 8), [3, 3, 1, 8]));
      const w2 = tf.variable(tf.tensor4d(seededValues(3 * 3 * 8 * 16, 9), [3, 3, 8, 16]));
      const loss = (): tf.Scalar => {
        const h = tf.maxPool(tf.relu(tf.conv2d(x, w1, 1, 'valid')), 2, 2, 'valid');
        return tf.sum(tf.square(tf.conv2d(h, w2, 1, 'valid')));
      };
      const step = (): void => {
        const { value, grads } = tf.variableGrads(loss, [w1, w2]);
        tf.dispose([value, ...Object.values(grads)]);
      };
      step();
      const tensors = tf.memory().numTensors;
      const ids = wasmBackend.numDataIds();
      const before = { ...wasmConvFilterGradStats };
      for (let i = 0; i < 4; i++) step();
      expect(wasmConvFilterGradStats.im2col - before.im2col).toBe(8);
      expect(wasmConvFilterGradStats.cpuFallback).toBe(before.cpuFallback);
      expect(tf.memory().numTensors).toBe(tensors);
      expect(wasmBackend.numDataIds()).toBe(ids);
      tf.dispose([x, w1, w2]);
    });
  });

  describe('cpu fallback for what the fast path does not handle', () => {
    beforeAll(async () => {
      await useBackend('wasm');
      registerWasmConvFilterGrad();
    });

    it('NCHW goes to the cpu kernel, matches it, and frees its cpu-side buffers', async () => {
      const xShape: Shape4 = [2, 3, 9, 8]; // [N, C, H, W]
      const dyShape: Shape4 = [2, 4, 4, 3]; // 3x3 s2 valid: [N, Co, 4, 3]
      const attrs = {
        strides: [2, 2],
        pad: 'valid',
        dataFormat: 'NCHW',
        filterShape: [3, 3, 3, 4],
      } as unknown as tf.NamedAttrMap;
      const xv = seededValues(size(xShape), 12);
      const dyv = seededValues(size(dyShape), 13);
      const run = (): Float32Array =>
        tf.tidy(
          () =>
            tf
              .engine()
              .runKernel<tf.Tensor>(
                tf.Conv2DBackpropFilter,
                { x: tf.tensor4d(xv, xShape), dy: tf.tensor4d(dyv, dyShape) },
                attrs,
              )
              .dataSync()
              .slice() as Float32Array,
        );
      await useBackend('cpu');
      const cpu = run();
      await useBackend('wasm');
      const cpuBackend = tf.findBackend('cpu') as MathBackendCPU;
      const wasmBackend = tf.findBackend('wasm') as BackendWasm;
      const before = { ...wasmConvFilterGradStats };
      const wasm = run();
      expect(wasmConvFilterGradStats.cpuFallback).toBe(before.cpuFallback + 1);
      expect(wasmConvFilterGradStats.im2col).toBe(before.im2col);
      // Same reference kernel on the same float32 inputs: identical bits.
      expect(Array.from(wasm)).toEqual(Array.from(cpu));
      const tensors = tf.memory().numTensors;
      const cpuIds = cpuBackend.numDataIds();
      const wasmIds = wasmBackend.numDataIds();
      run();
      expect(tf.memory().numTensors).toBe(tensors);
      expect(cpuBackend.numDataIds()).toBe(cpuIds);
      expect(wasmBackend.numDataIds()).toBe(wasmIds);
    });

    it('int32 inputs go to the cpu kernel', async () => {
      await useBackend('wasm');
      const before = wasmConvFilterGradStats.cpuFallback;
      const dW = tf.tidy(() =>
        tf
          .engine()
          .runKernel<tf.Tensor>(
            tf.Conv2DBackpropFilter,
            { x: tf.ones([1, 3, 3, 1], 'int32'), dy: tf.ones([1, 2, 2, 1], 'int32') },
            {
              strides: [1, 1],
              pad: 'valid',
              dataFormat: 'NHWC',
              filterShape: [2, 2, 1, 1],
            },
          )
          .dataSync()
          .slice(),
      );
      expect(wasmConvFilterGradStats.cpuFallback).toBe(before + 1);
      expect(Array.from(dW)).toEqual([4, 4, 4, 4]);
    });
  });
});
