// Owns the 'wasm' Conv2DBackpropFilter kernel: TF.js 4.22.0's wasm backend ships none, so any conv2d
// training step on 'wasm' throws "Kernel 'Conv2DBackpropFilter' not registered" (tensorflow/tfjs#8474).
// We fill the gap by delegating to the cpu backend's reference kernel.
import {
  Conv2DBackpropFilter,
  findBackend,
  getKernel,
  registerKernel,
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

/**
 * Computes dW on the cpu backend and hands the result back to wasm.
 *
 * The wasm Conv3DBackpropFilterV2 kernel is deliberately not used (by reshaping to depth 1): it gives
 * wrong filter gradients for stride > 1, while the cpu kernel is the reference implementation the
 * other backends are tested against.
 */
const conv2DBackpropFilterViaCpu: KernelFunc = ({ inputs, backend, attrs }) => {
  const wasm = backend as BackendWasm;
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const cpuKernel = getKernel(Conv2DBackpropFilter, 'cpu');
  // Looked up per call rather than at registration so the order in which the backends are imported
  // and initialised does not matter; findBackend initialises the cpu backend synchronously if needed.
  const cpu = findBackend('cpu') as MathBackendCPU | null;
  if (cpuKernel == null || cpu == null) {
    throw new Error(
      "Conv2DBackpropFilter for 'wasm' delegates to the cpu backend, which is not available",
    );
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
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } =
      attrs as unknown as Conv2DBackpropFilterAttrs;
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

/**
 * Registers a `Conv2DBackpropFilter` kernel for the `'wasm'` backend so conv2d layers can be
 * trained there (TF.js 4.22.0 lacks one; tensorflow/tfjs#8474).
 *
 * The kernel copies `x` and `dy` to the cpu backend, runs the cpu kernel with the same attributes
 * and copies the filter gradient back, freeing every cpu-side buffer it created.
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
    kernelFunc: conv2DBackpropFilterViaCpu,
  });
}
