// GatherRound: ownership of one step's micro-batches and the checks every reply passes.

import { describe, expect, it } from 'vitest';
import { fakeReply } from '../support/in-memory-channel.js';
import { bytesOf, mixedMagnitudes } from '../support/tensors.js';
import { GatherRound } from '../../coordinator/gather-round.js';
import type { StepReduction, StepResult, WorkPayload } from '../../coordinator/reducer.js';
import { StarReducer } from '../../coordinator/star-reducer.js';
import { allFinite } from '../../shared/finite.js';
import { cutMicroBatches } from '../../shared/micro-batches.js';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG } from '../../shared/optimizers/index.js';

/** A step reduction that records what reaches it (checking bodies as the star does), to see which replies get reduced. */
class RecordingReduction implements StepReduction {
  added: { id: number; gradSum: Float32Array | null; samples: number }[] = [];
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
  check(body: Float32Array | null): 'bad_shape' | 'non_finite' | null {
    if (!body || body.length !== PARAMS) return 'bad_shape';
    return allFinite(body) ? null : 'non_finite';
  }
  add(id: number, samples: number, gradSum: Float32Array | null): void {
    this.added.push({ id, gradSum, samples });
  }
}

const PARAMS = 3;

const grad = (...v: number[]): Float32Array => (v.length ? Float32Array.from(v) : new Float32Array(PARAMS).fill(1));

