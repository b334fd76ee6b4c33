// Replaces the 'wasm' Conv2DBackpropInput kernel: TF.js 4.22.0's is a naive C++ loop (one
// multiply-add per filter tap, input and output channel, no SIMD), which made the input
// gradients of a CIFAR ResNet-20 about 40 % of its training step on wasm.
//
// Two fast paths, both float32 NHWC with dilation 1:
// - stride 1: dx is the convolution of dy with the filter rotated by 180° and its channel axes
//   swapped, W'[fh−1−r, fw−1−c, o, i] = W[r, c, i, o], padded by fh−1−top / fw−1−left (and the
//   same on the far sides). That runs on the backend's own Conv2D kernel, which is XNNPACK's.
// - any other stride: dcol[M, K] = dy[M, Co] · Wᵀ[Co, K] with the backend's untransposed
//   BatchMatMul (XNNPACK), M = N·oh·ow output pixels and K = fh·fw·Ci filter taps, then col2im
//   adds each output pixel's K values into the input positions its taps read. Split along the
//   batch when dcol would pass `wasmConvInputGradTuning.maxColBytes`; chunks write disjoint images.
// Anything else (NCHW, other dtypes, dilations, a dy that does not fit the convolution) goes to
// the kernel this one replaced. The results differ from that kernel's only by float32 rounding
// (summation order); see test/shared/wasm-conv-input-grad.test.ts.
import {
  backend_util,
  BatchMatMul,
  Conv2D,
  Conv2DBackpropInput,
  getKernel,
  registerKernel,
  unregisterKernel,
  util,
  type Conv2DBackpropInputAttrs,
  type KernelConfig,
  type KernelFunc,
  type NamedAttrMap,
  type TensorInfo,
} from '@tensorflow/tfjs-core';
// Type-only: a value import would register the 'wasm' backend in processes that never asked for it.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapF32, heapIndex } from './wasm-conv-filter-grad.js';

const WASM = 'wasm';

type KernelArgs = Parameters<KernelFunc>[0];

/** Cap on the dcol buffer of the strided path (bytes); mutable so tests can force chunking. */
export const wasmConvInputGradTuning = {
  maxColBytes: 64 * 1024 * 1024,
};

/** How many calls took each path since the process started (for tests and the benchmark). */
export const wasmConvInputGradStats = {
  conv: 0,
  gemm: 0,
  fallback: 0,
};

/** The kernel this module replaced (TF.js's own), kept for the cases the fast paths do not take. */
let replaced: KernelConfig | undefined;

interface Geometry {
  info: backend_util.Conv2DInfo;
  /** [fh, fw, Ci, Co] */
  filterShape: [number, number, number, number];
}

