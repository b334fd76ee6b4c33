// Weights and optimizer state as one float body, for the sharded reducer: a worker that joins
// receives them in its first `work`, and the coordinator fetches them (`state`) for evaluation,
// checkpoints and the saved model. Scalars (Adam's `t`) travel in the header.

import { ProtocolError } from './errors.js';
import type { OptimizerState } from './optimizers/index.js';
import type { StateLayout } from './protocol.js';

/** `weights` followed by every array of `state`, and the layout that reads them back. */
export function packState(weights: Float32Array, state: OptimizerState): { body: Float32Array; layout: StateLayout } {
  const scalars: Record<string, number> = {};
  const arrays: string[] = [];
  let length = weights.length;
  for (const [key, value] of Object.entries(state)) {
    if (typeof value === 'number') scalars[key] = value;
    else {
      arrays.push(key);
      length += value.length;
    }
  }
  const body = new Float32Array(length);
  body.set(weights);
  let offset = weights.length;
  for (const key of arrays) {
    const array = state[key] as Float32Array;
    body.set(array, offset);
    offset += array.length;
  }
  return { body, layout: { scalars, arrays } };
}

/** Reverse of `packState`: copies of the weights and of each state array. Throws when the body does not fit. */
export function unpackState(
  body: Float32Array,
  layout: StateLayout,
  paramCount: number,
): { weights: Float32Array; state: OptimizerState } {
  const expected = paramCount * (1 + layout.arrays.length);
  if (body.length !== expected)
    throw new ProtocolError(
      'BAD_FRAME',
      `state body has ${body.length} values; ${paramCount} weights and ${layout.arrays.length} state arrays need ${expected}`,
    );
  const state: OptimizerState = { ...layout.scalars };
  layout.arrays.forEach((key, i) => {
    state[key] = body.slice(paramCount * (i + 1), paramCount * (i + 2));
  });
  return { weights: body.slice(0, paramCount), state };
}
