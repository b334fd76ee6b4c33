import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { registerWasmConvFilterGrad } from '../../shared/wasm-conv-filter-grad.js';

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

/** mulberry32: identical inputs on every backend and every run, independent of tf's RNG. */
function seededValues(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296 * 2 - 1;
  }
  return out;
}

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
  x: Float32Array, xShape: Shape4, dy: Float32Array, dyShape: Shape4,
  filterShape: Shape4, strides: [number, number], pad: Pad,
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
                dW[((r * fw + c) * ci + i) * co + o]! +=
                  xv * dy[((n * oh + yr) * ow + yc) * co + o]!;
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
    const direct = tf.engine().runKernel(
      tf.Conv2DBackpropFilter,
      { x, dy: r },
      { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', filterShape: c.filterShape },
    ) as tf.Tensor;
    return { viaGrad: viaGrad.dataSync().slice(), direct: direct.dataSync().slice() };
  });
}

const cases: Case[] = [];
for (const s of [1, 2, 3]) {
  for (const pad of ['same', 'valid'] as const) {
    cases.push({ name: `3x3 s${s} ${pad}`, xShape: [2, 9, 9, 3], filterShape: [3, 3, 3, 4], strides: [s, s], pad });
    cases.push({ name: `2x3 s${s} ${pad} non-square`, xShape: [3, 10, 7, 5], filterShape: [2, 3, 5, 6], strides: [s, s], pad });
  }
}
cases.push({ name: '5x5 s2 same (even input)', xShape: [1, 12, 12, 2], filterShape: [5, 5, 2, 3], strides: [2, 2], pad: 'same' });
cases.push({ name: '3x1 strides [2,3] same', xShape: [2, 11, 13, 4], filterShape: [3, 1, 4, 2], strides: [2, 3], pad: 'same' });
cases.push({ name: '4x2 strides [3,1] valid', xShape: [2, 11, 8, 3], filterShape: [4, 2, 3, 5], strides: [3, 1], pad: 'valid' });

describe('wasm Conv2DBackpropFilter (tensorflow/tfjs#8474)', () => {
  describe('before registration', () => {
    it('wasm in tfjs 4.22.0 has no Conv2DBackpropFilter kernel', async () => {
      await useBackend('wasm');
      expect(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm')).toBeUndefined();
      expect(() =>
        tf.tidy(() => tf.grad((f) => tf.sum(tf.conv2d(tf.ones([1, 4, 4, 1]) as tf.Tensor4D, f as tf.Tensor4D, 1, 'same')))(
          tf.ones([2, 2, 1, 1]) as tf.Tensor4D,
        )),
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
            inputShape: [8, 8, 2], filters: 4, kernelSize: [3, 2], strides: 2, padding: 'same',
            activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({ seed: 7 }),
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
          () => tf.losses.meanSquaredError(ys, model.apply(xs) as tf.Tensor) as tf.Scalar,
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
            inputShape: [9, 9, 3], filters: 5, kernelSize: 3, strides: 3, padding: 'valid',
            activation: 'tanh', kernelInitializer: tfl.initializers.glorotUniform({ seed: 9 }),
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
});
