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

/** A run of consecutive tensors that weight decay treats alike: [start, end) of the flat vector. */
export interface DecaySegment {
  start: number;
  end: number;
  /** False for tensors of rank <= 1 (`isExcludedFromTrust`): biases, batch-norm scales and offsets. */
  decayed: boolean;
}

/**
 * The flat vector laid out by `params` as runs of decayed and undecayed tensors (consecutive
 * tensors of the same kind merged), for the element-wise rules (sgd, adam, adamw), which apply
 * weight decay to tensors of rank >= 2 only, as LARS and LAMB do.
 */
export function decaySegments(params: readonly ParamSpec[]): DecaySegment[] {
  const runs: DecaySegment[] = [];
  let offset = 0;
  for (const spec of params) {
    const end = offset + sizeOf(spec.shape);
    const decayed = !isExcludedFromTrust(spec);
    const last = runs.at(-1);
    if (last && last.decayed === decayed) last.end = end;
    else runs.push({ start: offset, end, decayed });
    offset = end;
  }
  return runs;
}

/**
 * The runs an element-wise update goes over: without weight decay (or without a layout) the
 * whole vector as one decayed run, so the update is a single pass and its bits do not depend on
 * the layout; with decay the segments, which must cover the `length` values.
 */
export function decayRanges(
  segments: readonly DecaySegment[],
  length: number,
  weightDecay: number,
): readonly DecaySegment[] {
  if (weightDecay === 0 || segments.length === 0) return [{ start: 0, end: length, decayed: true }];
  const covered = segments.at(-1)!.end;
  if (covered !== length)
    throw new BatchlabError(
      'SHAPE_MISMATCH',
      `weight decay: the layout has ${covered} values but the weights have ${length}`,
    );
  return segments;
}
