// Replaces the 'cpu' Conv2DBackpropFilter kernel: TF.js 4.22.0's reads x and dy through
// TensorBuffer.get, an index computation and a bounds check per value, innermost over the batch
// and the output pixels, so a CIFAR ResNet-20's filter gradients took 93 % of its cpu step
// (40 s of 43 at a batch of 2).
//
// This one walks the output pixels once: for each pixel, each filter tap that lands inside the
// input and each input channel, it adds x·dy[pixel, :] into that tap's row of dW, in a Float64
// accumulator (contiguous inner loop over the output channels). float32 NHWC with dilation 1;
// anything else goes to the kernel it replaced. The sums are over the same products, in float64
// where TF.js's are in float64 per element too, so the results differ only in summation order.
import {
  Conv2DBackpropFilter,
  getKernel,
  registerKernel,
  unregisterKernel,
  type Conv2DBackpropFilterAttrs,
  type KernelConfig,
  type KernelFunc,
  type TensorInfo,
} from '@tensorflow/tfjs-core';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { planIm2col, type Plan } from './wasm-conv-filter-grad.js';

const CPU = 'cpu';

type KernelArgs = Parameters<KernelFunc>[0];

/** The kernel this module replaced (TF.js's own), kept for the cases this one does not take. */
let replaced: KernelConfig | undefined;

/** How many calls took each path since the process started (for tests). */
export const cpuConvFilterGradStats = { direct: 0, fallback: 0 };

/** dW [fh, fw, Ci, Co] of x [N, H, W, Ci] and dy [N, oh, ow, Co], summed in float64. */
function filterGrad(x: Float32Array, dy: Float32Array, p: Plan): Float64Array {
  const { batch, inH, inW, inC, outH, outW, outC, fh, fw, sh, sw, top, left } = p;
  const dw = new Float64Array(fh * fw * inC * outC);
  for (let n = 0; n < batch; n++)
    for (let y = 0; y < outH; y++)
      for (let xo = 0; xo < outW; xo++) {
        const g = ((n * outH + y) * outW + xo) * outC;
        for (let r = 0; r < fh; r++) {
          const row = y * sh + r - top;
          if (row < 0 || row >= inH) continue;
          for (let c = 0; c < fw; c++) {
            const column = xo * sw + c - left;
            if (column < 0 || column >= inW) continue;
            const from = ((n * inH + row) * inW + column) * inC;
            const tap = (r * fw + c) * inC * outC;
            for (let i = 0; i < inC; i++) {
              const v = x[from + i]!;
              const at = tap + i * outC;
              for (let o = 0; o < outC; o++) dw[at + o] = dw[at + o]! + v * dy[g + o]!;
            }
          }
        }
      }
  return dw;
}

/** The replacement kernel; see the top of this file. */
export const conv2DBackpropFilterCpu: KernelFunc = (args: KernelArgs) => {
  const cpu = args.backend as MathBackendCPU;
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const plan = planIm2col(x, dy, args.attrs as unknown as Conv2DBackpropFilterAttrs);
  if (plan === null) {
    if (replaced === undefined) throw new Error("the 'cpu' Conv2DBackpropFilter kernel was not registered");
    cpuConvFilterGradStats.fallback++;
    return replaced.kernelFunc(args);
  }
  cpuConvFilterGradStats.direct++;
  const xv = cpu.data.get(x.dataId).values as Float32Array;
  const dyv = cpu.data.get(dy.dataId).values as Float32Array;
  return cpu.makeTensorInfo(plan.filterShape, 'float32', Float32Array.from(filterGrad(xv, dyv, plan)));
};

/**
 * Puts `conv2DBackpropFilterCpu` in place of the 'cpu' backend's Conv2DBackpropFilter, keeping
 * the replaced kernel for the cases it does not take. Idempotent.
 */
export function registerCpuConvFilterGrad(): void {
  const current = getKernel(Conv2DBackpropFilter, CPU) as KernelConfig | undefined;
  if (current === undefined || current.kernelFunc === conv2DBackpropFilterCpu) return;
  replaced = current;
  unregisterKernel(Conv2DBackpropFilter, CPU);
  registerKernel({ ...current, kernelFunc: conv2DBackpropFilterCpu });
}
