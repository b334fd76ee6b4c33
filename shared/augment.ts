// Training-data augmentation (`--augment`), applied by a worker to the samples it gathers:
// `crop-flip` is the standard CIFAR augmentation (pad each side by 4, take a random crop of the
// original size, flip left-right with probability 1/2). The crop and flip of dataset sample i in
// epoch e are a pure function of (run seed, e, i), a counter-based hash with no sequential state,
// so a batch is augmented the same whatever the worker count, the micro-batch split or a resume.

import { deriveSeed } from './data/seeded-random.js';
import { OptionError } from './errors.js';

/** The values of `--augment`. */
export const AUGMENT_MODES = ['none', 'crop-flip'] as const;
export type AugmentMode = (typeof AUGMENT_MODES)[number];

/** Pixels of padding on each side before the crop (the crop offset is 0..2 × pad along each axis). */
export const CROP_PAD = 4;

/** Sub-stream of the run seed for augmentation, apart from weight initialization and shuffling. */
const AUGMENT_STREAM = 0x61756721;

/** Where the crop window of one sample starts in the padded image, and whether it is mirrored. */
export interface CropFlip {
  /** Rows and columns of the padded image above and left of the window, each in [0, 2 × CROP_PAD]. */
  dy: number;
  dx: number;
  flip: boolean;
}

/** A standardization's mean and standard deviation: one for all channels, or one per channel. */
export interface ChannelStats {
  mean: number | readonly number[];
  std: number | readonly number[];
}

/**
 * The value a padded pixel takes in each channel: a black raw pixel (raw value 0) standardized,
 * as torchvision pads the raw image before normalizing it.
 * @throws RangeError when per-channel statistics do not have one value per channel
 */
export function padValues(standardization: ChannelStats, channels: number): Float32Array {
  const of = (stat: number | readonly number[], c: number): number => {
    if (typeof stat === 'number') return stat;
    if (stat.length !== channels)
      throw new RangeError(`augment: ${stat.length} per-channel statistics for samples of ${channels} channels`);
    return stat[c]!;
  };
  return Float32Array.from(
    { length: channels },
    (_, c) => (0 - of(standardization.mean, c)) / of(standardization.std, c),
  );
}

/** The crop offset and flip of dataset sample `index` in `epoch` of a run with seed `seed`. */
export function cropFlipOf(seed: number, epoch: number, index: number): CropFlip {
  return cropFlipAt(deriveSeed(seed, AUGMENT_STREAM), epoch, index);
}

/** The crop and flip of (epoch, index) under `base` (the seed's augmentation stream). */
function cropFlipAt(base: number, epoch: number, index: number): CropFlip {
  // Three mixed-radix digits of one uniform 32-bit hash: dy, dx (base 2·pad + 1) and the flip bit.
  const hash = deriveSeed(deriveSeed(base, epoch), index);
  const offsets = 2 * CROP_PAD + 1;
  return {
    dy: hash % offsets,
    dx: Math.floor(hash / offsets) % offsets,
    flip: Math.floor(hash / (offsets * offsets)) % 2 === 1,
  };
}

/** Transforms gathered samples in place; `null` from {@link createAugmenter} means none. */
export interface Augmenter {
  /**
   * Augments `images` (row-major `[indices.length, ...sampleShape]`) in place: sample k is dataset
   * sample `indices[k]` drawn in epoch `epochs[k]`.
   */
  apply(images: Float32Array, indices: ArrayLike<number>, epochs: ArrayLike<number>): void;
}

/**
 * The augmenter of `mode` for samples of `sampleShape` ([height, width, channels]) standardized
 * with `standardization`, seeded by the run seed; null for `none`.
 * @throws OptionError when the samples are not images of shape [height, width, channels]
 */
export function createAugmenter(
  mode: AugmentMode,
  sampleShape: readonly number[],
  standardization: ChannelStats,
  seed: number,
): Augmenter | null {
  if (mode === 'none') return null;
  if (sampleShape.length !== 3 || !sampleShape.every((d) => Number.isInteger(d) && d >= 1))
    throw new OptionError(
      'augment',
      mode,
      `none for samples of shape [${sampleShape.join(', ')}]: crop-flip needs images of shape [height, width, channels]`,
    );
  const [height, width, channels] = sampleShape as [number, number, number];
  return new CropFlipAugmenter(height, width, channels, padValues(standardization, channels), seed);
}

/** Pad-crop-flip with one reused scratch sample: O(pixels), no tensors. */
class CropFlipAugmenter implements Augmenter {
  private readonly scratch: Float32Array;
  private readonly base: number;

  constructor(
    private readonly height: number,
    private readonly width: number,
    private readonly channels: number,
    private readonly pad: Float32Array,
    seed: number,
  ) {
    this.scratch = new Float32Array(height * width * channels);
    this.base = deriveSeed(seed, AUGMENT_STREAM);
  }

  apply(images: Float32Array, indices: ArrayLike<number>, epochs: ArrayLike<number>): void {
    const size = this.scratch.length;
    if (indices.length !== epochs.length || images.length < indices.length * size)
      throw new RangeError(
        `augment: ${images.length} values, ${indices.length} indices and ${epochs.length} epochs do not describe one batch of samples of ${size} values`,
      );
    for (let k = 0; k < indices.length; k++) {
      this.transform(images, k * size, cropFlipAt(this.base, epochs[k]!, indices[k]!));
    }
  }

  /** out(y, x) = in(y + dy − pad, x' + dx − pad) with x' = W − 1 − x when flipped, else x; pad outside. */
  private transform(images: Float32Array, at: number, { dy, dx, flip }: CropFlip): void {
    const { height, width, channels, scratch } = this;
    if (dy === CROP_PAD && dx === CROP_PAD && !flip) return;
    scratch.set(images.subarray(at, at + scratch.length));
    const row = width * channels;
    const shift = dx - CROP_PAD;
    // Output columns [first, end) read columns inside the image; the ones either side are padding.
    const first = Math.max(0, flip ? shift : -shift);
    const end = Math.min(width, flip ? width + shift : width - shift);
    for (let y = 0; y < height; y++) {
      const sy = y + dy - CROP_PAD;
      const out = at + y * row;
      if (sy < 0 || sy >= height || first >= end) {
        this.fillPad(images, out, out + row);
        continue;
      }
      this.fillPad(images, out, out + first * channels);
      this.fillPad(images, out + end * channels, out + row);
      const source = sy * row;
      if (!flip) {
        images.set(
          scratch.subarray(source + (first + shift) * channels, source + (end + shift) * channels),
          out + first * channels,
        );
        continue;
      }
      for (let x = first; x < end; x++) {
        const from = source + (width - 1 - x + shift) * channels;
        const to = out + x * channels;
        for (let c = 0; c < channels; c++) images[to + c] = scratch[from + c]!;
      }
    }
  }

  /** Writes the padding value into pixels [from, to) of `images` (offsets in values). */
  private fillPad(images: Float32Array, from: number, to: number): void {
    const { pad, channels } = this;
    if (channels === 1) {
      images.fill(pad[0]!, from, to);
      return;
    }
    for (let i = from; i < to; i += channels) for (let c = 0; c < channels; c++) images[i + c] = pad[c]!;
  }
}
