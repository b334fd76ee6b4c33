// The dataset fingerprint covers every byte of every array: one flipped byte anywhere, even
// where a strided sample would not look, gives another fingerprint and names the file. File
// digests are cached on disk by the file's identity and hashed again when the file changes.

import { readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dataCacheDir, readDigested } from '../../../shared/data/digest-cache.js';
import { firstDifferingFile, sha256Hex } from '../../../shared/data/fingerprint.js';
import { readIdxBytes } from '../../../shared/data/idx.js';
import { loadDataset } from '../../../shared/data/index.js';
import { writeTinyIdxDataset } from './idx-fixture.js';

let root: string;
const savedCache = process.env.XDG_CACHE_HOME;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'batchlab-fingerprint-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});
beforeEach(() => {
  process.env.XDG_CACHE_HOME = join(root, `cache-${Math.random().toString(36).slice(2)}`);
});
afterEach(() => {
  if (savedCache === undefined) delete process.env.XDG_CACHE_HOME;
  else process.env.XDG_CACHE_HOME = savedCache;
});

const load = (dir: string) => loadDataset({ name: 'fashion-mnist', dataDir: dir, seed: 1 });

/** Rewrites a gzip'd IDX file with the low bit of byte `offset` of its uncompressed contents flipped. */
function flipByte(file: string, offset: number): void {
  const raw = gunzipSync(readFileSync(file));
  raw[offset] = raw[offset]! ^ 1;
  writeFileSync(file, gzipSync(raw));
}

describe('dataset fingerprint', () => {
  it('changes with any single byte of any file, and the differing file is the one named', async () => {
    const base = join(root, 'base');
    await writeTinyIdxDataset(base, { train: 200, test: 10 });
    const original = await load(base);
    expect(original.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(original.files.map((f) => f.name)).toEqual([
      'train-images-idx3-ubyte',
      'train-labels-idx1-ubyte',
      't10k-images-idx3-ubyte',
      't10k-labels-idx1-ubyte',
    ]);
    // Headers are 16 (images) and 8 (labels) bytes. With 200 training images (156 800 pixel
    // bytes) a sample of 65 536 bytes would take every third: these train-images pixels are
    // ones such a sample skips.
    const cases: [string, number][] = [
      ['train-images-idx3-ubyte', 16 + 1],
      ['train-images-idx3-ubyte', 16 + 200 * 784 - 3],
      ['train-images-idx3-ubyte', 16 + 12_346],
      ['train-labels-idx1-ubyte', 8 + 199],
      ['t10k-images-idx3-ubyte', 16 + 5000],
      ['t10k-labels-idx1-ubyte', 8 + 0],
    ];
    const seen = new Set([original.fingerprint]);
    for (const [name, offset] of cases) {
      const dir = join(root, `${name}-${offset}`);
      await writeTinyIdxDataset(dir, { train: 200, test: 10 });
      flipByte(join(dir, `${name}.gz`), offset);
      const changed = await load(dir);
      expect(seen.has(changed.fingerprint), `${name} byte ${offset}`).toBe(false);
      seen.add(changed.fingerprint);
      expect(firstDifferingFile(changed.files, original.files)?.name).toBe(name);
    }
    // The same bytes, plain instead of gzip'd: the same data, the same fingerprint.
    const plain = join(root, 'plain');
    await writeTinyIdxDataset(plain, { train: 200, test: 10, gzip: false });
    expect((await load(plain)).fingerprint).toBe(original.fingerprint);
  });

  it('covers every byte of the generated synthetic data too', async () => {
    const a = await loadDataset({ name: 'synthetic', seed: 3, syntheticTrain: 50, syntheticTest: 20 });
    const b = await loadDataset({ name: 'synthetic', seed: 3, syntheticTrain: 50, syntheticTest: 20 });
    expect(b.fingerprint).toBe(a.fingerprint);
    expect(b.files).toEqual(a.files);
    expect(a.files.map((f) => f.name)).toEqual(['train-images', 'train-labels', 'test-images', 'test-labels']);
  });
});

describe('file digest cache', () => {
  it('is used on the second read and invalidated when the file changes, even with size and mtime kept', async () => {
    const dir = join(root, 'cached');
    await writeTinyIdxDataset(dir, { train: 30, gzip: false });
    const file = join(dir, 'train-images-idx3-ubyte');
    const first = await readDigested(file, readIdxBytes);
    expect(first.cached).toBe(false);
    expect(first.sha256).toBe(sha256Hex(readFileSync(file)));
    const second = await readDigested(file, readIdxBytes);
    expect(second).toMatchObject({ cached: true, sha256: first.sha256 });

    // Same length, one byte different, modification time put back: still hashed again.
    const { mtime, size } = statSync(file);
    const raw = readFileSync(file);
    raw[16 + 100] = (raw[16 + 100]! + 1) % 256;
    writeFileSync(file, raw);
    utimesSync(file, mtime, mtime);
    expect(statSync(file)).toMatchObject({ mtime, size });
    const third = await readDigested(file, readIdxBytes);
    expect(third.cached).toBe(false);
    expect(third.sha256).toBe(sha256Hex(raw));
    expect(third.sha256).not.toBe(first.sha256);
  });

  it('never trusts an entry written for another file', async () => {
    const [one, two] = [join(root, 'entry-one'), join(root, 'entry-two')];
    await writeTinyIdxDataset(one);
    await writeTinyIdxDataset(two, { train: 21 });
    const fileOne = join(one, 'train-images-idx3-ubyte.gz');
    const fileTwo = join(two, 'train-images-idx3-ubyte.gz');
    const digestOne = (await readDigested(fileOne, readIdxBytes)).sha256;
    const digestTwo = (await readDigested(fileTwo, readIdxBytes)).sha256;
    // Put file one's entry where file two's belongs.
    const entries = join(dataCacheDir()!, 'digests');
    const entryOf = (file: string) => join(entries, `${sha256Hex(file)}.json`);
    writeFileSync(entryOf(fileTwo), readFileSync(entryOf(fileOne)));
    const again = await readDigested(fileTwo, readIdxBytes);
    expect(again).toMatchObject({ cached: false, sha256: digestTwo });
    expect(digestTwo).not.toBe(digestOne);
  });

  it('a load writes the digests, so the next process reuses them', async () => {
    const dir = join(root, 'load-writes');
    await writeTinyIdxDataset(dir, { train: 25 });
    const ds = await load(dir);
    for (const f of ds.files) {
      expect(await readDigested(f.path!, readIdxBytes)).toMatchObject({ cached: true, sha256: f.sha256 });
    }
  });
});
