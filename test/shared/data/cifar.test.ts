// CIFAR-10/100 from the binary distribution: the record layout read exactly (a known byte of a
// known record lands at its HWC index, labels, per-channel statistics), where the files may be,
// the search order, fingerprints, and the errors for missing, truncated and mislabelled files.

import { existsSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CIFAR, cifarRecordBytes } from '../../../shared/data/cifar.js';
import { firstDifferingFile } from '../../../shared/data/fingerprint.js';
import { datasetSearchPaths, loadDataset } from '../../../shared/data/index.js';
import { DataError, exitCodeFor } from '../../../shared/errors.js';
import { writeCifarFiles } from '../../support/cifar-files.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'batchlab-cifar-'));
  // Digests are cached under the home directory by default: keep this test's cache to itself.
  process.env.XDG_CACHE_HOME = join(root, 'cache');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const PLANE = 1024;

/** The error a promise rejects with. */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: Error) => error,
  );
}

describe('cifar10', () => {
  it('reads planar R, G, B records into HWC, with the labels and per-channel statistics of the training files', async () => {
    const dir = join(root, 'c10');
    const { filesDir, files } = writeCifarFiles(dir, { name: 'cifar10', trainPerFile: 7, test: 5, seed: 3 });
    const ds = await loadDataset({ name: 'cifar10', dataDir: dir, seed: 1 });
    expect(ds).toMatchObject({ name: 'cifar10', sampleShape: [32, 32, 3], numClasses: 10, source: filesDir });
    expect(ds.train.count).toBe(35);
    expect(ds.test.count).toBe(5);
    expect(ds.train.images.length).toBe(35 * 3072);
    expect(ds.classNames).toEqual(CIFAR.cifar10.classNames);

    // Per-channel mean and std of every training byte / 255, in double precision.
    const raw = CIFAR.cifar10.train.map((f) => readFileSync(files[f]!));
    const sums = [0, 0, 0];
    const squares = [0, 0, 0];
    for (const bytes of raw) {
      for (let r = 0; r < 7; r++) {
        for (let c = 0; c < 3; c++) {
          for (let p = 0; p < PLANE; p++) {
            const x = bytes[r * 3073 + 1 + c * PLANE + p]! / 255;
            sums[c]! += x;
            squares[c]! += x * x;
          }
        }
      }
    }
    const n = 35 * PLANE;
    const mean = sums.map((s) => s / n);
    const std = squares.map((s, c) => Math.sqrt(s / n - mean[c]! ** 2));
    ds.standardization.mean.forEach((m, c) => expect(m).toBeCloseTo(mean[c]!, 10));
    ds.standardization.std.forEach((s, c) => expect(s).toBeCloseTo(std[c]!, 10));
    // The generator gives the channels different statistics: a scalar would not do.
    expect(new Set(mean.map((m) => m.toFixed(3))).size).toBe(3);

    // Record 3 of data_batch_2 is training sample 7 + 3; its G byte at row 5, column 30.
    const bytes = raw[1]!;
    const record = 3 * 3073;
    const sample = 7 + 3;
    const [y, x, c] = [5, 30, 1];
    const value = bytes[record + 1 + c * PLANE + y * 32 + x]!;
    const hwc = sample * 3072 + (y * 32 + x) * 3 + c;
    expect(ds.train.images[hwc]).toBeCloseTo((value / 255 - mean[c]!) / std[c]!, 5);
    expect(ds.train.labels[sample]).toBe(bytes[record]);
    // Every byte of the first test record, through the per-channel standardization.
    const testBytes = readFileSync(files['test_batch.bin']!);
    for (let p = 0; p < PLANE; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const want = (testBytes[1 + ch * PLANE + p]! / 255 - mean[ch]!) / std[ch]!;
        expect(Math.abs(ds.test.images[p * 3 + ch]! - want)).toBeLessThan(1e-5);
      }
    }
    expect(Array.from(ds.test.labels)).toEqual([0, 1, 2, 3, 4].map((r) => testBytes[r * 3073]));

    // Standardized training pixels: mean 0 and std 1 in each channel.
    for (let ch = 0; ch < 3; ch++) {
      let s = 0;
      let q = 0;
      for (let i = ch; i < ds.train.images.length; i += 3) {
        s += ds.train.images[i]!;
        q += ds.train.images[i]! ** 2;
      }
      const m = s / n;
      expect(Math.abs(m)).toBeLessThan(1e-4);
      expect(Math.sqrt(q / n - m * m)).toBeCloseTo(1, 4);
    }
    expect(ds.files.map((f) => f.name)).toEqual([...CIFAR.cifar10.train, 'test_batch.bin']);
  });

  it('takes the files straight in the directory as well as in cifar-10-batches-bin/', async () => {
    const flat = join(root, 'flat');
    writeCifarFiles(flat, { name: 'cifar10', trainPerFile: 3, test: 2, seed: 3, flat: true });
    const nested = join(root, 'nested');
    writeCifarFiles(nested, { name: 'cifar10', trainPerFile: 3, test: 2, seed: 3 });
    const a = await loadDataset({ name: 'cifar10', dataDir: flat, seed: 1 });
    const b = await loadDataset({ name: 'cifar10', dataDir: nested, seed: 1 });
    expect(a.source).toBe(flat);
    expect(b.source).toBe(join(nested, 'cifar-10-batches-bin'));
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(a.train.images).toEqual(b.train.images);
  });

  it('gives another fingerprint, naming the file, when one byte of one file differs', async () => {
    const a = join(root, 'fp-a');
    const b = join(root, 'fp-b');
    writeCifarFiles(a, { name: 'cifar10', trainPerFile: 3, test: 2, seed: 5 });
    const { files } = writeCifarFiles(b, { name: 'cifar10', trainPerFile: 3, test: 2, seed: 5 });
    const bytes = readFileSync(files['data_batch_4.bin']!);
    bytes[2000] = bytes[2000]! ^ 1;
    writeFileSync(files['data_batch_4.bin']!, bytes);
    const dsA = await loadDataset({ name: 'cifar10', dataDir: a, seed: 1 });
    const dsB = await loadDataset({ name: 'cifar10', dataDir: b, seed: 1 });
    expect(dsA.fingerprint).not.toBe(dsB.fingerprint);
    expect(firstDifferingFile(dsB.files, dsA.files)?.name).toBe('data_batch_4.bin');
  });

  it('names the directory, the missing files and how to get them when --data-dir lacks some (BAD_DATA, exit 2)', async () => {
    const dir = join(root, 'partial');
    writeCifarFiles(dir, { name: 'cifar10', trainPerFile: 2, test: 2, omit: ['test_batch.bin', 'data_batch_5.bin'] });
    const error = await rejection(loadDataset({ name: 'cifar10', dataDir: dir, seed: 1 }));
    expect(error).toBeInstanceOf(DataError);
    expect(exitCodeFor(error)).toBe(2);
    expect(error.message).toContain(`cifar10: data directory ${dir} (from --data-dir) is missing`);
    expect(error.message).toContain('cifar-10-batches-bin/data_batch_5.bin, cifar-10-batches-bin/test_batch.bin');
    expect(error.message).toContain('batchlab data fetch cifar10 --dir DIR');
  });

  it('names the file, its size and the record size when a file is truncated', async () => {
    const dir = join(root, 'truncated');
    const { files } = writeCifarFiles(dir, { name: 'cifar10', trainPerFile: 4, test: 2 });
    truncateSync(files['data_batch_3.bin']!, 4 * 3073 - 100);
    const error = await rejection(loadDataset({ name: 'cifar10', dataDir: dir, seed: 1 }));
    expect(error).toBeInstanceOf(DataError);
    expect(error.message).toContain(
      `cifar10: ${files['data_batch_3.bin']} has ${4 * 3073 - 100} bytes, not a whole number of 3073-byte records`,
    );
    expect(error.message).toContain('the official file has 30730000 bytes (10000 records)');
    truncateSync(files['data_batch_3.bin']!, 0);
    expect((await rejection(loadDataset({ name: 'cifar10', dataDir: dir, seed: 1 }))).message).toContain(
      `${files['data_batch_3.bin']} has 0 bytes`,
    );
  });

  it('refuses a label of 10 or more, naming the file and the record', async () => {
    const dir = join(root, 'badlabel');
    const { files } = writeCifarFiles(dir, { name: 'cifar10', trainPerFile: 3, test: 3 });
    const bytes = readFileSync(files['test_batch.bin']!);
    bytes[2 * 3073] = 10;
    writeFileSync(files['test_batch.bin']!, bytes);
    const error = await rejection(loadDataset({ name: 'cifar10', dataDir: dir, seed: 1 }));
    expect(error).toBeInstanceOf(DataError);
    expect(error.message).toBe(
      `cifar10: ${files['test_batch.bin']}: record 2 has label 10; expected 0..9. Is this a cifar10 file?`,
    );
  });
});

