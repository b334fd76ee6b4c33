// The conformance suite every Reducer runs (hono's router suite is the model): a step's result
// must not depend on arrival order or on who computed what, must equal one process applying the
// same update, must settle only when every micro-batch is in, and must ignore an abandoned step.
// A reducer's test file calls `describeReducerConformance` with a factory in a few lines.

import { describe, expect, it } from 'vitest';
import type { Reducer } from '../../coordinator/reducer.js';
import { cutMicroBatches } from '../../shared/micro-batches.js';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG, type OptimizerName } from '../../shared/optimizers/index.js';
import type { MicroBatchSpec, ParamSpec } from '../../shared/protocol.js';
import { bytesOf } from '../support/tensors.js';
import { fakeGradient } from '../support/in-memory-channel.js';

/** Two layers, so per-layer rules (LAMB's trust ratio) see more than one tensor. */
export const CONFORMANCE_PARAMS: ParamSpec[] = [
  { name: 'dense/kernel', shape: [4, 3] },
  { name: 'dense/bias', shape: [3] },
];
const P = 15;
const LR = 0.01;

/** Makes a fresh reducer over `weights` (updated by the reducer) with optimizer `optimizer`. */
export type ReducerFactory = (weights: Float32Array, optimizer: OptimizerName, params: ParamSpec[]) => Reducer;

function initialWeights(): Float32Array {
  return Float32Array.from({ length: P }, (_, i) => Math.cos(i) * 0.3);
}

/** One process, written out: float64 sums left to right in id order, × 1/samples, rounded to float32. */
function referenceMean(step: number, specs: readonly MicroBatchSpec[]): { mean: Float32Array; sqNorm: number } {
  const grads = specs.map((spec) => fakeGradient(step, spec, P));
  const inverse = 1 / specs.reduce((n, s) => n + s.end - s.start, 0);
  const mean = new Float32Array(P);
  let sqNorm = 0;
  for (let i = 0; i < P; i++) {
    let sum = 0;
    for (const g of grads) sum += g[i]!;
    mean[i] = Math.fround(sum * inverse);
    sqNorm += mean[i]! * mean[i]!;
  }
  return { mean, sqNorm };
}

/** One process's weights after `steps` steps of `optimizer` on the reference means. */
function referenceWeights(optimizer: OptimizerName, steps: number, specs: readonly MicroBatchSpec[]): Buffer {
  const weights = initialWeights();
  const rule = createOptimizer(optimizer, DEFAULT_OPTIMIZER_CONFIG, CONFORMANCE_PARAMS);
  for (let step = 0; step < steps; step++) rule.apply(weights, referenceMean(step, specs).mean, LR);
  return Buffer.from(bytesOf(weights));
}

