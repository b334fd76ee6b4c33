// loadIdxDataset keeps its last load: a process that trains several times (sweep, bench) reads
// the files once, and reads them again as soon as any file changes or a load failed.

import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDataset } from '../../../shared/data/index.js';
import { writeTinyIdxDataset } from './idx-fixture.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'batchlab-idx-cache-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const load = (dir: string) => loadDataset({ name: 'fashion-mnist', dataDir: dir, seed: 1 });

describe('loadIdxDataset cache', () => {
  it('returns the same dataset object for the same unchanged files, whatever the seed', async () => {
    const dir = join(root, 'same');
    await writeTinyIdxDataset(dir);
    const a = await load(dir);
    const b = await loadDataset({ name: 'fashion-mnist', dataDir: dir, seed: 2 });
    expect(b).toBe(a);
  });

  it('reads the files again when one changes size, or only its modification time', async () => {
    const dir = join(root, 'changing');
    await writeTinyIdxDataset(dir, { train: 20 });
    const first = await load(dir);
    await writeTinyIdxDataset(dir, { train: 30 });
    const bigger = await load(dir);
    expect(bigger).not.toBe(first);
    expect(bigger.train.count).toBe(30);
    const later = new Date(Date.now() + 60_000);
    utimesSync(join(dir, 'train-labels-idx1-ubyte.gz'), later, later);
    const touched = await load(dir);
    expect(touched).not.toBe(bigger);
    expect(touched.fingerprint).toBe(bigger.fingerprint);
  });

  it('keeps only the last load: another directory in between means reading again', async () => {
    const [one, two] = [join(root, 'one'), join(root, 'two')];
    await writeTinyIdxDataset(one);
    await writeTinyIdxDataset(two, { train: 12 });
    const a = await load(one);
    expect((await load(two)).train.count).toBe(12);
    const again = await load(one);
    expect(again).not.toBe(a);
    expect(again.fingerprint).toBe(a.fingerprint);
  });

  it('does not remember a failed load: the same files, read again once fixed, load', async () => {
    const dir = join(root, 'broken');
    await writeTinyIdxDataset(dir);
    const labels = join(dir, 'train-labels-idx1-ubyte.gz');
    const good = readFileSync(labels);
    // Corrupt the gzip magic without changing the size, and keep the modification time fixed:
    // the broken and the fixed file have the same cache key, so a remembered failure would show.
    const broken = Buffer.from(good);
    broken[0] = 0;
    const fixedTime = new Date(2026, 0, 1);
    writeFileSync(labels, broken);
    utimesSync(labels, fixedTime, fixedTime);
    await expect(load(dir)).rejects.toThrow(/train-labels-idx1-ubyte\.gz/);
    writeFileSync(labels, good);
    utimesSync(labels, fixedTime, fixedTime);
    expect((await load(dir)).train.count).toBe(20);
  });
});