describe('cifar100', () => {
  it('trains on the fine label (second byte) of 3074-byte records, with the 100 official class names', async () => {
    const dir = join(root, 'c100');
    const { files } = writeCifarFiles(dir, { name: 'cifar100', trainPerFile: 30, test: 6, seed: 9 });
    const ds = await loadDataset({ name: 'cifar100', dataDir: dir, seed: 1 });
    expect(ds).toMatchObject({ name: 'cifar100', sampleShape: [32, 32, 3], numClasses: 100 });
    expect(cifarRecordBytes('cifar100')).toBe(3074);
    expect(ds.train.count).toBe(30);
    expect(ds.classNames).toHaveLength(100);
    expect(new Set(ds.classNames).size).toBe(100);
    expect([ds.classNames[0], ds.classNames[30], ds.classNames[99]]).toEqual(['apple', 'dolphin', 'worm']);
    const train = readFileSync(files['train.bin']!);
    expect(Array.from(ds.train.labels)).toEqual(Array.from({ length: 30 }, (_, r) => train[r * 3074 + 1]));
    expect(Array.from(ds.train.labels).some((label, r) => label !== train[r * 3074])).toBe(true);
    // Record 4's B byte at row 31, column 0, after its two label bytes.
    const value = train[4 * 3074 + 2 + 2 * PLANE + 31 * 32]!;
    const { mean, std } = ds.standardization;
    expect(ds.train.images[4 * 3072 + 31 * 32 * 3 + 2]).toBeCloseTo((value / 255 - mean[2]!) / std[2]!, 5);
  });

  it('refuses a coarse label of 20 or more and a fine label of 100 or more', async () => {
    const dir = join(root, 'c100-bad');
    const { files } = writeCifarFiles(dir, { name: 'cifar100', trainPerFile: 3, test: 3 });
    const bytes = readFileSync(files['train.bin']!);
    bytes[1 * 3074] = 20;
    writeFileSync(files['train.bin']!, bytes);
    expect((await rejection(loadDataset({ name: 'cifar100', dataDir: dir, seed: 1 }))).message).toBe(
      `cifar100: ${files['train.bin']}: record 1 has coarse label 20; expected 0..19. Is this a cifar100 file?`,
    );
    bytes[1 * 3074] = 0;
    bytes[2 * 3074 + 1] = 100;
    writeFileSync(files['train.bin']!, bytes);
    expect((await rejection(loadDataset({ name: 'cifar100', dataDir: dir, seed: 1 }))).message).toBe(
      `cifar100: ${files['train.bin']}: record 2 has fine label 100; expected 0..99. Is this a cifar100 file?`,
    );
  });

  it('names the record size of CIFAR-100 for a file of the wrong size', async () => {
    const dir = join(root, 'c100-odd');
    const { files } = writeCifarFiles(dir, { name: 'cifar100', trainPerFile: 3, test: 2 });
    truncateSync(files['test.bin']!, 2 * 3073);
    expect((await rejection(loadDataset({ name: 'cifar100', dataDir: dir, seed: 1 }))).message).toContain(
      `${files['test.bin']} has 6146 bytes, not a whole number of 3074-byte records (2 label bytes + 3072 pixel bytes); the official file has 30740000 bytes`,
    );
  });
});

