// Checkpointable optimizer state: copied snapshots and checked loads. `loadState` is a checkpoint
// edge, so state from another rule or another model is refused with a precise error.

import { BatchlabError } from '../errors.js';
import type { OptimizerState } from './optimizer.js';

/** Adam-family state: step counter and the two moment arrays (null until the first step). */
export interface MomentState {
  t: number;
  m: Float32Array | null;
  v: Float32Array | null;
}

/** A copy of Adam-family state as `{ t, m, v }`; `m` and `v` are omitted before the first step. */
export function snapshotMoments({ t, m, v }: MomentState): OptimizerState {
  return m && v ? { t, m: m.slice(), v: v.slice() } : { t };
}

/**
 * Reads `{ t, m, v }` (reverse of `snapshotMoments`), copying the arrays. `length`, when known,
 * is the number of weights. Throws a `BatchlabError` (`SHAPE_MISMATCH`) on any other shape.
 */
export function readMoments(rule: string, state: OptimizerState, length: number | null): MomentState {
  assertKeys(rule, state, ['t', 'm', 'v']);
  const t = state['t'];
  if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0) {
    throw stateError(rule, `"t" must be a step count (an integer >= 0), got ${describe(t)}`);
  }
  const m = readArray(rule, state, 'm', length);
  const v = readArray(rule, state, 'v', length ?? m?.length ?? null);
  if ((m === null) !== (t === 0) || (v === null) !== (t === 0)) {
    throw stateError(
      rule,
      `"m" and "v" must be present exactly when "t" > 0; got t = ${t}, m ${m ? 'present' : 'absent'}, v ${v ? 'present' : 'absent'}`,
    );
  }
  return { t, m, v };
}

/** A copy of momentum state as `{ velocity }`, empty before the velocity exists. */
export function snapshotVelocity(velocity: Float32Array | null): OptimizerState {
  return velocity ? { velocity: velocity.slice() } : {};
}

/** Reads `{ velocity }` (reverse of `snapshotVelocity`), copying it; null when absent. Throws like `readMoments`. */
export function readVelocity(rule: string, state: OptimizerState, length: number | null): Float32Array | null {
  assertKeys(rule, state, ['velocity']);
  return readArray(rule, state, 'velocity', length);
}

/**
 * `existing` if it is already `length` long, a zero array if it is null (the first step). Throws a
 * `BatchlabError` (`SHAPE_MISMATCH`) when a loaded state does not match the weights.
 */
export function ensureStateArray(
  rule: string,
  key: string,
  existing: Float32Array | null,
  length: number,
): Float32Array {
  if (existing === null) return new Float32Array(length);
  if (existing.length !== length) {
    throw stateError(
      rule,
      `"${key}" holds ${existing.length} values but the weights have ${length}; load a state saved for this model`,
    );
  }
  return existing;
}

function assertKeys(rule: string, state: OptimizerState, allowed: readonly string[]): void {
  const unknown = Object.keys(state).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw stateError(
      rule,
      `unexpected keys ${unknown.map((k) => `"${k}"`).join(', ')}; ${rule} state has only ${allowed.map((k) => `"${k}"`).join(', ')} (was it saved by another optimizer?)`,
    );
  }
}

function readArray(rule: string, state: OptimizerState, key: string, length: number | null): Float32Array | null {
  const value = state[key];
  if (value === undefined) return null;
  if (!(value instanceof Float32Array))
    throw stateError(rule, `"${key}" must be a Float32Array, got ${describe(value)}`);
  if (length !== null && value.length !== length) {
    throw stateError(
      rule,
      `"${key}" holds ${value.length} values, expected ${length}; load a state saved for this model`,
    );
  }
  return value.slice();
}

function describe(value: unknown): string {
  return value === undefined
    ? 'nothing'
    : typeof value === 'number'
      ? String(value)
      : (value?.constructor?.name ?? typeof value);
}

function stateError(rule: string, detail: string): BatchlabError {
  return new BatchlabError('SHAPE_MISMATCH', `${rule} optimizer state: ${detail}`);
}
