// The layers of the flat weight vector as the layer-wise rules (LARS, LAMB) see them: one segment
// per ParamSpec, in order, and which segments are left out of the trust ratio and weight decay.

import { BatchlabError } from '../errors.js';
import { sizeOf } from '../param-layout.js';
import type { ParamSpec } from '../protocol.js';

/**
 * Whether LARS and LAMB leave `spec` out of the layer-wise trust ratio and out of weight decay:
 * true for tensors of rank 1 or less, i.e. biases and batch-norm scale (gamma) and offset
 * (beta), and any scalar. Such tensors update with trust 1 and no decay, as in You et al.
 * (2017, 2019) and the usual `ndim <= 1` rule; the decision is by shape alone, not by name.
 */
export function isExcludedFromTrust(spec: ParamSpec): boolean {
  return spec.shape.length <= 1;
}

/** One tensor's slice [offset, offset + size) of the flat vector. */
export interface LayerSegment {
  name: string;
  offset: number;
  size: number;
  /** See `isExcludedFromTrust`. */
  isExcluded: boolean;
}

/** The segments of the flat vector laid out by `params` (their concatenation, in order). */
export function layerSegmentsOf(params: readonly ParamSpec[]): LayerSegment[] {
  let offset = 0;
  return params.map((spec) => {
    const size = sizeOf(spec.shape);
    const segment = { name: spec.name, offset, size, isExcluded: isExcludedFromTrust(spec) };
    offset += size;
    return segment;
  });
}

/** Number of values `segments` cover: the length of the flat vector they lay out. */
export function countLayoutValues(segments: readonly LayerSegment[]): number {
  const last = segments.at(-1);
  return last ? last.offset + last.size : 0;
}

/**
 * Checks that `weights` and `grad` are the flat vector `segments` lay out. Throws a
 * `BatchlabError` (`SHAPE_MISMATCH`) naming the rule and both sizes otherwise.
 */
export function assertMatchesLayout(
  rule: string,
  segments: readonly LayerSegment[],
  weights: Float32Array,
  grad: Float32Array,
): void {
  const expected = countLayoutValues(segments);
  if (weights.length !== expected || grad.length !== expected) {
    throw new BatchlabError(
      'SHAPE_MISMATCH',
      `${rule}: weights have ${weights.length} values and the gradient ${grad.length}, but the ${segments.length} params passed to createOptimizer hold ${expected}; pass the model's own param specs (paramSpecsOf(model))`,
    );
  }
}
