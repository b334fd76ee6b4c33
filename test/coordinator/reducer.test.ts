import { describe, expect, it } from 'vitest';
import { allFinite, GatherRound } from '../../coordinator/gather-round.js';
import { StarReducer, type Reducer } from '../../coordinator/reducer.js';
import { createRandom } from '../../shared/data/seeded-random.js';
import { cutMicroBatches } from '../../shared/micro-batches.js';
import type { GradientMessage, MicroBatchSpec } from '../../shared/protocol.js';

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Float32 values of both signs spread over magnitudes 1e-20..1e20, so summation order changes results. */
function mixedMagnitudes(n: number, seed: number): Float32Array {
  const random = createRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const sign = random.next() < 0.5 ? -1 : 1;
    out[i] = sign * (1 + random.next()) * 10 ** Math.floor(random.next() * 41 - 20);
  }
  return out;
}

function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((x, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [x, ...rest]));
}

describe('StarReducer', () => {
  it('returns the sum of gradient sums divided by the total sample count', () => {
    const reducer = new StarReducer(3);
    reducer.begin([0, 1]);
    reducer.add(0, new Float32Array([1, 2, -3]), 2);
    reducer.add(1, new Float32Array([3, 4, 1]), 2);
    const { meanGrad, samples } = reducer.finish();
    // (1+3)/4, (2+4)/4, (-3+1)/4
    expect(Array.from(meanGrad)).toEqual([1, 1.5, -0.5]);
    expect(samples).toBe(4);
  });

  it('returns the squared norm of the float32 mean it returns', () => {
    const reducer = new StarReducer(5);
    reducer.begin([0, 1, 2]);
    reducer.add(2, new Float32Array([0.1, -7, 3e-3, 1e4, 0]), 1);
    reducer.add(0, new Float32Array([0.3, 2, 1, -3, 5]), 2);
    reducer.add(1, new Float32Array([1 / 3, 0.5, -1, 2, 1e-8]), 3);
    const { meanGrad, sqNorm } = reducer.finish();
    let expected = 0;
    for (const m of meanGrad) expected += m * m;
    expect(sqNorm).toBe(expected);
  });

  it('handles a step of one micro-batch (no accumulation pass)', () => {
    const reducer = new StarReducer(3);
    reducer.begin([4]);
    reducer.add(4, new Float32Array([3, -6, 1]), 3);
    const { meanGrad, samples, sqNorm } = reducer.finish();
    expect(Array.from(meanGrad)).toEqual([1, -2, Math.fround(1 / 3)]);
    expect(samples).toBe(3);
    expect(sqNorm).toBeCloseTo(5 + 1 / 9, 6);
  });

  it('starts every step afresh: nothing of the previous step leaks into the next', () => {
    const reused = new StarReducer(4);
    reused.begin([0, 1, 2]);
    reused.add(0, new Float32Array([1e6, 1e6, 1e6, 1e6]), 1);
    reused.add(1, new Float32Array([5, 5, 5, 5]), 1);
    reused.add(2, new Float32Array([7, 7, 7, 7]), 1);
    reused.finish();
    const grads = [new Float32Array([0.1, 0.2, 0.3, 0.4]), new Float32Array([-1, 2, -3, 4])];
    reused.begin([0, 1]);
    grads.forEach((g, id) => reused.add(id, g, 2));
    const fresh = new StarReducer(4);
    fresh.begin([0, 1]);
    grads.forEach((g, id) => fresh.add(id, g, 2));
    expect(Array.from(reused.finish().meanGrad)).toEqual(Array.from(fresh.finish().meanGrad));
  });

  it('refuses to finish while a micro-batch is missing', () => {
    const reducer = new StarReducer(2);
    reducer.begin([0, 1, 2]);
    reducer.add(0, new Float32Array(2), 1);
    reducer.add(2, new Float32Array(2), 1);
    expect(() => reducer.finish()).toThrow(/micro-batch 1 missing/);
  });

  it('weights micro-batches by sample count, not by micro-batch', () => {
    const reducer = new StarReducer(1);
    reducer.begin([0, 1]);
    // Gradient sums of a 3-sample and a 1-sample micro-batch: mean over 4 samples = (6+2)/4 = 2.
    reducer.add(1, new Float32Array([2]), 1);
    reducer.add(0, new Float32Array([6]), 3);
    expect(Array.from(reducer.finish().meanGrad)).toEqual([2]);
  });

  it('gives bit-identical means for every arrival order of 4 micro-batches', () => {
    const n = 257;
    const grads = [0, 1, 2, 3].map((id) => mixedMagnitudes(n, 1000 + id));
    // Every fourth parameter: micro-batches 0 and 1 cancel exactly at a magnitude that swallows the others.
    for (let i = 0; i < n; i += 4) {
      grads[0]![i] = Math.fround(3e18 * (1 + (i % 7)));
      grads[1]![i] = -grads[0]![i]!;
    }
    const samples = [4, 4, 4, 3];

    const reference = new StarReducer(n);
    reference.begin([0, 1, 2, 3]);
    grads.forEach((g, id) => reference.add(id, g, samples[id]!));
    const expected = Float32Array.from(reference.finish().meanGrad);

    // The data is order-sensitive: summing naively in arrival order changes some bits.
    let naiveDiffers = false;
    for (const order of permutations([0, 1, 2, 3])) {
      const naive = new Float32Array(n);
      for (let i = 0; i < n; i++) naive[i] = order.reduce((s, id) => s + grads[id]![i]!, 0) / 15;
      if (Buffer.compare(bytesOf(naive), bytesOf(expected)) !== 0) naiveDiffers = true;
    }
    expect(naiveDiffers).toBe(true);

    const reducer = new StarReducer(n);
    for (const order of permutations([0, 1, 2, 3])) {
      reducer.begin([0, 1, 2, 3]);
      for (const id of order) reducer.add(id, grads[id]!, samples[id]!);
      const { meanGrad, samples: total } = reducer.finish();
      expect(total).toBe(15);
      expect(Buffer.compare(bytesOf(meanGrad), bytesOf(expected)), `arrival order ${order.join(',')}`).toBe(0);
    }
  });

  it('equals a left-to-right float64 sum in id order for 1, 2 and 3 micro-batches, and leaves the replies untouched', () => {
    const n = 301;
    for (const count of [1, 2, 3]) {
      const ids = Array.from({ length: count }, (_, k) => 10 + k);
      const grads = ids.map((id) => mixedMagnitudes(n, 7000 + id));
      const copies = grads.map((g) => Float32Array.from(g));
      const samples = ids.map((_, k) => 2 + k);
      const total = samples.reduce((a, b) => a + b, 0);
      const expected = new Float32Array(n);
      let expectedSq = 0;
      for (let i = 0; i < n; i++) {
        let sum = 0;
        for (const g of grads) sum += g[i]!;
        expected[i] = sum / total;
        expectedSq += expected[i]! * expected[i]!;
      }
      const reducer = new StarReducer(n);
      for (const order of permutations(ids.map((_, k) => k))) {
        reducer.begin(ids);
        for (const k of order) reducer.add(ids[k]!, grads[k]!, samples[k]!);
        const { meanGrad, sqNorm } = reducer.finish();
        expect(Buffer.compare(bytesOf(meanGrad), bytesOf(expected)), `${count} replies, order ${order.join(',')}`).toBe(0);
        expect(sqNorm).toBe(expectedSq);
      }
      grads.forEach((g, k) => expect(Buffer.compare(bytesOf(g), bytesOf(copies[k]!))).toBe(0));
    }
  });

  it('gives the same bits for the same ids whatever order begin() lists them in', () => {
    const grads = [0, 1, 2].map((id) => mixedMagnitudes(64, 50 + id));
    const run = (ids: number[]): Buffer => {
      const reducer = new StarReducer(64);
      reducer.begin(ids);
      for (const id of [2, 0, 1]) reducer.add(id, grads[id]!, 2);
      return Buffer.from(bytesOf(reducer.finish().meanGrad));
    };
    expect(Buffer.compare(run([2, 1, 0]), run([0, 1, 2]))).toBe(0);
  });

  it('refuses to finish with a micro-batch missing, naming it', () => {
    const reducer = new StarReducer(2);
    reducer.begin([0, 1, 2, 3]);
    reducer.add(0, new Float32Array(2), 1);
    reducer.add(1, new Float32Array(2), 1);
    reducer.add(3, new Float32Array(2), 1);
    expect(() => reducer.finish()).toThrow(/micro-batch 2 missing/);
  });

  it('refuses to finish when the first micro-batch is missing, naming it', () => {
    const reducer = new StarReducer(2);
    reducer.begin([0, 1]);
    reducer.add(1, new Float32Array(2), 1);
    expect(() => reducer.finish()).toThrow(/micro-batch 0 missing/);
  });

  it('refuses a gradient of the wrong length, naming the micro-batch and the expected length', () => {
    const reducer = new StarReducer(5);
    reducer.begin([0]);
    expect(() => reducer.add(0, new Float32Array(4), 1)).toThrow(/micro-batch 0: gradient has 4 values, expected 5/);
  });

  it('starts each step from zero after begin()', () => {
    const reducer = new StarReducer(2);
    reducer.begin([0, 1]);
    reducer.add(0, new Float32Array([100, 200]), 1);
    reducer.add(1, new Float32Array([300, 400]), 1);
    reducer.finish();
    reducer.begin([0]);
    reducer.add(0, new Float32Array([2, 4]), 2);
    const { meanGrad, samples } = reducer.finish();
    expect(Array.from(meanGrad)).toEqual([1, 2]);
    expect(samples).toBe(2);
  });

  it('drops gradients from an abandoned step when the next step begins', () => {
    const reducer = new StarReducer(1);
    reducer.begin([0, 1]);
    // Micro-batch 1 of the old step arrives early and waits for 0, which never comes.
    reducer.add(1, new Float32Array([1000]), 1);
    reducer.begin([0, 1]);
    reducer.add(0, new Float32Array([4]), 2);
    expect(() => reducer.finish()).toThrow(/micro-batch 1 missing/);
    reducer.add(1, new Float32Array([2]), 2);
    expect(Array.from(reducer.finish().meanGrad)).toEqual([1.5]);
  });
});

