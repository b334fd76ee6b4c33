// The Fashion-MNIST subset shipped in assets/fashion-mnist-subset: its provenance, size and license note.

import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readIdxImages, readIdxLabels } from '../../../shared/data/idx.js';

const subset = join(import.meta.dirname, '..', '..', '..', 'assets', 'fashion-mnist-subset');
const debian = '/usr/share/datasets/fashion-mnist';
const debianInstalled = existsSync(join(debian, 'train-images-idx3-ubyte.gz'));
const inCi = process.env.CI === 'true';

describe('embedded Fashion-MNIST subset', () => {
  it('ships the four standard gzip files and a README with the MIT license, under 4.2 MB in total', () => {
    const files = readdirSync(subset).sort();
    expect(files).toEqual([
      'README.md',
      't10k-images-idx3-ubyte.gz',
      't10k-labels-idx1-ubyte.gz',
      'train-images-idx3-ubyte.gz',
      'train-labels-idx1-ubyte.gz',
    ]);
    const total = files.reduce((sum, f) => sum + statSync(join(subset, f)).size, 0);
    expect(total).toBeLessThan(4_200_000);
    const readme = readFileSync(join(subset, 'README.md'), 'utf8');
    expect(readme).toContain('MIT License');
    expect(readme).toContain('Zalando SE');
    expect(readme).toContain('make-fashion-mnist-subset');
  });

  // Needs Debian's full set to compare with: skipped without it, with the reason in its name,
  // except under CI=true (.ci/run installs dataset-fashion-mnist), where its absence fails.
  const title = 'holds exactly the first 8000 train and 1500 test samples of the full set';
  it.skipIf(!debianInstalled && !inCi)(
    debianInstalled || inCi
      ? title
      : `${title} (skipped: ${debian} not installed; apt-get install dataset-fashion-mnist)`,
    async () => {
      expect(debianInstalled, `${debian} is required under CI=true (apt-get install dataset-fashion-mnist)`).toBe(true);
      for (const [images, labels, n] of [
        ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 8000],
        ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 1500],
      ] as const) {
        const part = await readIdxImages(join(subset, images));
        const full = await readIdxImages(join(debian, images));
        expect(part.count).toBe(n);
        expect(Buffer.from(part.pixels).equals(Buffer.from(full.pixels.subarray(0, n * 784)))).toBe(true);
        const partLabels = await readIdxLabels(join(subset, labels));
        const fullLabels = await readIdxLabels(join(debian, labels));
        expect(Buffer.from(partLabels).equals(Buffer.from(fullLabels.subarray(0, n)))).toBe(true);
      }
    },
  );
});
