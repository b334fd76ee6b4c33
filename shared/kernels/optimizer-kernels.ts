// The element-wise optimizer updates (Adam/AdamW, momentum SGD) run in WebAssembly SIMD: see
// optimizer-kernels.wat. The arrays stay where the optimizers keep them; each call streams them
// through a small scratch window in the kernel's memory (copies there and back are memcpy, about
// a tenth of the arithmetic's time), so there is no size limit, no memory growth and no change to
// who owns the state. Results are bit-identical to the float64 JavaScript loops they replace.

import { OPTIMIZER_KERNELS_WASM_BASE64 } from './optimizer-kernels.wasm.js';

/** Elements per window: four float32 arrays of 32 KiB, which stay in the L2 cache. */
const WINDOW = 8192;
const WINDOW_BYTES = WINDOW * 4;

// The project's libs (ES2022, Node types) do not describe the WebAssembly global; this is the part used.
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { readonly exports: unknown };
};

interface KernelExports {
  adam(
    w: number,
    g: number,
    m: number,
    v: number,
    n: number,
    b1: number,
    a1: number,
    b2: number,
    a2: number,
    coupled: number,
    shrink: number,
    stepSize: number,
    invSqrtC2: number,
    eps: number,
  ): void;
  sgd(w: number, g: number, v: number, n: number, mu: number, wd: number, lr: number, nesterov: number): void;
}

interface Scratch {
  kernel: KernelExports;
  /** Views of the four windows, at byte offsets 0, WINDOW_BYTES, 2 × and 3 ×. */
  windows: [Float32Array, Float32Array, Float32Array, Float32Array];
}

let scratch: Scratch | null = null;

/** The process's one kernel instance (JavaScript is single-threaded; calls never interleave). */
function instance(): Scratch {
  if (scratch) return scratch;
  const memory = new WebAssembly.Memory({ initial: Math.ceil((4 * WINDOW_BYTES) / 65536) });
  const module = new WebAssembly.Module(Buffer.from(OPTIMIZER_KERNELS_WASM_BASE64, 'base64'));
  const kernel = new WebAssembly.Instance(module, { env: { memory } }).exports as KernelExports;
  const view = (k: number): Float32Array => new Float32Array(memory.buffer, k * WINDOW_BYTES, WINDOW);
  scratch = { kernel, windows: [view(0), view(1), view(2), view(3)] };
  return scratch;
}

/** Adam's per-step constants, as adam.ts derives them. */
export interface AdamCoefficients {
  b1: number;
  b2: number;
  /** Weight decay added to the gradient (Adam); 0 for AdamW. */
  coupled: number;
  /** Factor on the weights before the step (AdamW: 1 - lr * wd); 1 for Adam. */
  shrink: number;
  /** lr / (1 - b1^t). */
  stepSize: number;
  /** 1 / sqrt(1 - b2^t). */
  invSqrtC2: number;
  eps: number;
}

/**
 * In place, for each i: g = grad + coupled*w; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 * w = w*shrink - stepSize*m / (sqrt(v)*invSqrtC2 + eps), all in float64, rounded on store.
 */
export function adamUpdate(
  weights: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  c: AdamCoefficients,
): void {
  streamWindows('adam', [weights, grad, m, v], (kernel, n) =>
    kernel.adam(
      0,
      WINDOW_BYTES,
      2 * WINDOW_BYTES,
      3 * WINDOW_BYTES,
      n,
      c.b1,
      1 - c.b1,
      c.b2,
      1 - c.b2,
      c.coupled,
      c.shrink,
      c.stepSize,
      c.invSqrtC2,
      c.eps,
    ),
  );
}

/**
 * In place, for each i: g = grad + wd*w; v = mu*v + g; w = w - lr * (nesterov ? g + mu*v : v),
 * all in float64, rounded on store.
 */
export function sgdMomentumUpdate(
  weights: Float32Array,
  grad: Float32Array,
  velocity: Float32Array,
  mu: number,
  wd: number,
  lr: number,
  nesterov: boolean,
): void {
  streamWindows('sgd', [weights, grad, velocity], (kernel, n) =>
    kernel.sgd(0, WINDOW_BYTES, 2 * WINDOW_BYTES, n, mu, wd, lr, nesterov ? 1 : 0),
  );
}

/**
 * Streams `arrays` (weights, gradient, then state; all as long as the weights) through the
 * kernel's windows, array k in window k, `run` on each window of n values. Every array but the
 * gradient (index 1) is updated, so those are copied back.
 */
function streamWindows(rule: string, arrays: Float32Array[], run: (kernel: KernelExports, n: number) => void): void {
  const length = arrays[0]!.length;
  for (const array of arrays) {
    if (array.length !== length)
      throw new Error(`${rule} update: an array holds ${array.length} values but the weights have ${length}`);
  }
  const { kernel, windows } = instance();
  for (let start = 0; start < length; start += WINDOW) {
    const end = Math.min(length, start + WINDOW);
    for (let k = 0; k < arrays.length; k++) windows[k]!.set(arrays[k]!.subarray(start, end));
    run(kernel, end - start);
    for (let k = 0; k < arrays.length; k++) if (k !== 1) arrays[k]!.set(windows[k]!.subarray(0, end - start), start);
  }
}