/** Lets pending promise callbacks run; no clock involved. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(step = 5) {
  // 10 samples in micro-batches of 4: ids 0 [0,4), 1 [4,8), 2 [8,10).
  const specs = cutMicroBatches(10, 4);
  const reducer = new RecordingReduction(step);
  const round = new GatherRound(specs, reducer);
  round.assign(1, [specs[0]!, specs[1]!]);
  round.assign(2, [specs[2]!]);
  return { specs, reducer, round };
}

describe('GatherRound', () => {
  it('gathers the step of its reduction', () => {
    const { round } = setup(9);
    expect(round.step).toBe(9);
  });

  it('accepts a reply from the owning worker and passes it to the reducer', () => {
    const { specs, reducer, round } = setup();
    const g = grad();
    expect(round.accept(1, fakeReply(5, specs[1]!), g)).toBeNull();
    expect(reducer.added).toEqual([{ id: 1, gradSum: g, samples: 4 }]);
  });

  it('drops gradients from a previous step as stale_step', () => {
    const { specs, reducer, round } = setup(5);
    expect(round.accept(1, fakeReply(4, specs[0]!), grad())).toBe('stale_step');
    expect(round.accept(1, fakeReply(6, specs[0]!), grad())).toBe('stale_step');
    expect(reducer.added).toEqual([]);
  });

  it('refuses a micro-batch owned by another worker as unassigned', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(2, fakeReply(5, specs[0]!), grad())).toBe('unassigned');
    expect(round.accept(1, fakeReply(5, specs[2]!), grad())).toBe('unassigned');
    expect(reducer.added).toEqual([]);
  });

  it('refuses a micro-batch id the step does not have as unassigned', () => {
    const { round } = setup();
    expect(round.accept(1, fakeReply(5, { id: 7, start: 0, end: 4 }), grad())).toBe('unassigned');
  });

  it('refuses a reply whose sample count does not match its micro-batch as unassigned', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, fakeReply(5, specs[0]!, { samples: 3 }), grad())).toBe('unassigned');
    expect(round.accept(2, fakeReply(5, specs[2]!, { samples: 4 }), grad())).toBe('unassigned');
    expect(reducer.added).toEqual([]);
  });

  it('refuses a repeated reply as duplicate and reduces it once', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, fakeReply(5, specs[0]!), grad())).toBeNull();
    expect(round.accept(1, fakeReply(5, specs[0]!), grad())).toBe('duplicate');
    expect(reducer.added.map((a) => a.id)).toEqual([0]);
  });

  it.each([
    ['NaN', Number.NaN],
    ['+Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
  ])('refuses a gradient containing %s as non_finite and does not reduce it', (_name, bad) => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, fakeReply(5, specs[0]!), grad(0.5, bad, 2))).toBe('non_finite');
    expect(reducer.added).toEqual([]);
    // The micro-batch is still outstanding: a finite retry from its owner is accepted.
    expect(round.accept(1, fakeReply(5, specs[0]!), grad())).toBeNull();
    expect(reducer.added.map((a) => a.id)).toEqual([0]);
  });

  it.each([
    ['a NaN lossSum', { lossSum: Number.NaN }],
    ['an infinite sqNorm', { sqNorm: Number.POSITIVE_INFINITY }],
  ])('refuses a reply with %s as non_finite and does not reduce it', (_name, patch) => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, { ...fakeReply(5, specs[0]!), ...patch }, grad())).toBe('non_finite');
    expect(reducer.added).toEqual([]);
  });

  it('resolves done only once every micro-batch is in', async () => {
    const { specs, round } = setup();
    let finished = false;
    void round.done.then(() => (finished = true));
    round.accept(2, fakeReply(5, specs[2]!), grad());
    round.accept(1, fakeReply(5, specs[0]!), grad());
    round.accept(1, fakeReply(5, specs[0]!), grad()); // duplicate: does not count
    await settle();
    expect(finished).toBe(false);
    round.accept(1, fakeReply(5, specs[1]!), grad());
    await settle();
    expect(finished).toBe(true);
  });

  it("returns a lost worker's outstanding micro-batches sorted by id", () => {
    const specs = cutMicroBatches(20, 4); // ids 0..4
    const round = new GatherRound(specs, new RecordingReduction(0));
    round.assign(7, [specs[4]!, specs[1]!, specs[3]!]);
    round.assign(8, [specs[0]!, specs[2]!]);
    expect(round.accept(7, fakeReply(0, specs[3]!), grad())).toBeNull();
    expect(round.orphan(7)).toEqual([specs[1], specs[4]]);
    expect(round.orphan(7)).toEqual([]);
    expect(round.orphan(99)).toEqual([]);
  });

  it("accepts the new owner's reply after re-assignment and refuses the lost worker's late one", async () => {
    const { specs, reducer, round } = setup();
    round.accept(2, fakeReply(5, specs[2]!), grad());
    const orphans = round.orphan(1);
    expect(orphans.map((s) => s.id)).toEqual([0, 1]);
    round.assign(2, orphans);
    expect(round.accept(1, fakeReply(5, specs[0]!), grad())).toBe('unassigned');
    expect(round.accept(2, fakeReply(5, specs[0]!), grad())).toBeNull();
    expect(round.accept(2, fakeReply(5, specs[1]!), grad())).toBeNull();
    await round.done;
    expect(reducer.added.map((a) => a.id)).toEqual([2, 0, 1]);
  });

  it('reduces through a StarReducer to the same weights whichever worker computed each micro-batch', async () => {
    const specs = cutMicroBatches(10, 4);
    const grads = specs.map((s) => mixedMagnitudes(PARAMS, 300 + s.id));
    const meanWith = async (owners: number[], order: number[]): Promise<Buffer> => {
      const weights = new Float32Array(PARAMS);
      // Plain SGD at lr 1 from zero: the new weights are minus the mean gradient.
      const sgd = createOptimizer('sgd', { ...DEFAULT_OPTIMIZER_CONFIG, momentum: 0 }, [
        { name: 'w', shape: [PARAMS] },
      ]);
      const reduction = new StarReducer(weights, sgd).startStep({ step: 0, microBatches: specs, lr: 1 });
      const round = new GatherRound(specs, reduction);
      specs.forEach((s, i) => round.assign(owners[i]!, [s]));
      for (const id of order) expect(round.accept(owners[id]!, fakeReply(0, specs[id]!), grads[id]!)).toBeNull();
      await Promise.all([round.done, reduction.result]);
      return Buffer.from(bytesOf(weights));
    };
    const one = await meanWith([1, 1, 1], [0, 1, 2]);
    const three = await meanWith([1, 2, 3], [2, 0, 1]);
    expect(Buffer.compare(one, three)).toBe(0);
  });

  it('sums samples, loss and correct counts over replies in micro-batch id order', async () => {
    const specs = cutMicroBatches(16, 4); // ids 0..3
    const round = new GatherRound(specs, new RecordingReduction(3));
    round.assign(1, [specs[0]!, specs[1]!]);
    round.assign(2, [specs[2]!, specs[3]!]);
    // Loss sums chosen so float64 addition order matters: in id order ((1e16 + 1) - 1e16) + 1 = 1.
    const lossSums = [1e16, 1, -1e16, 1];
    const correct = [4, 3, 2, 1];
    const sqNorms = [0.1, 0.2, 0.3, 0.4];
    const owner = [1, 1, 2, 2];
    for (const id of [2, 3, 1, 0]) {
      round.accept(
        owner[id]!,
        fakeReply(3, specs[id]!, {
          lossSum: lossSums[id],
          correct: correct[id],
          sqNorm: sqNorms[id],
          computeMs: 10 * (id + 1),
        }),
        grad(),
      );
    }
    await round.done;
    const stats = round.stats();
    expect(stats.samples).toBe(16);
    expect(stats.lossSum).toBe(1e16 + 1 - 1e16 + 1);
    // Summing in arrival order (2, 3, 1, 0) gives ((-1e16 + 1) + 1) + 1e16 = 0 instead.
    expect(stats.lossSum).not.toBe([2, 3, 1, 0].reduce((s, id) => s + lossSums[id]!, 0));
    expect(stats.correct).toBe(10);
    expect(stats.sqNorms).toEqual([
      { samples: 4, sqNorm: 0.1 },
      { samples: 4, sqNorm: 0.2 },
      { samples: 4, sqNorm: 0.3 },
      { samples: 4, sqNorm: 0.4 },
    ]);
    expect(stats.computeMsByWorker).toEqual(
      new Map([
        [1, 30],
        [2, 70],
      ]),
    );
  });
});

describe('GatherRound re-issue support', () => {
  it('refuses a gradient of the wrong length as bad_shape and does not reduce it', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, fakeReply(5, specs[0]!), new Float32Array(PARAMS + 1))).toBe('bad_shape');
    expect(reducer.added).toEqual([]);
  });

  it('releases one outstanding micro-batch from its owner, whose late reply is then unassigned', () => {
    const { specs, round } = setup();
    expect(round.outstandingOwners().sort()).toEqual([1, 2]);
    expect(round.release(specs[0]!.id)).toEqual([specs[0]]);
    expect(round.release(specs[0]!.id)).toEqual([]);
    expect(round.accept(1, fakeReply(5, specs[0]!), grad())).toBe('unassigned');
    round.assign(2, [specs[0]!]);
    expect(round.accept(2, fakeReply(5, specs[0]!), grad())).toBeNull();
  });
});
