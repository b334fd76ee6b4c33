// --augment crop-flip: each sample's crop and flip are a pure function of (seed, epoch, index),
// pixels land where pad-then-crop-then-flip puts them, the border is a black raw pixel, and a
// batch that straddles an epoch boundary augments each sample by its own epoch.

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { describe, expect, it } from 'vitest';
import { createAugmenter, cropFlipOf, CROP_PAD, padValues, type CropFlip } from '../../shared/augment.js';
import { gatherSamples, type Split } from '../../shared/data/dataset.js';
import { OptionError } from '../../shared/errors.js';
import { EpochSampler } from '../../shared/sampler.js';
import { bitDifference } from '../support/tensors.js';

const STATS = { mean: 0.5, std: 0.25 };
/** A black raw pixel standardized with STATS: (0 − 0.5) / 0.25. */
const PAD = -2;

/** A split of `count` images of shape [h, w, c] whose every value is distinct (and none is PAD). */
function distinctSplit(count: number, [h, w, c]: [number, number, number]): Split {
  const images = new Float32Array(count * h * w * c);
  for (let i = 0; i < images.length; i++) images[i] = 1 + i;
  return { images, labels: new Uint8Array(count), count };
}

/** Pad the image with `pad` on each side, cut the window at (dy, dx), then mirror it when `flip`: written the long way. */
function reference(
  image: Float32Array,
  [h, w, c]: [number, number, number],
  pad: number,
  { dy, dx, flip }: CropFlip,
): Float32Array {
  const ph = h + 2 * CROP_PAD;
  const pw = w + 2 * CROP_PAD;
  const padded = new Float32Array(ph * pw * c).fill(pad);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let k = 0; k < c; k++) padded[((y + CROP_PAD) * pw + x + CROP_PAD) * c + k] = image[(y * w + x) * c + k]!;
  const crop = new Float32Array(h * w * c);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let k = 0; k < c; k++) crop[(y * w + x) * c + k] = padded[((y + dy) * pw + x + dx) * c + k]!;
  if (!flip) return crop;
  const mirrored = new Float32Array(h * w * c);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let k = 0; k < c; k++) mirrored[(y * w + x) * c + k] = crop[(y * w + (w - 1 - x)) * c + k]!;
  return mirrored;
}

/** The first dataset index whose transform in `epoch` passes `wanted`. */
function indexWith(seed: number, epoch: number, wanted: (t: CropFlip) => boolean): number {
  for (let i = 0; i < 100_000; i++) if (wanted(cropFlipOf(seed, epoch, i))) return i;
  throw new Error('no such index');
}

/** The augmented images of `indices` (drawn in `epochs`) from `split`. */
function augmented(
  split: Split,
  shape: [number, number, number],
  seed: number,
  indices: number[],
  epochs: number[],
): Float32Array {
  const { images } = gatherSamples(split, shape, indices);
  createAugmenter('crop-flip', shape, STATS, seed)!.apply(images, indices, epochs);
  return images;
}

/** `image` augmented as dataset sample `index` of `epoch`. */
function augmentOne(
  image: Float32Array,
  shape: [number, number, number],
  seed: number,
  index: number,
  epoch: number,
): Float32Array {
  const images = new Float32Array((index + 1) * image.length);
  images.set(image, index * image.length);
  return augmented({ images, labels: new Uint8Array(index + 1), count: index + 1 }, shape, seed, [index], [epoch]);
}

const sampleOf = (images: Float32Array, k: number, size: number): number[] =>
  Array.from(images.subarray(k * size, (k + 1) * size));

describe('cropFlipOf', () => {
  it('is a pure function of (seed, epoch, index), with offsets in [0, 2 × pad] and both flips', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const t = cropFlipOf(7, 3, i);
      expect(cropFlipOf(7, 3, i)).toEqual(t);
      for (const d of [t.dy, t.dx]) expect(Number.isInteger(d) && d >= 0 && d <= 2 * CROP_PAD).toBe(true);
      seen.add(`${t.dy},${t.dx},${t.flip}`);
    }
    // 9 × 9 offsets × 2 flips, all reached.
    expect(seen.size).toBe((2 * CROP_PAD + 1) ** 2 * 2);
  });

  it('draws independent transforms for another seed or another epoch of the same index', () => {
    const same = (a: CropFlip, b: CropFlip): boolean => a.dy === b.dy && a.dx === b.dx && a.flip === b.flip;
    let sameEpoch = 0;
    let sameSeed = 0;
    const n = 16_200;
    for (let i = 0; i < n; i++) {
      if (same(cropFlipOf(1, 0, i), cropFlipOf(1, 1, i))) sameEpoch++;
      if (same(cropFlipOf(1, 0, i), cropFlipOf(2, 0, i))) sameSeed++;
    }
    // Independent draws agree with probability 1/162 (about 100 of 16,200); a shared stream would agree always.
    for (const agree of [sameEpoch, sameSeed]) {
      expect(agree).toBeGreaterThan(50);
      expect(agree).toBeLessThan(160);
    }
  });
});

