// Seeded initial weights computed in JS, so every backend and every process starts from the
// same bits: Glorot-uniform kernels (Glorot & Bengio 2010), zero biases and batch-norm offsets,
// batch-norm scales (`…/gamma`) of one.

import { createRandom } from './data/seeded-random.js';
import { countParams, sizeOf } from './param-layout.js';
import type { ParamSpec } from './protocol.js';

/** Fan-in and fan-out of a dense [in, out] or conv [kh, kw, in, out] kernel. */
function fans(shape: readonly number[]): [number, number] {
  if (shape.length === 2) return [shape[0]!, shape[1]!];
  const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  return [receptive * shape[shape.length - 2]!, receptive * shape[shape.length - 1]!];
}

/**
 * The initial flat weight vector for `specs` from `seed`. Tensors of rank 1 are zero (biases,
 * batch-norm offsets), except batch-norm scales (named `…/gamma`), which are one.
 */
export function initialWeights(specs: readonly ParamSpec[], seed: number): Float32Array {
  const flat = new Float32Array(countParams(specs));
  const random = createRandom(seed >>> 0);
  let offset = 0;
  for (const spec of specs) {
    const n = sizeOf(spec.shape);
    if (spec.shape.length >= 2) {
      const [fanIn, fanOut] = fans(spec.shape);
      const limit = Math.sqrt(6 / (fanIn + fanOut));
      for (let i = 0; i < n; i++) flat[offset + i] = (2 * random.next() - 1) * limit;
    } else if (spec.name.endsWith('/gamma')) {
      flat.fill(1, offset, offset + n);
    }
    offset += n;
  }
  return flat;
}
