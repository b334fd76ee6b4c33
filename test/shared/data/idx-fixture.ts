// Test fixture: writes a tiny, deterministic MNIST-format dataset (four IDX files) to a directory.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { IDX_FILE_NAMES } from '../../../shared/data/idx-dataset.js';
import { writeIdxFile } from '../../../shared/data/idx.js';

/** Options for {@link writeTinyIdxDataset}. */
export interface TinyIdxOptions {
  train?: number;
  test?: number;
  /** Write `.gz` files (default true) or plain ones. */
  gzip?: boolean;
  /** Leave these standard file names out (to make an incomplete directory). */
  omit?: string[];
}

/** Pixel of sample `i`, position `p` in a tiny split: a fixed pattern that differs per sample. */
export function tinyPixel(i: number, p: number): number {
  return (i * 31 + p * 7) % 256;
}

/**
 * Writes a tiny 28×28 dataset to `dir` (created if needed): label of sample i is i % 10,
 * pixels from {@link tinyPixel}.
 */
export async function writeTinyIdxDataset(dir: string, options: TinyIdxOptions = {}): Promise<void> {
  const { train = 20, test = 10, gzip = true, omit = [] } = options;
  await mkdir(dir, { recursive: true });
  const write = async (base: string, dims: number[], data: Uint8Array) => {
    if (!omit.includes(base)) await writeIdxFile(join(dir, gzip ? `${base}.gz` : base), { dims, data }, { gzip });
  };
  for (const [n, images, labels] of [
    [train, IDX_FILE_NAMES.trainImages, IDX_FILE_NAMES.trainLabels],
    [test, IDX_FILE_NAMES.testImages, IDX_FILE_NAMES.testLabels],
  ] as const) {
    const pixels = new Uint8Array(n * 784);
    for (let i = 0; i < n; i++) for (let p = 0; p < 784; p++) pixels[i * 784 + p] = tinyPixel(i, p);
    await write(images, [n, 28, 28], pixels);
    await write(
      labels,
      [n],
      Uint8Array.from({ length: n }, (_, i) => i % 10),
    );
  }
}
