// The flat parameter vector: trainable tensors in model order, concatenated. The coordinator's
// optimizer, the wire and the workers all use this one layout.

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ParamSpec } from './protocol.js';

/** Name and shape of each trainable tensor of `model`, in the order of the flat vector. */
export function paramSpecsOf(model: tfl.LayersModel): ParamSpec[] {
  return model.trainableWeights.map((w) => ({ name: w.originalName, shape: [...w.shape] as number[] }));
}

/** Number of elements of one tensor. */
export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Total number of parameters. */
export function countParams(specs: readonly ParamSpec[]): number {
  return specs.reduce((n, s) => n + sizeOf(s.shape), 0);
}

/**
 * Checks that `model`'s trainable tensors have exactly the names and shapes of `specs`.
 * Throws an Error saying which tensor differs.
 */
export function assertLayout(model: tfl.LayersModel, specs: readonly ParamSpec[]): void {
  const mine = paramSpecsOf(model);
  if (mine.length !== specs.length)
    throw new Error(`model has ${mine.length} trainable tensors, expected ${specs.length}`);
  mine.forEach((p, i) => {
    const want = specs[i]!;
    if (p.name !== want.name || p.shape.join('x') !== want.shape.join('x')) {
      throw new Error(
        `trainable tensor ${i}: model has ${p.name} [${p.shape.join(', ')}], expected ${want.name} [${want.shape.join(', ')}]`,
      );
    }
  });
}

/** Copies the flat vector into the model's variables (reverse of `readWeights`). */
export function writeWeights(model: tfl.LayersModel, flat: Float32Array): void {
  let offset = 0;
  for (const w of model.trainableWeights) {
    const n = sizeOf(w.shape as number[]);
    tf.tidy(() => {
      w.write(tf.tensor(flat.subarray(offset, offset + n), w.shape as number[], 'float32'));
    });
    offset += n;
  }
  if (offset !== flat.length) throw new Error(`weights vector has ${flat.length} values, the model needs ${offset}`);
}

/** The model's trainable weights as one flat vector (reverse of `writeWeights`). */
export function readWeights(model: tfl.LayersModel): Float32Array {
  const parts = model.trainableWeights.map((w) => w.read().dataSync() as Float32Array);
  const flat = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    flat.set(p, offset);
    offset += p.length;
  }
  return flat;
}