describe('createAugmenter', () => {
  const shape: [number, number, number] = [6, 5, 2];
  const size = 6 * 5 * 2;

  it.each([
    [[6, 5, 2]],
    [[8, 8, 1]],
    [[32, 32, 3]],
    // Narrower than the padding: some crops hold no image column at all.
    [[3, 2, 3]],
  ] as [number, number, number][][])(
    'puts every pixel where pad, crop and flip put it, for every sample of a batch of %j images',
    (imageShape) => {
      const n = 1500;
      const split = distinctSplit(n, imageShape);
      const valuesPer = imageShape[0] * imageShape[1] * imageShape[2];
      const indices = Array.from({ length: n }, (_, i) => i);
      const images = augmented(
        split,
        imageShape,
        11,
        indices,
        indices.map(() => 4),
      );
      const expected = new Float32Array(images.length);
      const seen = new Set<string>();
      for (const i of indices) {
        const t = cropFlipOf(11, 4, i);
        seen.add(JSON.stringify(t));
        const original = split.images.subarray(i * valuesPer, (i + 1) * valuesPer);
        expected.set(reference(original, imageShape, PAD, t), i * valuesPer);
      }
      expect(bitDifference(expected, images)).toBeNull();
      // Every one of the 162 transforms was checked.
      expect(seen.size).toBe(162);
    },
  );

  it('moves a known pixel: a flip sends the top-left pixel to the top-right, a shift down by one moves row 1 to row 0', () => {
    const [h, w, c] = shape;
    const image = distinctSplit(1, shape).images;
    const at = (images: Float32Array, y: number, x: number, k: number): number => images[(y * w + x) * c + k]!;
    const flipOnly = indexWith(3, 0, (t) => t.dy === CROP_PAD && t.dx === CROP_PAD && t.flip);
    const flipped = augmentOne(image, shape, 3, flipOnly, 0);
    for (const k of [0, 1]) {
      expect(at(flipped, 0, w - 1, k)).toBe(at(image, 0, 0, k));
      expect(at(flipped, h - 1, 0, k)).toBe(at(image, h - 1, w - 1, k));
    }
    const downOne = indexWith(3, 0, (t) => t.dy === CROP_PAD + 1 && t.dx === CROP_PAD && !t.flip);
    const shifted = augmentOne(image, shape, 3, downOne, 0);
    for (let x = 0; x < w; x++)
      for (const k of [0, 1]) {
        expect(at(shifted, 0, x, k)).toBe(at(image, 1, x, k));
        expect(at(shifted, h - 1, x, k)).toBe(PAD);
      }
  });

  it('pads with a black raw pixel in standardized units, (0 − mean) / std in each channel', () => {
    expect(Array.from(padValues(STATS, 3))).toEqual([PAD, PAD, PAD]);
    expect(Array.from(padValues({ mean: 0.286, std: 0.353 }, 1))).toEqual([Math.fround(-0.286 / 0.353)]);
    // Per-channel statistics (CIFAR's are) give each channel its own black.
    expect(Array.from(padValues({ mean: [0.5, 0.25, 0], std: [0.25, 0.5, 2] }, 3))).toEqual([-2, -0.5, 0]);
    expect(() => padValues({ mean: [0.5, 0.25], std: 1 }, 3)).toThrow(
      /2 per-channel statistics for samples of 3 channels/,
    );
    // The farthest crop (offset 0 or 2 × pad along an axis) leaves a border of `pad` black pixels.
    const corner = indexWith(5, 0, (t) => t.dy === 0 && t.dx === 0);
    const out = augmentOne(distinctSplit(1, shape).images, shape, 5, corner, 0);
    const [, w, c] = shape;
    const flip = cropFlipOf(5, 0, corner).flip;
    for (let y = 0; y < CROP_PAD; y++)
      for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) expect(out[(y * w + x) * c + k]).toBe(PAD);
    // Below the padded rows the left columns (right ones when flipped) are padding, the rest is image.
    const y = CROP_PAD;
    const padX = flip ? w - 1 : 0;
    expect(out[(y * w + padX) * c]).toBe(PAD);
    expect(out[(y * w + (flip ? 0 : w - 1)) * c]).not.toBe(PAD);
  });

  it('pads each channel with its own black when standardized per channel', () => {
    const [h, w, c] = [6, 5, 3];
    const perChannel = { mean: [0.5, 0.25, 0], std: [0.25, 0.5, 2] };
    const augmenter = createAugmenter('crop-flip', [h, w, c], perChannel, 5)!;
    // A crop two rows and two columns into the padding (flipped or not): border pixels on both axes.
    const index = indexWith(5, 0, (t) => t.dy === 2 && t.dx === 2);
    const out = new Float32Array(h * w * c).fill(9);
    augmenter.apply(out, [index], [0]);
    const flip = cropFlipOf(5, 0, index).flip;
    const edge = flip ? w - 1 : 0;
    for (const [y, x] of [
      [0, 0],
      [1, w - 1],
      [3, edge],
    ])
      expect(Array.from(out.subarray((y! * w + x!) * c, (y! * w + x! + 1) * c))).toEqual([-2, -0.5, 0]);
    expect(Array.from(out.subarray((3 * w + (w - 1 - edge)) * c, (3 * w + (w - 1 - edge) + 1) * c))).toEqual([9, 9, 9]);
  });

  it("augments a sample the same whatever its position in the batch and the batch's other samples", () => {
    const split = distinctSplit(30, shape);
    const whole = augmented(split, shape, 9, [4, 17, 29, 0, 8], [2, 2, 3, 3, 3]);
    const alone = augmented(split, shape, 9, [29], [3]);
    const reordered = augmented(split, shape, 9, [8, 29, 4], [3, 3, 2]);
    expect(sampleOf(alone, 0, size)).toEqual(sampleOf(whole, 2, size));
    expect(sampleOf(reordered, 1, size)).toEqual(sampleOf(whole, 2, size));
    expect(sampleOf(reordered, 0, size)).toEqual(sampleOf(whole, 4, size));
    expect(sampleOf(reordered, 2, size)).toEqual(sampleOf(whole, 0, size));
  });

  it('augments each sample of a batch straddling an epoch boundary by its own epoch', () => {
    // 10 samples, batch 16: step 0 holds all of epoch 0 and the first 6 of epoch 1, so 6 indices come twice.
    const split = distinctSplit(10, shape);
    const sampler = new EpochSampler(10, 21);
    const { indices, epochs } = sampler.samplesFor(0, 16);
    expect(Array.from(epochs)).toEqual([...Array(10).fill(0), ...Array(6).fill(1)]);
    const images = augmented(split, shape, 21, Array.from(indices), Array.from(epochs));
    let differ = 0;
    for (let k = 0; k < 16; k++) {
      const i = indices[k]!;
      const original = split.images.subarray(i * size, (i + 1) * size);
      expect(sampleOf(images, k, size)).toEqual(
        Array.from(reference(original, shape, PAD, cropFlipOf(21, epochs[k]!, i))),
      );
      const twin = Array.from(indices).findIndex((j, m) => j === i && m !== k);
      if (twin >= 0 && sampleOf(images, twin, size).join() !== sampleOf(images, k, size).join()) differ++;
    }
    // Seed 21: every index drawn in both epochs is augmented differently in each (each pair counted twice).
    expect(differ).toBe(12);
  });

  it('works without tensors: none is left behind', () => {
    const before = tf.memory().numTensors;
    augmented(distinctSplit(8, shape), shape, 1, [0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 1, 1, 1, 1]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('is null for none, and refuses samples that are not [height, width, channels] images naming --augment', () => {
    expect(createAugmenter('none', [28, 28, 1], STATS, 1)).toBeNull();
    expect(() => createAugmenter('crop-flip', [784], STATS, 1)).toThrow(OptionError);
    expect(() => createAugmenter('crop-flip', [784], STATS, 1)).toThrow(
      /--augment: got "crop-flip"; expected none for samples of shape \[784\]/,
    );
  });
});
