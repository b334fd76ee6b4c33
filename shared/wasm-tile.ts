// Replaces the 'wasm' Tile kernel: TF.js 4.22.0's computes every output element's source index
// with a division per axis, about 30 ns a value here, and tfjs-core's batch-norm gradient tiles
// the per-channel 1/sqrt(variance + ε) to the whole activation ([N, H, W, C]) for every
// BatchNormalization layer: on a CIFAR ResNet-20 that was a fifth of the wasm training step.
//
// This one writes the output with block copies (a native memmove): innermost axis first, each
// axis's block copied to fill its repetitions by doubling. float32 and int32 (4-byte values)
// only; anything else goes to the kernel it replaced. Same values, bit for bit (a copy).
import {
  getKernel,
  registerKernel,
  Tile,
  unregisterKernel,
  util,
  type KernelConfig,
  type KernelFunc,
  type TensorInfo,
  type TileAttrs,
} from '@tensorflow/tfjs-core';
// Type-only: a value import would register the 'wasm' backend in processes that never asked for it.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapF32, heapIndex } from './wasm-conv-filter-grad.js';

const WASM = 'wasm';

type KernelArgs = Parameters<KernelFunc>[0];

/** The kernel this module replaced (TF.js's own), kept for the dtypes this one does not take. */
let replaced: KernelConfig | undefined;

/** How many calls took each path since the process started (for tests). */
export const wasmTileStats = { copy: 0, fallback: 0 };

/**
 * Writes x tiled by `reps` at heap index `out`: axis by axis from the outermost, recursively, so
 * each axis's repeated block is one contiguous run that copyWithin doubles until it fills.
 */
function tileInto(heap: Float32Array, x: number, shape: readonly number[], reps: readonly number[], out: number): void {
  const rank = shape.length;
  // inSize[d] / outSize[d]: values of one block below axis d, in x and in the output.
  const inSize = new Array<number>(rank + 1).fill(1);
  const outSize = new Array<number>(rank + 1).fill(1);
  for (let d = rank - 1; d >= 0; d--) {
    inSize[d] = inSize[d + 1]! * shape[d]!;
    outSize[d] = outSize[d + 1]! * shape[d]! * reps[d]!;
  }
  const fill = (d: number, src: number, dst: number): void => {
    const once = shape[d]! * outSize[d + 1]!; // one repetition of this axis, in the output
    if (d === rank - 1) heap.copyWithin(dst, src, src + shape[d]!);
    else for (let i = 0; i < shape[d]!; i++) fill(d + 1, src + i * inSize[d + 1]!, dst + i * outSize[d + 1]!);
    const total = once * reps[d]!;
    for (let filled = once; filled < total; filled *= 2)
      heap.copyWithin(dst + filled, dst, dst + Math.min(filled, total - filled));
  };
  fill(0, x, out);
}

/** The replacement kernel; see the top of this file. */
export const tileWasm: KernelFunc = (args: KernelArgs) => {
  const wasm = args.backend as BackendWasm;
  const { x } = args.inputs as { x: TensorInfo };
  const { reps } = args.attrs as unknown as TileAttrs;
  const shape = x.shape.map((s, d) => s * reps[d]!);
  if ((x.dtype !== 'float32' && x.dtype !== 'int32') || reps.length !== x.shape.length || x.shape.length === 0) {
    if (replaced === undefined) throw new Error("the 'wasm' Tile kernel was not registered");
    wasmTileStats.fallback++;
    return replaced.kernelFunc(args);
  }
  wasmTileStats.copy++;
  const out = wasm.makeOutput(shape, x.dtype);
  if (util.sizeFromShape(shape) > 0) tileInto(heapF32(wasm), heapIndex(wasm, x), x.shape, reps, heapIndex(wasm, out));
  return out;
};

/**
 * Puts `tileWasm` in place of the 'wasm' backend's Tile, keeping the replaced kernel's set-up
 * function and the kernel itself for the dtypes it does not take. Idempotent. Call it after
 * `@tensorflow/tfjs-backend-wasm` has been imported.
 */
export function registerWasmTile(): void {
  const current = getKernel(Tile, WASM) as KernelConfig | undefined;
  if (current === undefined || current.kernelFunc === tileWasm) return;
  replaced = current;
  unregisterKernel(Tile, WASM);
  registerKernel({ ...current, kernelFunc: tileWasm });
}
