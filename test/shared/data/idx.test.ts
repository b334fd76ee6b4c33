// IDX reading and writing: gzip and plain round trips, and refusal of corrupt files.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeIdx,
  encodeIdx,
  isGzip,
  readIdxFile,
  readIdxImages,
  readIdxLabels,
  writeIdxFile,
} from '../../../shared/data/idx.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'batchlab-idx-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const images = { dims: [3, 2, 4], data: Uint8Array.from({ length: 24 }, (_, i) => (i * 37) % 256) };
const labels = { dims: [3], data: Uint8Array.from([7, 0, 9]) };

describe('IDX files', () => {
  it('round-trips images and labels through gzip-compressed files', async () => {
    await writeIdxFile(join(dir, 'img.gz'), images);
    await writeIdxFile(join(dir, 'lbl.gz'), labels);
    expect(isGzip(await readFile(join(dir, 'img.gz')))).toBe(true);
    const read = await readIdxImages(join(dir, 'img.gz'));
    expect(read).toMatchObject({ count: 3, rows: 2, cols: 4 });
    expect(Array.from(read.pixels)).toEqual(Array.from(images.data));
    expect(Array.from(await readIdxLabels(join(dir, 'lbl.gz')))).toEqual([7, 0, 9]);
  });

  it('round-trips images and labels through plain files', async () => {
    await writeIdxFile(join(dir, 'img'), images);
    await writeIdxFile(join(dir, 'lbl'), labels);
    const bytes = await readFile(join(dir, 'img'));
    expect(isGzip(bytes)).toBe(false);
    expect(Array.from(bytes.subarray(0, 4))).toEqual([0, 0, 8, 3]);
    expect(bytes.length).toBe(16 + 24);
    const read = await readIdxFile(join(dir, 'img'));
    expect(read.dims).toEqual([3, 2, 4]);
    expect(Array.from(read.data)).toEqual(Array.from(images.data));
    expect(Array.from(await readIdxLabels(join(dir, 'lbl')))).toEqual([7, 0, 9]);
  });

  it('detects gzip by content, not by file name', async () => {
    await writeIdxFile(join(dir, 'gzipped-without-suffix'), labels, { gzip: true });
    await writeIdxFile(join(dir, 'plain.gz'), labels, { gzip: false });
    expect(Array.from(await readIdxLabels(join(dir, 'gzipped-without-suffix')))).toEqual([7, 0, 9]);
    expect(Array.from(await readIdxLabels(join(dir, 'plain.gz')))).toEqual([7, 0, 9]);
    expect(decodeIdx(gzipSync(encodeIdx(images)), 'in-memory', 3).dims).toEqual([3, 2, 4]);
  });

  it('writes identical bytes for identical data', async () => {
    await writeIdxFile(join(dir, 'a.gz'), images);
    await writeIdxFile(join(dir, 'b.gz'), images);
    expect(await readFile(join(dir, 'a.gz'))).toEqual(await readFile(join(dir, 'b.gz')));
  });

  it('refuses a truncated plain file, naming the file and the expected and found lengths', async () => {
    const path = join(dir, 'truncated-idx3-ubyte');
    await writeFile(path, encodeIdx(images).subarray(0, 30));
    await expect(readIdxImages(path)).rejects.toThrow(
      `IDX file ${path}: expected 40 bytes (16-byte header + 3 × 2 × 4 data), found 30; file is truncated`,
    );
  });

  it('refuses a truncated gzip file, naming the file', async () => {
    const path = join(dir, 'truncated.gz');
    const gz = gzipSync(encodeIdx(images));
    await writeFile(path, gz.subarray(0, gz.length - 12));
    await expect(readIdxImages(path)).rejects.toThrow(
      new RegExp(`^IDX file ${path}: expected a valid gzip stream, found corrupt or truncated gzip data`),
    );
  });

  it('refuses a file with trailing bytes', () => {
    const bytes = new Uint8Array([...encodeIdx(labels), 1, 2]);
    expect(() => decodeIdx(bytes, 'x-labels', 1)).toThrow(
      'IDX file x-labels: expected 11 bytes (8-byte header + 3 data), found 13; file has trailing bytes',
    );
  });

  it('refuses a file whose magic number is not IDX', () => {
    const bytes = new TextEncoder().encode('<html>not found</html>');
    expect(() => decodeIdx(bytes, 'page.html')).toThrow(
      'IDX file page.html: expected magic number 0x0000080N (IDX, unsigned bytes, N dimensions), found 0x3c68746d',
    );
  });

  it('refuses non-byte element types', () => {
    const bytes = Uint8Array.from([0, 0, 0x0d, 1, 0, 0, 0, 0]);
    expect(() => decodeIdx(bytes, 'floats')).toThrow(
      'IDX file floats: expected element type 0x08 (unsigned byte), found 0x0d (float32)',
    );
  });

  it('refuses a labels file where images are expected', async () => {
    await writeIdxFile(join(dir, 'labels-not-images'), labels);
    await expect(readIdxImages(join(dir, 'labels-not-images'))).rejects.toThrow(
      `IDX file ${join(dir, 'labels-not-images')}: expected 3 dimension(s) (magic 0x00000803), found 1 (magic 0x00000801)`,
    );
  });

  it('refuses a file too short to hold its header', () => {
    expect(() => decodeIdx(Uint8Array.from([0, 0, 8]), 'tiny')).toThrow(
      'IDX file tiny: expected at least a 4-byte header, found 3 bytes',
    );
    expect(() => decodeIdx(Uint8Array.from([0, 0, 8, 3, 0, 0, 0, 1]), 'short')).toThrow(
      'IDX file short: expected a 16-byte header for 3 dimension(s), found only 8 bytes',
    );
  });

  it('refuses to encode data whose length does not match the dimensions', () => {
    expect(() => encodeIdx({ dims: [2, 2], data: new Uint8Array(3) })).toThrow(RangeError);
  });
});
