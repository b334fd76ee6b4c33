// gatherSamples and the dataset name list.

import { describe, expect, it } from 'vitest';
import { DATASET_NAMES, gatherSamples, isDatasetName, sampleSize, type Split } from '../../../shared/data/dataset.js';

const shape = [2, 2, 1];
/** Sample i has pixel values i*10 + 0..3 and label i. */
const split: Split = {
  images: Float32Array.from({ length: 5 * 4 }, (_, k) => Math.floor(k / 4) * 10 + (k % 4)),
  labels: Uint8Array.from([0, 1, 2, 3, 4]),
  count: 5,
};

describe('gatherSamples', () => {
  it('copies the rows of the given indices, in the given order, with their labels', () => {
    const { images, labels } = gatherSamples(split, shape, [3, 0, 3, 4]);
    expect(Array.from(images)).toEqual([30, 31, 32, 33, 0, 1, 2, 3, 30, 31, 32, 33, 40, 41, 42, 43]);
    expect(labels).toBeInstanceOf(Int32Array);
    expect(Array.from(labels)).toEqual([3, 0, 3, 4]);
  });

  it('copies rather than aliasing the split', () => {
    const { images } = gatherSamples(split, shape, [1]);
    images[0] = -1;
    expect(split.images[4]).toBe(10);
  });

  it('writes into a caller-supplied buffer, returning a view when the buffer is longer', () => {
    const out = new Float32Array(12).fill(-1);
    const { images } = gatherSamples(split, shape, Int32Array.from([2, 1]), out);
    expect(images.buffer).toBe(out.buffer);
    expect(Array.from(images)).toEqual([20, 21, 22, 23, 10, 11, 12, 13]);
    expect(out[8]).toBe(-1);
  });

  it('refuses out-of-range or fractional indices and too-small buffers', () => {
    expect(() => gatherSamples(split, shape, [5])).toThrow('index 5 at position 0 is outside [0, 5)');
    expect(() => gatherSamples(split, shape, [0, -1])).toThrow(RangeError);
    expect(() => gatherSamples(split, shape, [1.5])).toThrow(RangeError);
    expect(() => gatherSamples(split, shape, [0, 1], new Float32Array(7))).toThrow('needs 8');
  });

  it('refuses a sample shape that does not match the split', () => {
    expect(() => gatherSamples(split, [3, 3, 1], [0])).toThrow(RangeError);
  });

  it('returns empty arrays for no indices', () => {
    const { images, labels } = gatherSamples(split, shape, []);
    expect(images.length).toBe(0);
    expect(labels.length).toBe(0);
  });
});

describe('dataset names', () => {
  it('lists exactly the loadable datasets and recognises only those', () => {
    expect(DATASET_NAMES).toEqual(['synthetic', 'fashion-mnist', 'mnist', 'cifar10', 'cifar100']);
    expect(isDatasetName('mnist')).toBe(true);
    expect(isDatasetName('cifar10')).toBe(true);
    expect(isDatasetName('cifar-10')).toBe(false);
    expect(sampleSize([28, 28, 1])).toBe(784);
  });
});
