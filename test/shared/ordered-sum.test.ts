// OrderedSum: the exact id-order float64 sum every reducer builds on.

import { describe, expect, it } from 'vitest';
import { bytesOf, mixedMagnitudes } from '../support/tensors.js';
import { OrderedSum } from '../../shared/ordered-sum.js';

function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((x, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [x, ...rest]),
  );
}

describe('OrderedSum', () => {
  it('returns the sum of gradient sums divided by the total sample count', () => {
    const reducer = new OrderedSum(3);
    reducer.begin([0, 1]);
    reducer.add(0, new Float32Array([1, 2, -3]), 2);
    reducer.add(1, new Float32Array([3, 4, 1]), 2);
    const { meanGrad, samples } = reducer.finish();
    // (1+3)/4, (2+4)/4, (-3+1)/4
    expect(Array.from(meanGrad)).toEqual([1, 1.5, -0.5]);
    expect(samples).toBe(4);
  });

  it('returns the squared norm of the float32-rounded mean', () => {
    const grads = [
      [0.3, 2, 1, -3, 5],
      [1 / 3, 0.5, -1, 2, 1e-8],
      [0.1, -7, 3e-3, 1e4, 0],
    ].map((g) => Float32Array.from(g));
    const reducer = new OrderedSum(5);
    reducer.begin([0, 1, 2]);
    reducer.add(2, grads[2]!, 1);
    reducer.add(0, grads[0]!, 2);
    reducer.add(1, grads[1]!, 3);
    // Computed here from the inputs: float64 sums in id order, / 6 samples, rounded to float32, squared in float64.
    let expected = 0;
    for (let i = 0; i < 5; i++) {
      const mean = Math.fround((grads[0]![i]! + grads[1]![i]! + grads[2]![i]!) * (1 / 6));
      expected += mean * mean;
    }
    expect(reducer.finish().sqNorm).toBe(expected);
  });

  it('handles a step of one micro-batch (no accumulation pass)', () => {
    const reducer = new OrderedSum(3);
    reducer.begin([4]);
    reducer.add(4, new Float32Array([3, -6, 1]), 3);
    const { meanGrad, samples, sqNorm } = reducer.finish();
    expect(Array.from(meanGrad)).toEqual([1, -2, Math.fround(1 / 3)]);
    expect(samples).toBe(3);
    expect(sqNorm).toBeCloseTo(5 + 1 / 9, 6);
  });

  it('starts every step afresh: nothing of the previous step leaks into the next', () => {
    const reused = new OrderedSum(4);
    reused.begin([0, 1, 2]);
    reused.add(0, new Float32Array([1e6, 1e6, 1e6, 1e6]), 1);
    reused.add(1, new Float32Array([5, 5, 5, 5]), 1);
    reused.add(2, new Float32Array([7, 7, 7, 7]), 1);
    reused.finish();
    const grads = [new Float32Array([0.1, 0.2, 0.3, 0.4]), new Float32Array([-1, 2, -3, 4])];
    reused.begin([0, 1]);
    grads.forEach((g, id) => reused.add(id, g, 2));
    const fresh = new OrderedSum(4);
    fresh.begin([0, 1]);
    grads.forEach((g, id) => fresh.add(id, g, 2));
    expect(Array.from(reused.finish().meanGrad)).toEqual(Array.from(fresh.finish().meanGrad));
  });

  it('refuses to finish while a micro-batch is missing', () => {
    const reducer = new OrderedSum(2);
    reducer.begin([0, 1, 2]);
    reducer.add(0, new Float32Array(2), 1);
    reducer.add(2, new Float32Array(2), 1);
    expect(() => reducer.finish()).toThrow(/micro-batch 1 missing/);
  });

  it('weights micro-batches by sample count, not by micro-batch', () => {
    const reducer = new OrderedSum(1);
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

    const reference = new OrderedSum(n);
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

    const reducer = new OrderedSum(n);
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
      if (count === 3) {
        // Every seventh parameter: the first two cancel exactly, so only id order keeps the third.
        for (let i = 0; i < n; i += 7) [grads[0]![i], grads[1]![i], grads[2]![i]] = [3e18, -3e18, 0.75];
        const reversed = (i: number): number => grads[2]![i]! + grads[1]![i]! + grads[0]![i]!;
        const inIdOrder = (i: number): number => grads[0]![i]! + grads[1]![i]! + grads[2]![i]!;
        expect(reversed(7), 'the data must make the summation order matter').not.toBe(inIdOrder(7));
      }
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
      const reducer = new OrderedSum(n);
      for (const order of permutations(ids.map((_, k) => k))) {
        reducer.begin(ids);
        for (const k of order) reducer.add(ids[k]!, grads[k]!, samples[k]!);
        const { meanGrad, sqNorm } = reducer.finish();
        expect(Buffer.compare(bytesOf(meanGrad), bytesOf(expected)), `${count} replies, order ${order.join(',')}`).toBe(
          0,
        );
        expect(sqNorm).toBe(expectedSq);
      }
      grads.forEach((g, k) => expect(Buffer.compare(bytesOf(g), bytesOf(copies[k]!))).toBe(0));
    }
  });

  it('gives the same bits for the same ids whatever order begin() lists them in', () => {
    const grads = [0, 1, 2].map((id) => mixedMagnitudes(64, 50 + id));
    const run = (ids: number[]): Buffer => {
      const reducer = new OrderedSum(64);
      reducer.begin(ids);
      for (const id of [2, 0, 1]) reducer.add(id, grads[id]!, 2);
      return Buffer.from(bytesOf(reducer.finish().meanGrad));
    };
    expect(Buffer.compare(run([2, 1, 0]), run([0, 1, 2]))).toBe(0);
  });

  it('refuses to finish with a micro-batch missing, naming it', () => {
    const reducer = new OrderedSum(2);
    reducer.begin([0, 1, 2, 3]);
    reducer.add(0, new Float32Array(2), 1);
    reducer.add(1, new Float32Array(2), 1);
    reducer.add(3, new Float32Array(2), 1);
    expect(() => reducer.finish()).toThrow(/micro-batch 2 missing/);
  });

  it('refuses to finish when the first micro-batch is missing, naming it', () => {
    const reducer = new OrderedSum(2);
    reducer.begin([0, 1]);
    reducer.add(1, new Float32Array(2), 1);
    expect(() => reducer.finish()).toThrow(/micro-batch 0 missing/);
  });

  it('refuses a gradient of the wrong length, naming the micro-batch and the expected length', () => {
    const reducer = new OrderedSum(5);
    reducer.begin([0]);
    expect(() => reducer.add(0, new Float32Array(4), 1)).toThrow(/micro-batch 0: gradient has 4 values, expected 5/);
  });

  it('starts each step from zero after begin()', () => {
    const reducer = new OrderedSum(2);
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
    const reducer = new OrderedSum(1);
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