describe('search order', () => {
  it('searches ./data/<name> then /usr/share/datasets/<name>, and only --data-dir when given', () => {
    expect(datasetSearchPaths('cifar10', { cwd: '/somewhere' })).toEqual([
      '/somewhere/data/cifar10',
      '/usr/share/datasets/cifar10',
    ]);
    expect(datasetSearchPaths('cifar100', { cwd: '/somewhere', dataDir: 'c' })).toEqual(['/somewhere/c']);
  });

  it('loads ./data/<name> (files in its archive subdirectory) from the working directory', async () => {
    const cwd = join(root, 'cwd');
    writeCifarFiles(join(cwd, 'data', 'cifar100'), { name: 'cifar100', trainPerFile: 4, test: 2 });
    const ds = await loadDataset({ name: 'cifar100', cwd, seed: 1 });
    expect(ds.source).toBe(join(cwd, 'data', 'cifar100', 'cifar-100-binary'));
  });

  it('refuses a searched directory that holds only part of the dataset', async () => {
    const cwd = join(root, 'cwd-partial');
    writeCifarFiles(join(cwd, 'data', 'cifar10'), {
      name: 'cifar10',
      trainPerFile: 2,
      test: 2,
      omit: ['data_batch_1.bin'],
    });
    const error = await rejection(loadDataset({ name: 'cifar10', cwd, seed: 1 }));
    expect(error).toBeInstanceOf(DataError);
    expect(error.message).toContain('holds only part of the dataset: missing cifar-10-batches-bin/data_batch_1.bin');
  });

  const system = existsSync('/usr/share/datasets/cifar10');
  const title = 'lists every place searched and says how to download the data when nothing is found';
  it.skipIf(system)(
    system ? `${title} (skipped: /usr/share/datasets/cifar10 exists, so it is always found)` : title,
    async () => {
      const cwd = join(root, 'cwd-empty');
      mkdirSync(cwd, { recursive: true });
      const error = await rejection(loadDataset({ name: 'cifar10', cwd, seed: 1 }));
      expect(error).toBeInstanceOf(DataError);
      expect(error.message).toContain('cifar10: dataset files not found. Searched:');
      expect(error.message).toContain(`${join(cwd, 'data', 'cifar10')} (no such directory)`);
      expect(error.message).toContain('/usr/share/datasets/cifar10 (no such directory)');
      expect(error.message).toContain(
        `download it with 'batchlab data fetch cifar10' (into ${join(cwd, 'data', 'cifar10')})`,
      );
    },
  );
});
