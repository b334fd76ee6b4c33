// CIFAR-10 and CIFAR-100 in their binary distribution (the "version for C programs"): fixed-size
// records of label byte(s) then 3072 pixel bytes (1024 R, 1024 G, 1024 B, each 32×32 row-major),
// read into the trainer's HWC layout [n, 32, 32, 3] and standardized per channel with the
// training split's mean and standard deviation.
//
// A directory holds the files either directly or in the archive's own subdirectory
// (cifar-10-batches-bin/, cifar-100-binary/), which is where `batchlab data fetch` puts them.
// Only the .bin files are read: the class names are the official ones, built in here.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { DataError } from '../errors.js';
import type { Dataset, Split } from './dataset.js';
import { loadRememberingLast, readDigested } from './digest-cache.js';
import { datasetFingerprint, type DataFile } from './fingerprint.js';
import { byteChannelStats, standardizeByteChannels } from './standardize.js';

/** The CIFAR datasets. */
export type CifarName = 'cifar10' | 'cifar100';

/** Every CIFAR dataset name. */
export const CIFAR_NAMES: readonly CifarName[] = ['cifar10', 'cifar100'];

/** Side of a CIFAR image in pixels. */
export const CIFAR_SIDE = 32;
/** Pixel bytes of one record: 3 channel planes of 32×32. */
export const CIFAR_IMAGE_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE;

/** How one CIFAR dataset is distributed and laid out. */
export interface CifarLayout {
  /** The official archive, its size and its published MD5. */
  archive: { url: string; bytes: number; md5: string };
  /** The directory the archive unpacks to. */
  subdir: string;
  /** The training files, in the order their records are read. */
  train: readonly string[];
  /** The test file. */
  test: string;
  /** Label bytes before the pixels of a record (CIFAR-100: coarse, then fine). */
  labelBytes: number;
  /** Which label byte is the label trained on (CIFAR-100: the fine label). */
  labelIndex: number;
  numClasses: number;
  /** Classes of each label byte, by position: checked on load. */
  labelClasses: readonly number[];
  /** Records of each official file, for messages about a truncated file. */
  officialRecords: Readonly<Record<string, number>>;
  classNames: readonly string[];
  /** The other files of the archive (not read; class names are built in). */
  extras: readonly string[];
}

const CIFAR10_TRAIN = [
  'data_batch_1.bin',
  'data_batch_2.bin',
  'data_batch_3.bin',
  'data_batch_4.bin',
  'data_batch_5.bin',
];

/** The official layouts. */
export const CIFAR: Readonly<Record<CifarName, CifarLayout>> = {
  cifar10: {
    archive: {
      url: 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
      bytes: 170_052_171,
      md5: 'c32a1d4ab5d03f1284b67883e8d87530',
    },
    subdir: 'cifar-10-batches-bin',
    train: CIFAR10_TRAIN,
    test: 'test_batch.bin',
    labelBytes: 1,
    labelIndex: 0,
    numClasses: 10,
    labelClasses: [10],
    officialRecords: Object.fromEntries([...CIFAR10_TRAIN, 'test_batch.bin'].map((f) => [f, 10_000])),
    classNames: ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'],
    extras: ['batches.meta.txt', 'readme.html'],
  },
  cifar100: {
    archive: {
      url: 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz',
      bytes: 168_513_733,
      md5: '03b5dce01913d631647c71ecec9e9cb8',
    },
    subdir: 'cifar-100-binary',
    train: ['train.bin'],
    test: 'test.bin',
    labelBytes: 2,
    labelIndex: 1,
    numClasses: 100,
    labelClasses: [20, 100],
    officialRecords: { 'train.bin': 50_000, 'test.bin': 10_000 },
    classNames: [
      ...['apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle'],
      ...['bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle'],
      ...['chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur'],
      ...['dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard'],
      ...['lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain'],
      ...[
        'mouse',
        'mushroom',
        'oak_tree',
        'orange',
        'orchid',
        'otter',
        'palm_tree',
        'pear',
        'pickup_truck',
        'pine_tree',
      ],
      ...['plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket'],
      ...['rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider'],
      ...[
        'squirrel',
        'streetcar',
        'sunflower',
        'sweet_pepper',
        'table',
        'tank',
        'telephone',
        'television',
        'tiger',
        'tractor',
      ],
      ...['train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm'],
    ],
    extras: ['coarse_label_names.txt', 'fine_label_names.txt'],
  },
};

/** True when `name` is a CIFAR dataset. */
export function isCifarName(name: string): name is CifarName {
  return (CIFAR_NAMES as readonly string[]).includes(name);
}

/** The files a CIFAR dataset needs, training files first. */
export function cifarFileNames(name: CifarName): string[] {
  return [...CIFAR[name].train, CIFAR[name].test];
}

/** Bytes of one record: label bytes then pixels. */
export function cifarRecordBytes(name: CifarName): number {
  return CIFAR[name].labelBytes + CIFAR_IMAGE_BYTES;
}

/** What a directory holds: every file (in `dir` itself or its archive subdirectory), or what is missing. */
export type CifarDirectoryScan =
  { complete: true; dir: string; files: string[] } | { complete: false; found: string[]; missing: string[] };

/**
 * Looks for the dataset's files in `dir`, then in `dir/<archive subdirectory>`; the first of the
 * two holding all of them wins. When neither does, `found` and `missing` describe the one holding
 * more of them (missing names are relative to it).
 */
