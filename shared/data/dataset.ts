// The in-memory dataset model shared by the coordinator and workers: dataset names, splits,
// and copying a batch of samples out of a split.

import type { DataFile } from './fingerprint.js';
import type { ChannelStats } from './standardize.js';

/** Every dataset the trainer can load. */
export type DatasetName = 'synthetic' | 'fashion-mnist' | 'mnist' | 'cifar10' | 'cifar100';

/** All dataset names, in the order they are offered to users. */
export const DATASET_NAMES: readonly DatasetName[] = Object.freeze([
  'synthetic',
  'fashion-mnist',
  'mnist',
  'cifar10',
  'cifar100',
] as const);

/**
 * How a dataset's images were made from its natural input: `images = (raw - mean[c]) / std[c]`
 * for channel `c` (the last axis of the sample shape); one entry when the images have one channel.
 */
export interface Standardization extends ChannelStats {
  /** What one raw value is, e.g. `pixel / 255, in [0, 1]`. */
  raw: string;
}

/** One split (train or test) of a dataset. */
export interface Split {
  /** Standardized pixels, row-major `[count, ...sampleShape]`. */
  images: Float32Array;
  /** Class index of each sample, `0 <= label < numClasses`. */
  labels: Uint8Array;
  /** Number of samples. */
  count: number;
}

/** A fully loaded dataset. */
export interface Dataset {
  name: DatasetName;
  /** Shape of one sample, e.g. `[28, 28, 1]` (height, width, channels). */
  sampleShape: number[];
  numClasses: number;
  /** The name of each class, by label. */
  classNames: readonly string[];
  /** The training split's mean and standard deviation per channel, both splits were standardized with. */
  standardization: Standardization;
  train: Split;
  test: Split;
  /** Human-readable origin, e.g. a directory path or `synthetic(seed=1)`. */
  source: string;
  /** SHA-256 (64 hex digits) of every byte of the data; workers compare it with the coordinator's. */
  fingerprint: string;
  /** Each array's digest (train/test images and labels), to name the first that differs. */
  files: DataFile[];
}

/** What to load and where to look for it. */
export interface DatasetOptions {
  name: DatasetName;
  /** Directory holding the dataset's files; when given, it is the only place searched. */
  dataDir?: string;
  /** Seed for generated data (ignored by file-backed datasets). */
  seed: number;
  /** Number of synthetic training samples (default 10000). */
  syntheticTrain?: number;
  /** Number of synthetic test samples (default 2000). */
  syntheticTest?: number;
  /** Directory that `data/<name>` is resolved against (default `process.cwd()`). */
  cwd?: string;
}

/** True when `value` is one of {@link DATASET_NAMES}. */
export function isDatasetName(value: string): value is DatasetName {
  return (DATASET_NAMES as readonly string[]).includes(value);
}

/** Number of values in one sample of the given shape. */
export function sampleSize(sampleShape: readonly number[]): number {
  let size = 1;
  for (const d of sampleShape) size *= d;
  return size;
}

/**
 * Copies the samples at `indices` out of `split`, in the order given (indices may repeat).
 *
 * @param out optional destination for the images; it must hold at least
 *   `indices.length * sampleSize(sampleShape)` values. When it is longer, the returned
 *   `images` is a view of its first part.
 * @returns `images` row-major `[indices.length, ...sampleShape]` and `labels` as int32.
 * @throws RangeError when an index is not an integer in `[0, split.count)` or `out` is too short.
 */
export function gatherSamples(
  split: Split,
  sampleShape: number[],
  indices: ArrayLike<number>,
  out?: Float32Array,
): { images: Float32Array; labels: Int32Array } {
  const size = sampleSize(sampleShape);
  const n = indices.length;
  if (split.images.length !== split.count * size) {
    throw new RangeError(
      `gatherSamples: split has ${split.images.length} image values, expected ${split.count} × ${size} for sample shape [${sampleShape.join(', ')}]`,
    );
  }
  const needed = n * size;
  if (out !== undefined && out.length < needed) {
    throw new RangeError(
      `gatherSamples: output buffer holds ${out.length} values, needs ${needed} (${n} samples × ${size})`,
    );
  }
  const images = out === undefined ? new Float32Array(needed) : out.length === needed ? out : out.subarray(0, needed);
  const labels = new Int32Array(n);
  const src = split.images;
  for (let k = 0; k < n; k++) {
    const i = indices[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= split.count) {
      throw new RangeError(`gatherSamples: index ${i} at position ${k} is outside [0, ${split.count})`);
    }
    const start = i * size;
    images.set(src.subarray(start, start + size), k * size);
    labels[k] = split.labels[i]!;
  }
  return { images, labels };
}
