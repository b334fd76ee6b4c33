// Owns the 'wasm' Conv2DBackpropFilter kernel: TF.js 4.22.0's wasm backend ships none, so any conv2d
// training step on 'wasm' throws "Kernel 'Conv2DBackpropFilter' not registered" (tensorflow/tfjs#8474).
//
// Fast path (float32 NHWC, every stride, 'valid' / 'same' / numeric / explicit padding):
//   dW[K, Co] = colT[K, M] · dy[M, Co],  K = fh·fw·Ci (filter taps), M = N·oh·ow (output pixels),
// where colT is the im2col matrix built *already transposed* with typed-array loops directly on the
// wasm heap, and the product is the wasm backend's own BatchMatMul kernel. That kernel only reaches
// XNNPACK (a SIMD GEMM) when neither operand is transposed and the batch is 1; any transpose flag
// sends it to a naive triple loop, so both operands are laid out for transposeA = transposeB = false.
// The result [K, Co] is bit-for-bit the memory layout of the filter [fh, fw, Ci, Co], so it is
// returned without a copy. Anything else (NCHW, non-float32, a dy whose shape does not match the
// convolution) falls back to delegating to the cpu backend's reference kernel.
import {
  backend_util,
  BatchMatMul,
  Conv2DBackpropFilter,
  findBackend,
  getKernel,
  registerKernel,
  util,
  type Conv2DBackpropFilterAttrs,
  type KernelConfig,
  type KernelFunc,
  type NamedAttrMap,
  type TensorInfo,
} from '@tensorflow/tfjs-core';
// Side-effect import so the 'cpu' backend and its kernels are registered and findBackend('cpu') works.
import '@tensorflow/tfjs-backend-cpu';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
// Type-only: importing the wasm module for its side effects here would register the 'wasm' backend
// (priority 2) in processes that never asked for it and change which backend tf.ready() picks.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

const WASM = 'wasm';

type KernelArgs = Parameters<KernelFunc>[0];

/**
 * Knobs of the fast path. `maxIm2colBytes` caps the transposed im2col buffer: larger problems are
 * split along the batch into chunks whose partial dW are summed in float32 (chunk boundaries depend
 * only on the shapes, so results stay deterministic). Mutable so tests can force chunking.
 */
export const wasmConvFilterGradTuning = {
  maxIm2colBytes: 64 * 1024 * 1024,
};

/** How many calls took each path since the process started (for tests and the benchmark). */
export const wasmConvFilterGradStats = {
  im2col: 0,
  cpuFallback: 0,
};

/**
 * Computes dW on the cpu backend and hands the result back to wasm.
 *
 * The wasm Conv3DBackpropFilterV2 kernel is deliberately not used (by reshaping to depth 1): it gives
 * wrong filter gradients for stride > 1, while the cpu kernel is the reference implementation the
 * other backends are tested against.
 */
export const conv2DBackpropFilterViaCpu: KernelFunc = ({ inputs, backend, attrs }) => {
  const wasm = backend as BackendWasm;
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const cpuKernel = getKernel(Conv2DBackpropFilter, 'cpu');
  // Looked up per call rather than at registration so the order in which the backends are imported
  // and initialised does not matter; findBackend initialises the cpu backend synchronously if needed.
  const cpu = findBackend('cpu') as MathBackendCPU | null;
  if (!cpuKernel || !cpu) {
    throw new Error("Conv2DBackpropFilter for 'wasm' delegates to the cpu backend, which is not available");
  }

  // readSync copies out of the wasm heap, so these buffers stay valid even if the heap grows later.
  const cpuX: TensorInfo = {
    dataId: cpu.write(wasm.readSync(x.dataId), x.shape, x.dtype),
    shape: x.shape,
    dtype: x.dtype,
  };
  const cpuDy: TensorInfo = {
    dataId: cpu.write(wasm.readSync(dy.dataId), dy.shape, dy.dtype),
    shape: dy.shape,
    dtype: dy.dtype,
  };
  // These cpu-side buffers are invisible to the engine's tensor tracking (tf.memory, tf.tidy), so
  // they must be released explicitly or every training step would leak them.
  let cpuResult: TensorInfo | undefined;
  try {
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as Conv2DBackpropFilterAttrs;
    const cpuAttrs = { strides, pad, dataFormat, dimRoundingMode, filterShape };
    cpuResult = cpuKernel.kernelFunc({
      inputs: { x: cpuX, dy: cpuDy },
      backend: cpu,
      attrs: cpuAttrs as unknown as NamedAttrMap,
    }) as TensorInfo;
    const values = cpu.readSync(cpuResult.dataId);
    // Without a memory offset, makeOutput allocates on the wasm heap and copies `values` in.
    return wasm.makeOutput(cpuResult.shape, cpuResult.dtype, undefined, values);
  } finally {
    cpu.disposeData(cpuX.dataId);
    cpu.disposeData(cpuDy.dataId);
    if (cpuResult !== undefined) {
      cpu.disposeData(cpuResult.dataId);
    }
  }
};

