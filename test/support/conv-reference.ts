// Float64 loop references for the convolution gradients (NHWC), independent of every TF.js
// kernel, and the error measure the kernel tests compare with.

export type Shape4 = [number, number, number, number];
export type Pad = 'same' | 'valid';

/** TF's output size and leading (top/left) padding for one spatial dimension. */
export function outAndPad(inSize: number, k: number, stride: number, pad: Pad): [number, number] {
  if (pad === 'valid') return [Math.ceil((inSize - k + 1) / stride), 0];
  const out = Math.ceil(inSize / stride);
  const total = Math.max((out - 1) * stride + k - inSize, 0);
  return [out, Math.floor(total / 2)];
}

/** dy's shape for a convolution of x by a filter [fh, fw, Ci, Co]. */
export function dyShapeOf(xShape: Shape4, filterShape: Shape4, strides: [number, number], pad: Pad): Shape4 {
  const [oh] = outAndPad(xShape[1], filterShape[0], strides[0], pad);
  const [ow] = outAndPad(xShape[2], filterShape[1], strides[1], pad);
  return [xShape[0], oh, ow, filterShape[3]];
}

/** Calls f(n, y, x, r, c, xr, xc) for every output pixel and filter tap that reads inside the input. */
function eachTap(
  xShape: Shape4,
  filterShape: Shape4,
  strides: [number, number],
  pad: Pad,
  f: (n: number, y: number, x: number, r: number, c: number, xr: number, xc: number) => void,
): void {
  const [b, h, w] = xShape;
  const [fh, fw] = filterShape;
  const [oh, top] = outAndPad(h, fh, strides[0], pad);
  const [ow, left] = outAndPad(w, fw, strides[1], pad);
  for (let n = 0; n < b; n++)
    for (let y = 0; y < oh; y++)
      for (let x = 0; x < ow; x++)
        for (let r = 0; r < fh; r++) {
          const xr = y * strides[0] + r - top;
          if (xr < 0 || xr >= h) continue;
          for (let c = 0; c < fw; c++) {
            const xc = x * strides[1] + c - left;
            if (xc >= 0 && xc < w) f(n, y, x, r, c, xr, xc);
          }
        }
}

/** dW [fh, fw, Ci, Co] of x and dy. */
export function referenceFilterGrad(
  x: Float32Array,
  xShape: Shape4,
  dy: Float32Array,
  filterShape: Shape4,
  strides: [number, number],
  pad: Pad,
): Float64Array {
  const [, h, w, ci] = xShape;
  const [, fw, , co] = filterShape;
  const [, oh, ow] = dyShapeOf(xShape, filterShape, strides, pad);
  const dW = new Float64Array(filterShape.reduce((a, b) => a * b, 1));
  eachTap(xShape, filterShape, strides, pad, (n, y, xo, r, c, xr, xc) => {
    for (let i = 0; i < ci; i++) {
      const xv = x[((n * h + xr) * w + xc) * ci + i]!;
      for (let o = 0; o < co; o++) dW[((r * fw + c) * ci + i) * co + o]! += xv * dy[((n * oh + y) * ow + xo) * co + o]!;
    }
  });
  return dW;
}

/** dx [N, H, W, Ci] of the filter and dy. */
export function referenceInputGrad(
  xShape: Shape4,
  filter: Float32Array,
  dy: Float32Array,
  filterShape: Shape4,
  strides: [number, number],
  pad: Pad,
): Float64Array {
  const [, h, w, ci] = xShape;
  const [, fw, , co] = filterShape;
  const [, oh, ow] = dyShapeOf(xShape, filterShape, strides, pad);
  const dx = new Float64Array(xShape.reduce((a, b) => a * b, 1));
  eachTap(xShape, filterShape, strides, pad, (n, y, xo, r, c, xr, xc) => {
    for (let i = 0; i < ci; i++) {
      let sum = 0;
      for (let o = 0; o < co; o++)
        sum += filter[((r * fw + c) * ci + i) * co + o]! * dy[((n * oh + y) * ow + xo) * co + o]!;
      dx[((n * h + xr) * w + xc) * ci + i]! += sum;
    }
  });
  return dx;
}

/**
 * Max element-wise relative error. The denominator is floored at 1e-3 of the reference's largest
 * magnitude so entries that are nearly zero by cancellation do not dominate.
 */
export function maxRelErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new RangeError(`lengths ${actual.length} and ${expected.length}`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  const floor = Math.max(scale * 1e-3, 1e-12);
  let worst = 0;
  for (let i = 0; i < expected.length; i++)
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(Math.abs(expected[i]!), floor));
  return worst;
}