function geometryOf(dy: TensorInfo, filter: TensorInfo, attrs: Conv2DBackpropInputAttrs): Geometry | null {
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs;
  if (dataFormat !== 'NHWC' || dy.dtype !== 'float32' || filter.dtype !== 'float32') return null;
  if (dy.shape.length !== 4 || filter.shape.length !== 4 || inputShape.length !== 4) return null;
  let info: backend_util.Conv2DInfo;
  try {
    info = backend_util.computeConv2DInfo(
      inputShape,
      filter.shape as [number, number, number, number],
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
  } catch {
    return null;
  }
  const [b, h, w, c] = dy.shape;
  if (b !== info.batchSize || h !== info.outHeight || w !== info.outWidth || c !== info.outChannels) return null;
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  if (util.sizeFromShape(dy.shape) === 0 || util.sizeFromShape(filter.shape) === 0) return null;
  return { info, filterShape: filter.shape as [number, number, number, number] };
}

/** Stride 1: the convolution of dy with the rotated, channel-swapped filter, on XNNPACK. */
function viaConv(wasm: BackendWasm, conv2d: KernelFunc, dy: TensorInfo, filter: TensorInfo, g: Geometry): TensorInfo {
  const { padInfo, filterHeight: fh, filterWidth: fw, inChannels: ci, outChannels: co, inShape } = g.info;
  const rotated = wasm.makeOutput([fh, fw, co, ci], 'float32');
  try {
    const heap = heapF32(wasm);
    const src = heapIndex(wasm, filter);
    const dst = heapIndex(wasm, rotated);
    for (let r = 0; r < fh; r++)
      for (let c = 0; c < fw; c++) {
        const from = src + (r * fw + c) * ci * co;
        const to = dst + ((fh - 1 - r) * fw + (fw - 1 - c)) * co * ci;
        for (let i = 0; i < ci; i++) for (let o = 0; o < co; o++) heap[to + o * ci + i] = heap[from + i * co + o]!;
      }
    const out = conv2d({
      inputs: { x: dy, filter: rotated },
      backend: wasm,
      attrs: {
        strides: [1, 1],
        dilations: [1, 1],
        pad: [
          [0, 0],
          [fh - 1 - padInfo.top, fh - 1 - padInfo.bottom],
          [fw - 1 - padInfo.left, fw - 1 - padInfo.right],
          [0, 0],
        ],
        dataFormat: 'NHWC',
        dimRoundingMode: undefined,
      } as unknown as NamedAttrMap,
    }) as TensorInfo;
    // The convolution's output shape is exactly the input's, as the padding was chosen for.
    return { ...out, shape: inShape };
  } finally {
    // Releases the XNNPACK operator the Conv2D kernel cached under this filter's id.
    wasm.disposeData(rotated.dataId);
  }
}

/** Any stride: dcol = dy · Wᵀ on XNNPACK, then col2im into a zeroed dx, a chunk of images at a time. */
function viaGemm(wasm: BackendWasm, matMul: KernelFunc, dy: TensorInfo, filter: TensorInfo, g: Geometry): TensorInfo {
  const { batchSize, inHeight: inH, inWidth: inW, inChannels: ci, outHeight: outH, outWidth: outW } = g.info;
  const { outChannels: co, filterHeight: fh, filterWidth: fw } = g.info;
  const k = fh * fw * ci;
  const pixels = outH * outW;
  const chunk = Math.max(1, Math.min(batchSize, Math.floor(wasmConvInputGradTuning.maxColBytes / (pixels * k * 4))));
  const dx = wasm.makeOutput(g.info.inShape, 'float32');
  const filterT = wasm.makeOutput([1, co, k], 'float32');
  try {
    let heap = heapF32(wasm);
    const dxAt = heapIndex(wasm, dx);
    heap.fill(0, dxAt, dxAt + batchSize * inH * inW * ci);
    const wAt = heapIndex(wasm, filter);
    const wtAt = heapIndex(wasm, filterT);
    for (let j = 0; j < k; j++) for (let o = 0; o < co; o++) heap[wtAt + o * k + j] = heap[wAt + j * co + o]!;
    for (let n0 = 0; n0 < batchSize; n0 += chunk) {
      const nb = Math.min(chunk, batchSize - n0);
      const m = nb * pixels;
      // dy's rows of these images, as a tensor of its own: BatchMatMul takes no offset.
      const rows = wasm.makeOutput([1, m, co], 'float32');
      let dcol: TensorInfo | undefined;
      try {
        heap = heapF32(wasm);
        const dyAt = heapIndex(wasm, dy) + n0 * pixels * co;
        heap.copyWithin(heapIndex(wasm, rows), dyAt, dyAt + m * co);
        dcol = matMul({
          inputs: { a: rows, b: filterT },
          backend: wasm,
          attrs: { transposeA: false, transposeB: false },
        }) as TensorInfo;
        heap = heapF32(wasm);
        col2im(heap, heapIndex(wasm, dcol), dxAt, g.info, n0, nb);
      } finally {
        wasm.disposeData(rows.dataId);
        if (dcol !== undefined) wasm.disposeData(dcol.dataId);
      }
    }
    return dx;
  } catch (error) {
    wasm.disposeData(dx.dataId);
    throw error;
  } finally {
    // Releases the XNNPACK operator BatchMatMul cached under this right-hand operand's id.
    wasm.disposeData(filterT.dataId);
  }
}

/**
 * Adds each output pixel's K = fh·fw·Ci values of dcol (images [n0, n0 + nb)) into the input
 * positions its taps read; taps that fall into the padding are dropped.
 */
function col2im(
  heap: Float32Array,
  colAt: number,
  dxAt: number,
  info: backend_util.Conv2DInfo,
  n0: number,
  nb: number,
): void {
  const { inHeight: inH, inWidth: inW, inChannels: ci, outHeight: outH, outWidth: outW } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  const k = fh * fw * ci;
  for (let n = 0; n < nb; n++) {
    const image = dxAt + (n0 + n) * inH * inW * ci;
    for (let y = 0; y < outH; y++)
      for (let x = 0; x < outW; x++) {
        const col = colAt + ((n * outH + y) * outW + x) * k;
        for (let r = 0; r < fh; r++) {
          const row = y * sh + r - top;
          if (row < 0 || row >= inH) continue;
          for (let c = 0; c < fw; c++) {
            const column = x * sw + c - left;
            if (column < 0 || column >= inW) continue;
            const to = image + (row * inW + column) * ci;
            const from = col + (r * fw + c) * ci;
            for (let i = 0; i < ci; i++) heap[to + i] = heap[to + i]! + heap[from + i]!;
          }
        }
      }
  }
}

/** The replacement kernel; see the top of this file. */
export const conv2DBackpropInputWasm: KernelFunc = (args: KernelArgs) => {
  const wasm = args.backend as BackendWasm;
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const g = geometryOf(dy, filter, args.attrs as unknown as Conv2DBackpropInputAttrs);
  const conv2d = (getKernel(Conv2D, WASM) as KernelConfig | undefined)?.kernelFunc;
  const matMul = (getKernel(BatchMatMul, WASM) as KernelConfig | undefined)?.kernelFunc;
  if (g !== null) {
    const { strideHeight, strideWidth, padInfo, filterHeight: fh, filterWidth: fw } = g.info;
    const padsFit =
      padInfo.top <= fh - 1 && padInfo.bottom <= fh - 1 && padInfo.left <= fw - 1 && padInfo.right <= fw - 1;
    if (strideHeight === 1 && strideWidth === 1 && padsFit && conv2d !== undefined) {
      wasmConvInputGradStats.conv++;
      return viaConv(wasm, conv2d, dy, filter, g);
    }
    if (matMul !== undefined) {
      wasmConvInputGradStats.gemm++;
      return viaGemm(wasm, matMul, dy, filter, g);
    }
  }
  if (replaced === undefined) throw new Error("the 'wasm' Conv2DBackpropInput kernel was not registered");
  wasmConvInputGradStats.fallback++;
  return replaced.kernelFunc(args);
};

/**
 * Puts `conv2DBackpropInputWasm` in place of the 'wasm' backend's Conv2DBackpropInput, keeping
 * the replaced kernel's set-up function and the kernel itself for the cases it does not take.
 * Idempotent. Call it after `@tensorflow/tfjs-backend-wasm` has been imported.
 */
export function registerWasmConvInputGrad(): void {
  const current = getKernel(Conv2DBackpropInput, WASM) as KernelConfig | undefined;
  if (current === undefined || current.kernelFunc === conv2DBackpropInputWasm) return;
  replaced = current;
  unregisterKernel(Conv2DBackpropInput, WASM);
  registerKernel({ ...current, kernelFunc: conv2DBackpropInputWasm });
}