/** A fixed shuffle of `items` for `seed` (arrival orders that differ between steps). */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = (seed * 7919 + i * 104729) % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export function describeReducerConformance(name: string, createReducer: ReducerFactory): void {
  describe(`${name} reducer conformance`, () => {
    // 21 samples in micro-batches of 4: ids 0..5, the last one short.
    const specs = cutMicroBatches(21, 4);

    it.each(['sgd', 'adam', 'lamb'] as const)(
      "gives one process's weights byte for byte over 3 steps with replies in any order (%s)",
      async (optimizer) => {
        const weights = initialWeights();
        const reducer = createReducer(weights, optimizer, CONFORMANCE_PARAMS);
        for (let step = 0; step < 3; step++) {
          const reduction = await reducer.beginStep({ step, microBatches: specs, lr: LR, workers: [1] });
          for (const spec of shuffled(specs, step + 1)) {
            const body = fakeGradient(step, spec, P);
            expect(reduction.check(body)).toBeNull();
            reduction.add(spec.id, spec.end - spec.start, body);
          }
          const result = await reduction.result;
          expect(result.samples).toBe(21);
        }
        expect(bytesOf(await reducer.weights()).equals(referenceWeights(optimizer, 3, specs))).toBe(true);
      },
    );

    it('sums in micro-batch-id order: cancelling micro-batches keep what only id order keeps', async () => {
      // Three micro-batches of 4: ids 0 and 1 cancel exactly at every other parameter, id 2 is small there.
      const three = cutMicroBatches(12, 4);
      const bodies = [0, 1, 2].map((k) =>
        Float32Array.from({ length: P }, (_, i) => (i % 2 === 0 ? [3e18, -3e18, 0.75][k]! : 0.01 * (k + 1))),
      );
      const reducer = createReducer(initialWeights(), 'sgd', CONFORMANCE_PARAMS);
      const reduction = await reducer.beginStep({ step: 0, microBatches: three, lr: LR, workers: [1] });
      for (const k of [2, 1, 0]) reduction.add(k, 4, bodies[k]!);
      const mean = Float32Array.from({ length: P }, (_, i) =>
        Math.fround((bodies[0]![i]! + bodies[1]![i]! + bodies[2]![i]!) * (1 / 12)),
      );
      expect(mean[0]).toBe(Math.fround(0.75 / 12));
      const expected = initialWeights();
      createOptimizer('sgd', DEFAULT_OPTIMIZER_CONFIG, CONFORMANCE_PARAMS).apply(expected, mean, LR);
      await reduction.result;
      expect(bytesOf(await reducer.weights()).equals(bytesOf(expected))).toBe(true);
    });

    it('settles the result only once every micro-batch is in', async () => {
      const reducer = createReducer(initialWeights(), 'adam', CONFORMANCE_PARAMS);
      const reduction = await reducer.beginStep({ step: 0, microBatches: specs, lr: LR, workers: [1] });
      let settled = false;
      void reduction.result.then(() => (settled = true));
      for (const spec of specs.slice(1)) reduction.add(spec.id, spec.end - spec.start, fakeGradient(0, spec, P));
      await new Promise((resolve) => setImmediate(resolve));
      expect(settled).toBe(false);
      reduction.add(0, 4, fakeGradient(0, specs[0]!, P));
      await reduction.result;
      expect(settled).toBe(true);
    });

    it('reports the squared norm of the mean gradient it applied', async () => {
      const reducer = createReducer(initialWeights(), 'sgd', CONFORMANCE_PARAMS);
      const reduction = await reducer.beginStep({ step: 0, microBatches: specs, lr: LR, workers: [1] });
      for (const spec of specs) reduction.add(spec.id, spec.end - spec.start, fakeGradient(0, spec, P));
      expect((await reduction.result).sqNorm).toBe(referenceMean(0, specs).sqNorm);
    });

    it('ignores what reaches an abandoned step once the next step has begun', async () => {
      const weights = initialWeights();
      const reducer = createReducer(weights, 'adam', CONFORMANCE_PARAMS);
      const abandoned = await reducer.beginStep({ step: 0, microBatches: specs, lr: LR, workers: [1] });
      abandoned.add(
        3,
        4,
        fakeGradient(0, specs[3]!, P).map(() => 1e6),
      );
      const reduction = await reducer.beginStep({ step: 0, microBatches: specs, lr: LR, workers: [1] });
      for (const spec of specs) {
        reduction.add(spec.id, spec.end - spec.start, fakeGradient(0, spec, P));
        abandoned.add(
          spec.id,
          spec.end - spec.start,
          fakeGradient(0, spec, P).map(() => 1e6),
        );
      }
      await reduction.result;
      expect(bytesOf(await reducer.weights()).equals(referenceWeights('adam', 1, specs))).toBe(true);
    });

    it('refuses a body of the wrong length as bad_shape and one with NaN or Inf as non_finite', async () => {
      const reduction = await createReducer(initialWeights(), 'sgd', CONFORMANCE_PARAMS).beginStep({
        step: 0,
        microBatches: specs,
        lr: LR,
        workers: [1],
      });
      expect(reduction.check(new Float32Array(P - 1))).toBe('bad_shape');
      expect(reduction.check(new Float32Array(P).fill(Number.NaN))).toBe('non_finite');
      expect(reduction.check(new Float32Array(P).fill(Number.POSITIVE_INFINITY))).toBe('non_finite');
    });

    it("gives a worker without this step's weights a payload that brings it up to date, and one that has them none", async () => {
      const weights = initialWeights();
      const reduction = await createReducer(weights, 'sgd', CONFORMANCE_PARAMS).beginStep({
        step: 4,
        microBatches: specs,
        lr: LR,
        workers: [1],
      });
      expect(reduction.payloadFor(4).weights).toBeNull();
      for (const stale of [-1, 3])
        expect(Array.from(reduction.payloadFor(stale).weights ?? [])).toEqual(Array.from(weights));
    });

    it('hands out the optimizer state a checkpoint needs, as a copy', async () => {
      const reducer = createReducer(initialWeights(), 'adam', CONFORMANCE_PARAMS);
      const reduction = await reducer.beginStep({ step: 0, microBatches: specs, lr: LR, workers: [1] });
      for (const spec of specs) reduction.add(spec.id, spec.end - spec.start, fakeGradient(0, spec, P));
      await reduction.result;
      const state = await reducer.optimizerState();
      const asTaken = JSON.stringify(state);
      const again = await reducer.beginStep({ step: 1, microBatches: specs, lr: LR, workers: [1] });
      for (const spec of specs) again.add(spec.id, spec.end - spec.start, fakeGradient(1, spec, P));
      await again.result;
      // The snapshot, moment arrays included, is what it was when taken; the reducer's state moved on.
      expect(JSON.stringify(state)).toBe(asTaken);
      expect(JSON.stringify(await reducer.optimizerState())).not.toBe(asTaken);
    });
  });
}