/** The geometry the fast path needs, or null when it does not apply. */
export interface Plan {
  batch: number;
  inH: number;
  inW: number;
  inC: number;
  outH: number;
  outW: number;
  outC: number;
  fh: number;
  fw: number;
  sh: number;
  sw: number;
  top: number;
  left: number;
  filterShape: [number, number, number, number];
}

export function planIm2col(x: TensorInfo, dy: TensorInfo, attrs: Conv2DBackpropFilterAttrs): Plan | null {
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs;
  if (dataFormat !== 'NHWC' || x.dtype !== 'float32' || dy.dtype !== 'float32') return null;
  if (x.shape.length !== 4 || dy.shape.length !== 4 || filterShape.length !== 4) return null;
  let info: backend_util.Conv2DInfo;
  try {
    info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
  } catch {
    // Let the reference kernel raise (or handle) whatever the attributes are.
    return null;
  }
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const [dyB, dyH, dyW, dyC] = dy.shape as [number, number, number, number];
  if (dyB !== batchSize || dyH !== outHeight || dyW !== outWidth || dyC !== outChannels) return null;
  if (filterShape[2] !== inChannels || info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  if (batchSize * outHeight * outWidth === 0 || util.sizeFromShape(filterShape) === 0) return null;
  return {
    batch: batchSize,
    inH: inHeight,
    inW: inWidth,
    inC: inChannels,
    outH: outHeight,
    outW: outWidth,
    outC: outChannels,
    fh: info.filterHeight,
    fw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    top: info.padInfo.top,
    left: info.padInfo.left,
    filterShape: [...filterShape] as [number, number, number, number],
  };
}

/** First output index o (0 <= o < outSize) with 0 <= o*stride + tap - pad, and one past the last with < inSize. */
function validRange(tap: number, pad: number, stride: number, inSize: number, outSize: number): [number, number] {
  const lo = Math.max(0, Math.ceil((pad - tap) / stride));
  const last = inSize - 1 + pad - tap; // o*stride <= last
  const hi = last < 0 ? 0 : Math.min(outSize, Math.floor(last / stride) + 1);
  return [lo, Math.max(lo, hi)];
}

export function heapF32(wasm: BackendWasm): Float32Array {
  // Re-read after every allocation: growing the wasm memory replaces the heap views.
  return (wasm.wasm as unknown as { HEAPF32: Float32Array }).HEAPF32;
}

export function heapIndex(wasm: BackendWasm, t: TensorInfo): number {
  // makeOutput/_malloc returns 8-byte aligned offsets, so the float index is exact.
  return wasm.dataIdMap.get(t.dataId).memoryOffset >>> 2;
}

/**
 * Writes colT[k, m] for images [n0, n0 + nb) into `col` (heap float index `colAt`), with
 * k = (r·fw + c)·Ci + i and m = ((n - n0)·oh + y)·ow + xo, so colT · dy is dW in filter layout.
 * Every element is written (zeros where the tap falls into padding): the heap is not cleared.
 */
function fillIm2colT(
  heap: Float32Array,
  xAt: number,
  colAt: number,
  p: Plan,
  n0: number,
  nb: number,
  scratchAt: number,
): void {
  const { inH, inW, inC, outH, outW, fh, fw, sh, sw, top, left } = p;
  const plane = inH * inW;
  // Stride 1 with several channels: each image is first copied channel-major into the scratch
  // (heap index scratchAt, plane·Ci values), so every run of output columns is one memmove.
  const planar = sw === 1 && inC > 1;
  const m = nb * outH * outW;
  const xRowStride = inW * inC;
  const xImgStride = inH * xRowStride;
  const xColStep = sw * inC;
  const rows = Array.from({ length: fh }, (_, r) => validRange(r, top, sh, inH, outH));
  const cols = Array.from({ length: fw }, (_, c) => validRange(c, left, sw, inW, outW));
  // Image by image: every tap's pass over an image then reads the same few tens of KiB, which stay
  // in the core's cache, instead of streaming the whole batch once per tap and channel.
  for (let n = 0; n < nb; n++) {
    const image = xAt + (n0 + n) * xImgStride;
    if (planar)
      for (let q = 0; q < plane; q++) {
        const from = image + q * inC;
        for (let i = 0; i < inC; i++) heap[scratchAt + i * plane + q] = heap[from + i]!;
      }
    for (let r = 0; r < fh; r++) {
      const [y0, y1] = rows[r]!;
      for (let c = 0; c < fw; c++) {
        const [x0, x1] = cols[c]!;
        const firstCol = x0 * sw + c - left; // input column of output column x0
        for (let i = 0; i < inC; i++) {
          const imgOut = colAt + ((r * fw + c) * inC + i) * m + n * outH * outW;
          if (y0 >= y1 || x0 >= x1) {
            heap.fill(0, imgOut, imgOut + outH * outW);
            continue;
          }
          const imgAt = image + firstCol * inC + i;
          if (y0 > 0) heap.fill(0, imgOut, imgOut + y0 * outW);
          for (let y = y0; y < y1; y++) {
            const dst = imgOut + y * outW;
            let src = imgAt + (y * sh + r - top) * xRowStride;
            for (let xo = 0; xo < x0; xo++) heap[dst + xo] = 0;
            if (planar) {
              const from = scratchAt + i * plane + (y * sh + r - top) * inW + firstCol;
              heap.copyWithin(dst + x0, from, from + (x1 - x0));
            } else if (xColStep === 1) {
              // Contiguous run (stride 1, one channel): a native memmove beats the element loop.
              heap.copyWithin(dst + x0, src, src + (x1 - x0));
            } else {
              for (let xo = x0; xo < x1; xo++) {
                heap[dst + xo] = heap[src]!;
                src += xColStep;
              }
            }
            for (let xo = x1; xo < outW; xo++) heap[dst + xo] = 0;
          }
          if (y1 < outH) heap.fill(0, imgOut + y1 * outW, imgOut + outH * outW);
        }
      }
    }
  }
}

/**
 * One chunk of images: builds colT [1, K, Mc] and a private copy of dy's rows [1, Mc, Co] on the
 * wasm heap and multiplies them with the wasm BatchMatMul kernel. Returns the [1, K, Co] product,
 * owned by the caller.
 *
 * dy is copied rather than passed in place because BatchMatMul's XNNPACK path packs its right-hand
 * operand into an operator that it caches under that tensor's id until the tensor is disposed (and
 * looks up by id alone, ignoring shape); disposing our own copy releases the operator at once.
 */
function im2colChunk(
  wasm: BackendWasm,
  matMul: KernelFunc,
  x: TensorInfo,
  dy: TensorInfo,
  p: Plan,
  n0: number,
  nb: number,
): TensorInfo {
  const k = p.fh * p.fw * p.inC;
  const m = nb * p.outH * p.outW;
  const colT = wasm.makeOutput([1, k, m], 'float32');
  let dyRows: TensorInfo | undefined;
  let scratch: TensorInfo | undefined;
  try {
    dyRows = wasm.makeOutput([1, m, p.outC], 'float32');
    scratch = wasm.makeOutput([p.inH * p.inW * p.inC], 'float32');
    const heap = heapF32(wasm); // after all three allocations
    const dyAt = heapIndex(wasm, dy) + n0 * p.outH * p.outW * p.outC;
    heap.copyWithin(heapIndex(wasm, dyRows), dyAt, dyAt + m * p.outC);
    fillIm2colT(heap, heapIndex(wasm, x), heapIndex(wasm, colT), p, n0, nb, heapIndex(wasm, scratch));
    return matMul({
      inputs: { a: colT, b: dyRows },
      backend: wasm,
      attrs: { transposeA: false, transposeB: false },
    }) as TensorInfo;
  } finally {
    wasm.disposeData(colT.dataId);
    if (dyRows !== undefined) wasm.disposeData(dyRows.dataId);
    if (scratch !== undefined) wasm.disposeData(scratch.dataId);
  }
}

/** The im2col + XNNPACK GEMM kernel; see the top of this file. Falls back to the cpu kernel when unsupported. */
export const conv2DBackpropFilterIm2col: KernelFunc = (args: KernelArgs) => {
  const wasm = args.backend as BackendWasm;
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const plan = planIm2col(x, dy, args.attrs as unknown as Conv2DBackpropFilterAttrs);
  const matMul = (getKernel(BatchMatMul, WASM) as KernelConfig | undefined)?.kernelFunc;
  if (plan === null || matMul === undefined) {
    wasmConvFilterGradStats.cpuFallback++;
    return conv2DBackpropFilterViaCpu(args);
  }
  wasmConvFilterGradStats.im2col++;

  const k = plan.fh * plan.fw * plan.inC;
  const perImage = k * plan.outH * plan.outW * 4;
  const chunk = Math.max(1, Math.min(plan.batch, Math.floor(wasmConvFilterGradTuning.maxIm2colBytes / perImage)));
  const filterSize = k * plan.outC;

  if (chunk >= plan.batch) {
    const out = im2colChunk(wasm, matMul, x, dy, plan, 0, plan.batch);
    // [1, K, Co] is the filter's [fh, fw, Ci, Co] layout; only the shape label changes.
    return { dataId: out.dataId, shape: plan.filterShape, dtype: 'float32' };
  }

  // Chunked: sum the partial products in float32, in chunk order.
  const acc = new Float32Array(filterSize);
  for (let n0 = 0; n0 < plan.batch; n0 += chunk) {
    const part = im2colChunk(wasm, matMul, x, dy, plan, n0, Math.min(chunk, plan.batch - n0));
    try {
      const heap = heapF32(wasm);
      const at = heapIndex(wasm, part);
      for (let j = 0; j < filterSize; j++) acc[j] = acc[j]! + heap[at + j]!;
    } finally {
      wasm.disposeData(part.dataId);
    }
  }
  return wasm.makeOutput(plan.filterShape, 'float32', undefined, acc);
};

/**
 * Registers a `Conv2DBackpropFilter` kernel for the `'wasm'` backend so conv2d layers can be
 * trained there (TF.js 4.22.0 lacks one; tensorflow/tfjs#8474).
 *
 * float32 NHWC inputs (any strides, 'valid'/'same'/explicit padding) take the im2col + XNNPACK
 * GEMM path on the wasm heap; anything else copies `x` and `dy` to the cpu backend, runs the cpu
 * kernel with the same attributes and copies the filter gradient back. Both paths free every
 * intermediate buffer they create.
 *
 * Idempotent: does nothing when a `'wasm'` kernel of that name is already registered (ours or a
 * future native one). Call it after `@tensorflow/tfjs-backend-wasm` has been imported and before
 * the first gradient computation on `'wasm'`.
 */
export function registerWasmConvFilterGrad(): void {
  // getKernel returns undefined for unknown kernels despite its declared type; checking first also
  // avoids registerKernel's "already registered" warning and keeps a native kernel if one exists.
  if ((getKernel(Conv2DBackpropFilter, WASM) as KernelConfig | undefined) !== undefined) {
    return;
  }
  registerKernel({
    kernelName: Conv2DBackpropFilter,
    backendName: WASM,
    kernelFunc: conv2DBackpropFilterIm2col,
  });
}