/** A reducer that records what reaches it, to see which replies get reduced. */
class RecordingReducer implements Reducer {
  readonly paramCount = PARAMS;
  ids: number[] = [];
  added: { id: number; gradSum: Float32Array; samples: number }[] = [];
  begin(ids: readonly number[]): void {
    this.ids = [...ids];
    this.added = [];
  }
  add(id: number, gradSum: Float32Array, samples: number): void {
    this.added.push({ id, gradSum, samples });
  }
  finish(): { meanGrad: Float32Array; samples: number; sqNorm: number } {
    throw new Error('not used');
  }
}

const PARAMS = 3;

function reply(step: number, spec: MicroBatchSpec, extra: Partial<GradientMessage> = {}): GradientMessage {
  const samples = spec.end - spec.start;
  return { type: 'gradient', step, microBatchId: spec.id, samples, lossSum: 0.5 * samples, correct: samples - 1, computeMs: 10, sqNorm: 1, ...extra };
}

const grad = (...v: number[]): Float32Array => (v.length ? Float32Array.from(v) : new Float32Array(PARAMS).fill(1));

/** Lets pending promise callbacks run; no clock involved. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(step = 5) {
  // 10 samples in micro-batches of 4: ids 0 [0,4), 1 [4,8), 2 [8,10).
  const specs = cutMicroBatches(10, 4);
  const reducer = new RecordingReducer();
  const round = new GatherRound(step, specs, reducer);
  round.assign(1, [specs[0]!, specs[1]!]);
  round.assign(2, [specs[2]!]);
  return { specs, reducer, round };
}

describe('GatherRound', () => {
  it('begins the reducer with every micro-batch id of the step', () => {
    const { reducer } = setup();
    expect(reducer.ids).toEqual([0, 1, 2]);
  });

  it('accepts a reply from the owning worker and passes it to the reducer', () => {
    const { specs, reducer, round } = setup();
    const g = grad();
    expect(round.accept(1, reply(5, specs[1]!), g)).toBeNull();
    expect(reducer.added).toEqual([{ id: 1, gradSum: g, samples: 4 }]);
  });

  it('drops gradients from a previous step as stale_step', () => {
    const { specs, reducer, round } = setup(5);
    expect(round.accept(1, reply(4, specs[0]!), grad())).toBe('stale_step');
    expect(round.accept(1, reply(6, specs[0]!), grad())).toBe('stale_step');
    expect(reducer.added).toEqual([]);
  });

  it('refuses a micro-batch owned by another worker as unassigned', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(2, reply(5, specs[0]!), grad())).toBe('unassigned');
    expect(round.accept(1, reply(5, specs[2]!), grad())).toBe('unassigned');
    expect(reducer.added).toEqual([]);
  });

  it('refuses a micro-batch id the step does not have as unassigned', () => {
    const { round } = setup();
    expect(round.accept(1, reply(5, { id: 7, start: 0, end: 4 }), grad())).toBe('unassigned');
  });

  it('refuses a reply whose sample count does not match its micro-batch as unassigned', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, reply(5, specs[0]!, { samples: 3 }), grad())).toBe('unassigned');
    expect(round.accept(2, reply(5, specs[2]!, { samples: 4 }), grad())).toBe('unassigned');
    expect(reducer.added).toEqual([]);
  });

  it('refuses a repeated reply as duplicate and reduces it once', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, reply(5, specs[0]!), grad())).toBeNull();
    expect(round.accept(1, reply(5, specs[0]!), grad())).toBe('duplicate');
    expect(reducer.added.map((a) => a.id)).toEqual([0]);
  });

  it.each([
    ['NaN', Number.NaN],
    ['+Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
  ])('refuses a gradient containing %s as non_finite and does not reduce it', (_name, bad) => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, reply(5, specs[0]!), grad(0.5, bad, 2))).toBe('non_finite');
    expect(reducer.added).toEqual([]);
    // The micro-batch is still outstanding: a finite retry from its owner is accepted.
    expect(round.accept(1, reply(5, specs[0]!), grad())).toBeNull();
    expect(reducer.added.map((a) => a.id)).toEqual([0]);
  });

  it.each([
    ['a NaN lossSum', { lossSum: Number.NaN }],
    ['an infinite sqNorm', { sqNorm: Number.POSITIVE_INFINITY }],
  ])('refuses a reply with %s as non_finite and does not reduce it', (_name, patch) => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, { ...reply(5, specs[0]!), ...patch }, grad())).toBe('non_finite');
    expect(reducer.added).toEqual([]);
  });

  it('resolves done only once every micro-batch is in', async () => {
    const { specs, round } = setup();
    let finished = false;
    void round.done.then(() => (finished = true));
    round.accept(2, reply(5, specs[2]!), grad());
    round.accept(1, reply(5, specs[0]!), grad());
    round.accept(1, reply(5, specs[0]!), grad()); // duplicate: does not count
    await settle();
    expect(finished).toBe(false);
    round.accept(1, reply(5, specs[1]!), grad());
    await settle();
    expect(finished).toBe(true);
  });

  it('returns a lost worker\'s outstanding micro-batches sorted by id', () => {
    const specs = cutMicroBatches(20, 4); // ids 0..4
    const round = new GatherRound(0, specs, new RecordingReducer());
    round.assign(7, [specs[4]!, specs[1]!, specs[3]!]);
    round.assign(8, [specs[0]!, specs[2]!]);
    expect(round.accept(7, reply(0, specs[3]!), grad())).toBeNull();
    expect(round.orphan(7)).toEqual([specs[1], specs[4]]);
    expect(round.orphan(7)).toEqual([]);
    expect(round.orphan(99)).toEqual([]);
  });

  it('accepts the new owner\'s reply after re-assignment and refuses the lost worker\'s late one', async () => {
    const { specs, reducer, round } = setup();
    round.accept(2, reply(5, specs[2]!), grad());
    const orphans = round.orphan(1);
    expect(orphans.map((s) => s.id)).toEqual([0, 1]);
    round.assign(2, orphans);
    expect(round.accept(1, reply(5, specs[0]!), grad())).toBe('unassigned');
    expect(round.accept(2, reply(5, specs[0]!), grad())).toBeNull();
    expect(round.accept(2, reply(5, specs[1]!), grad())).toBeNull();
    await round.done;
    expect(reducer.added.map((a) => a.id)).toEqual([2, 0, 1]);
  });

  it('reduces through a StarReducer to the same mean whichever worker computed each micro-batch', async () => {
    const specs = cutMicroBatches(10, 4);
    const grads = specs.map((s) => mixedMagnitudes(PARAMS, 300 + s.id));
    const meanWith = async (owners: number[], order: number[]): Promise<Buffer> => {
      const reducer = new StarReducer(PARAMS);
      const round = new GatherRound(0, specs, reducer);
      specs.forEach((s, i) => round.assign(owners[i]!, [s]));
      for (const id of order) expect(round.accept(owners[id]!, reply(0, specs[id]!), grads[id]!)).toBeNull();
      await round.done;
      return Buffer.from(bytesOf(reducer.finish().meanGrad));
    };
    const one = await meanWith([1, 1, 1], [0, 1, 2]);
    const three = await meanWith([1, 2, 3], [2, 0, 1]);
    expect(Buffer.compare(one, three)).toBe(0);
  });

  it('sums samples, loss and correct counts over replies in micro-batch id order', async () => {
    const specs = cutMicroBatches(16, 4); // ids 0..3
    const round = new GatherRound(3, specs, new RecordingReducer());
    round.assign(1, [specs[0]!, specs[1]!]);
    round.assign(2, [specs[2]!, specs[3]!]);
    // Loss sums chosen so float64 addition order matters: in id order ((1e16 + 1) - 1e16) + 1 = 1.
    const lossSums = [1e16, 1, -1e16, 1];
    const correct = [4, 3, 2, 1];
    const sqNorms = [0.1, 0.2, 0.3, 0.4];
    const owner = [1, 1, 2, 2];
    for (const id of [2, 3, 1, 0]) {
      round.accept(owner[id]!, reply(3, specs[id]!, { lossSum: lossSums[id], correct: correct[id], sqNorm: sqNorms[id], computeMs: 10 * (id + 1) }), grad());
    }
    await round.done;
    const stats = round.stats();
    expect(stats.samples).toBe(16);
    expect(stats.lossSum).toBe(((1e16 + 1) - 1e16) + 1);
    // Summing in arrival order (2, 3, 1, 0) gives ((-1e16 + 1) + 1) + 1e16 = 0 instead.
    expect(stats.lossSum).not.toBe([2, 3, 1, 0].reduce((s, id) => s + lossSums[id]!, 0));
    expect(stats.correct).toBe(10);
    expect(stats.sqNorms).toEqual([
      { samples: 4, sqNorm: 0.1 },
      { samples: 4, sqNorm: 0.2 },
      { samples: 4, sqNorm: 0.3 },
      { samples: 4, sqNorm: 0.4 },
    ]);
    expect(stats.computeMsByWorker).toEqual(new Map([[1, 30], [2, 70]]));
  });
});

describe('GatherRound re-issue support', () => {
  it('refuses a gradient of the wrong length as bad_shape and does not reduce it', () => {
    const { specs, reducer, round } = setup();
    expect(round.accept(1, reply(5, specs[0]!), new Float32Array(PARAMS + 1))).toBe('bad_shape');
    expect(reducer.added).toEqual([]);
  });

  it('releases one outstanding micro-batch from its owner, whose late reply is then unassigned', () => {
    const { specs, round } = setup();
    expect(round.outstandingOwners().sort()).toEqual([1, 2]);
    expect(round.release(specs[0]!.id)).toEqual([specs[0]]);
    expect(round.release(specs[0]!.id)).toEqual([]);
    expect(round.accept(1, reply(5, specs[0]!), grad())).toBe('unassigned');
    round.assign(2, [specs[0]!]);
    expect(round.accept(2, reply(5, specs[0]!), grad())).toBeNull();
  });
});

describe('allFinite', () => {
  it('finds a NaN or an infinity at every position, lanes and tail alike, and passes extremes', () => {
    for (const n of [0, 1, 3, 4, 5, 8, 11]) {
      const ok = new Float32Array(n).map((_, i) => [3.4028234663852886e38, -3.4028234663852886e38, -0, 1e-45, 1][i % 5]!);
      expect(allFinite(ok), `n=${n}`).toBe(true);
      for (let at = 0; at < n; at++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const values = ok.slice();
          values[at] = bad;
          expect(allFinite(values), `n=${n} ${bad} at ${at}`).toBe(false);
        }
      }
    }
  });
});