export function scanCifarDirectory(name: CifarName, dir: string): CifarDirectoryScan {
  const names = cifarFileNames(name);
  let best: { found: string[]; missing: string[] } | null = null;
  for (const candidate of [dir, join(dir, CIFAR[name].subdir)]) {
    const paths = names.map((f) => join(candidate, f));
    const found = paths.filter((p) => existsSync(p));
    if (found.length === names.length) return { complete: true, dir: candidate, files: paths };
    if (best === null || found.length > best.found.length) {
      const missing = names.filter((f) => !existsSync(join(candidate, f)));
      best = { found, missing: candidate === dir ? missing : missing.map((f) => join(CIFAR[name].subdir, f)) };
    }
  }
  return { complete: false, ...best! };
}

/**
 * Loads a CIFAR dataset from its files (training files then the test file, as
 * {@link scanCifarDirectory} gives them): images HWC [n, 32, 32, 3] standardized per channel
 * with the training split's statistics; the last load is reused while the files are unchanged.
 * @throws DataError naming the file when its size is not a whole number of records or a label is
 *   out of range
 */
export async function loadCifarDataset(name: CifarName, files: readonly string[], source: string): Promise<Dataset> {
  return loadRememberingLast([name, source], files, () => readCifarDataset(name, files, source));
}

async function readCifarDataset(name: CifarName, files: readonly string[], source: string): Promise<Dataset> {
  const layout = CIFAR[name];
  // Every byte is hashed (SHA-256 per file, cached on disk by the file's identity), so a worker
  // whose data differs anywhere is refused at the handshake, naming the file.
  const read = await Promise.all(files.map((path) => readDigested(path, readBytes)));
  const parts = read.map((r, i) => ({ path: files[i]!, bytes: r.bytes }));
  const dataFiles = read.map((r, i): DataFile => ({ name: basename(files[i]!), sha256: r.sha256, path: files[i]! }));
  for (const part of parts) checkCifarFileSize(name, part.path, part.bytes.length);
  const train = decodeRecords(name, parts.slice(0, -1));
  const test = decodeRecords(name, parts.slice(-1));
  const sampleShape = [CIFAR_SIDE, CIFAR_SIDE, 3];
  const stats = byteChannelStats(train.pixels, 3);
  const split = (records: Records): Split => ({
    images: standardizeByteChannels(records.pixels, stats),
    labels: records.labels,
    count: records.labels.length,
  });
  return {
    name,
    sampleShape,
    numClasses: layout.numClasses,
    classNames: layout.classNames,
    standardization: { ...stats, raw: 'pixel / 255, in [0, 1], channels R, G, B (HWC)' },
    train: split(train),
    test: split(test),
    source,
    fingerprint: datasetFingerprint(name, sampleShape, layout.numClasses, dataFiles),
    files: dataFiles,
  };
}

async function readBytes(path: string): Promise<Uint8Array> {
  const buffer = await readFile(path);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Pixels HWC (R, G, B interleaved) and the trained-on label of each record. */
interface Records {
  pixels: Uint8Array;
  labels: Uint8Array;
}

/**
 * Checks that a file of `size` bytes holds whole records (at least one).
 * @throws DataError naming the file, its size, the record size and the official file's size
 */
export function checkCifarFileSize(name: CifarName, path: string, size: number): void {
  const record = cifarRecordBytes(name);
  if (size > 0 && size % record === 0) return;
  const { labelBytes, officialRecords } = CIFAR[name];
  const official = officialRecords[basename(path)];
  const expected =
    official === undefined ? '' : `; the official file has ${official * record} bytes (${official} records)`;
  throw new DataError(
    `${name}: ${path} has ${size} bytes, not a whole number of ${record}-byte records ` +
      `(${labelBytes} label byte${labelBytes > 1 ? 's' : ''} + ${CIFAR_IMAGE_BYTES} pixel bytes)${expected}. ` +
      `Is it truncated? Get the files again: batchlab data fetch ${name} --dir DIR`,
  );
}

/** Decodes whole records: planar CHW pixels to HWC, labels checked against their class counts. */
function decodeRecords(name: CifarName, parts: readonly { path: string; bytes: Uint8Array }[]): Records {
  const { labelBytes, labelIndex, labelClasses } = CIFAR[name];
  const record = cifarRecordBytes(name);
  const plane = CIFAR_SIDE * CIFAR_SIDE;
  const count = parts.reduce((n, p) => n + p.bytes.length / record, 0);
  const pixels = new Uint8Array(count * CIFAR_IMAGE_BYTES);
  const labels = new Uint8Array(count);
  let i = 0;
  for (const { path, bytes } of parts) {
    for (let start = 0; start < bytes.length; start += record, i++) {
      for (let b = 0; b < labelBytes; b++) {
        const label = bytes[start + b]!;
        if (label >= labelClasses[b]!) {
          const which = labelBytes > 1 ? (b === labelIndex ? 'fine label' : 'coarse label') : 'label';
          throw new DataError(
            `${name}: ${path}: record ${start / record} has ${which} ${label}; expected 0..${labelClasses[b]! - 1}. Is this a ${name} file?`,
          );
        }
      }
      labels[i] = bytes[start + labelIndex]!;
      const image = start + labelBytes;
      const out = i * CIFAR_IMAGE_BYTES;
      for (let p = 0; p < plane; p++) {
        pixels[out + 3 * p] = bytes[image + p]!;
        pixels[out + 3 * p + 1] = bytes[image + plane + p]!;
        pixels[out + 3 * p + 2] = bytes[image + 2 * plane + p]!;
      }
    }
  }
  return { pixels, labels };
}
