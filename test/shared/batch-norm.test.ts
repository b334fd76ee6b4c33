// The coordinator's moving statistics: tfjs-layers' own update formula, bit for bit, and the
// step's micro-batches folded in micro-batch-id order whatever order their replies arrive in.

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, it } from 'vitest';
import { GatherRound } from '../../coordinator/gather-round.js';
import type { StepReduction, StepResult, WorkPayload } from '../../coordinator/reducer.js';
import { batchNormLayersOf, MovingStatistics, writeMovingStatistics } from '../../shared/batch-norm.js';
import { createRandom } from '../../shared/data/seeded-random.js';
import { cutMicroBatches } from '../../shared/micro-batches.js';
import { fakeReply } from '../support/in-memory-channel.js';
import { bitDifference } from '../support/tensors.js';

beforeAll(() => tf.setBackend('cpu'));

/** A model of two batch-norm layers (4 and 3 channels) with different momenta. */
function twoNorms(): tfl.LayersModel {
  const input = tfl.input({ shape: [2, 2, 4] });
  let x = tfl.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 }).apply(input) as tfl.SymbolicTensor;
  x = tfl.layers.conv2d({ filters: 3, kernelSize: 1, useBias: false }).apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.batchNormalization({ momentum: 0.7, epsilon: 1e-5 }).apply(x) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: x });
}

function randoms(n: number, seed: number, scale = 1, shift = 0): Float32Array {
  const random = createRandom(seed);
  return Float32Array.from({ length: n }, () => shift + scale * random.next());
}

/** Minimal step reduction: every body is fine; bodies are not needed here. */
class NullReduction implements StepReduction {
  readonly result = new Promise<StepResult>(() => {});
  constructor(readonly step: number) {}
  payloadFor(): WorkPayload {
    return { weights: null };
  }
  canCompute(): boolean {
    return true;
  }
  abandon(): void {}
  retract(): void {}
  restart(): void {}
  workerLost(): boolean {
    return false;
  }
  check(): null {
    return null;
  }
  add(): void {}
}

describe('MovingStatistics', () => {
  it("updates as tfjs-layers' BatchNormalization does in training mode, bit for bit", () => {
    const model = twoNorms();
    const layers = batchNormLayersOf(model);
    expect(layers.map((l) => [l.channels, l.momentum])).toEqual([
      [4, 0.9],
      [3, 0.7],
    ]);
    const start = randoms(14, 1, 2, 0.5);
    writeMovingStatistics(layers, start);
    const moving = new MovingStatistics(layers);
    expect(bitDifference(start, moving.values)).toBeNull();
    // Three training passes of tfjs over batches, each followed by the same update here from the
    // batch statistics the layers normalized with (tf.moments of their inputs).
    const probe = tfl.model({ inputs: model.inputs, outputs: layers.map((l) => l.layer.input as tfl.SymbolicTensor) });
    for (let pass = 0; pass < 3; pass++) {
      const x = tf.tensor4d(randoms(5 * 16, 10 + pass, 3, -1), [5, 2, 2, 4]);
      // The probe's pass is a training pass too: restore the statistics before tfjs's own.
      const before = moving.values.slice();
      const stats = tf.tidy(() => {
        const inputs = probe.apply(x, { training: true }) as tf.Tensor[];
        return tf.concat(inputs.flatMap((t) => Object.values(tf.moments(t, [0, 1, 2])))).dataSync() as Float32Array;
      });
      writeMovingStatistics(layers, before);
      tf.tidy(() => void model.apply(x, { training: true }));
      moving.update([stats]);
      x.dispose();
      const theirs = new MovingStatistics(layers).values;
      expect(bitDifference(theirs, moving.values), `pass ${pass}`).toBeNull();
    }
    model.dispose();
  });

  it("folds a step's micro-batches in id order, whatever order the replies arrive in", () => {
    const model = twoNorms();
    const layers = batchNormLayersOf(model);
    const specs = cutMicroBatches(40, 8); // ids 0..4
    const stats = specs.map((s) => randoms(14, 20 + s.id, 4, -2));
    const arrivals = [
      [0, 1, 2, 3, 4],
      [4, 2, 0, 3, 1],
      [3, 4, 1, 0, 2],
    ];
    const results = arrivals.map((order) => {
      const round = new GatherRound(specs, new NullReduction(0), 14);
      order.forEach((id, worker) => round.assign(worker, [specs[id]!]));
      for (const [worker, id] of order.entries())
        expect(round.accept(worker, fakeReply(0, specs[id]!, { batchStats: stats[id]! }), null)).toBeNull();
      const moving = new MovingStatistics(layers);
      moving.update(round.batchStats());
      return moving.values;
    });
    expect(bitDifference(results[0]!, results[1]!)).toBeNull();
    expect(bitDifference(results[0]!, results[2]!)).toBeNull();
    // The order does matter: folded in arrival order the statistics would differ.
    const arrivalOrder = new MovingStatistics(layers);
    arrivalOrder.update(arrivals[1]!.map((id) => stats[id]!));
    expect(bitDifference(results[0]!, arrivalOrder.values)).not.toBeNull();
    model.dispose();
  });

  it('refuses replies whose batch statistics are missing, of the wrong length or not finite', () => {
    const specs = cutMicroBatches(16, 8);
    const round = new GatherRound(specs, new NullReduction(0), 14);
    round.assign(1, specs);
    expect(round.accept(1, fakeReply(0, specs[0]!), null)).toBe('bad_shape');
    expect(round.accept(1, fakeReply(0, specs[0]!, { batchStats: new Float32Array(13) }), null)).toBe('bad_shape');
    const nan = new Float32Array(14).fill(NaN);
    expect(round.accept(1, fakeReply(0, specs[0]!, { batchStats: nan }), null)).toBe('non_finite');
    expect(round.accept(1, fakeReply(0, specs[0]!, { batchStats: new Float32Array(14) }), null)).toBeNull();
    // A model without batch norm takes none.
    const plain = new GatherRound(specs, new NullReduction(0));
    plain.assign(1, specs);
    expect(plain.accept(1, fakeReply(0, specs[1]!, { batchStats: new Float32Array(14) }), null)).toBe('bad_shape');
    expect(plain.accept(1, fakeReply(0, specs[1]!), null)).toBeNull();
    expect(plain.batchStats()).toEqual([]);
  });
});
