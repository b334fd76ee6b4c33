// Builds the Fashion-MNIST subset embedded in assets/fashion-mnist-subset: the first N train and
// M test samples of the full set as gzip'd IDX files, plus a README on where they came from.
// Usage: node dist/scripts/make-fashion-mnist-subset.js [SOURCE_DIR] [--out DIR] [--train N] [--test M]

import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CLASS_NAMES as DATASET_CLASS_NAMES, IDX_FILE_NAMES, scanIdxDirectory } from '../shared/data/idx-dataset.js';
import { readIdxImages, readIdxLabels, writeIdxFile } from '../shared/data/idx.js';
import { EMBEDDED_SUBSET_DIR, SYSTEM_DATASETS_DIR, findPackageRoot } from '../shared/data/search-paths.js';

/** Defaults chosen so the four gzip'd files stay near 4 MB (Fashion-MNIST compresses poorly). */
const DEFAULT_TRAIN = 8000;
const DEFAULT_TEST = 1500;
/** Each class must hold within this fraction of an even share, or the subset is refused. */
const BALANCE_TOLERANCE = 0.2;
const CLASS_NAMES = DATASET_CLASS_NAMES['fashion-mnist'];

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      train: { type: 'string', default: String(DEFAULT_TRAIN) },
      test: { type: 'string', default: String(DEFAULT_TEST) },
    },
  });
  const sourceDir = resolve(positionals[0] ?? join(SYSTEM_DATASETS_DIR, 'fashion-mnist'));
  const root = findPackageRoot();
  if (values.out === undefined && root === undefined)
    throw new Error('cannot find the package root from this script; pass --out DIR');
  const outDir = resolve(values.out ?? join(root as string, EMBEDDED_SUBSET_DIR));
  const counts = { train: positiveInt('--train', values.train), test: positiveInt('--test', values.test) };

  const scan = scanIdxDirectory(sourceDir);
  if (!scan.complete) {
    throw new Error(
      `${sourceDir} is missing ${scan.missing.join(', ')}; pass the directory holding the full Fashion-MNIST files (apt-get install dataset-fashion-mnist)`,
    );
  }
  await mkdir(outDir, { recursive: true });
  const perClass: Record<'train' | 'test', number[]> = { train: [], test: [] };
  const splits = [
    {
      split: 'train',
      images: scan.files.trainImages,
      labels: scan.files.trainLabels,
      imageName: IDX_FILE_NAMES.trainImages,
      labelName: IDX_FILE_NAMES.trainLabels,
    },
    {
      split: 'test',
      images: scan.files.testImages,
      labels: scan.files.testLabels,
      imageName: IDX_FILE_NAMES.testImages,
      labelName: IDX_FILE_NAMES.testLabels,
    },
  ] as const;
  for (const s of splits) {
    const n = counts[s.split];
    const images = await readIdxImages(s.images);
    const labels = await readIdxLabels(s.labels);
    if (images.count < n || labels.length < n)
      throw new Error(`${s.images} holds ${images.count} samples, fewer than the ${n} requested`);
    const size = images.rows * images.cols;
    const subsetLabels = labels.subarray(0, n);
    perClass[s.split] = classCounts(subsetLabels, s.labels);
    console.log(`${s.split}: first ${n} of ${images.count} samples; per class: ${perClass[s.split].join(' ')}`);
    checkBalance(s.split, perClass[s.split], n);
    await writeIdxFile(join(outDir, `${s.imageName}.gz`), {
      dims: [n, images.rows, images.cols],
      data: images.pixels.subarray(0, n * size),
    });
    await writeIdxFile(join(outDir, `${s.labelName}.gz`), { dims: [n], data: subsetLabels });
  }
  await writeFile(join(outDir, 'README.md'), readme(counts, perClass));
  console.log(`wrote ${outDir}`);
}

function positiveInt(flag: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer, got ${text}`);
  return n;
}

function classCounts(labels: Uint8Array, file: string): number[] {
  const counts = new Array<number>(CLASS_NAMES.length).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (label >= counts.length) {
      throw new Error(
        `IDX file ${file}: expected labels 0..${counts.length - 1}, found ${label} at sample ${i}; is this the Fashion-MNIST label file?`,
      );
    }
    counts[label]! += 1;
  }
  return counts;
}

function checkBalance(split: string, counts: number[], n: number): void {
  const even = n / counts.length;
  const off = counts.map((c, k) => ({ c, k })).filter(({ c }) => Math.abs(c - even) > BALANCE_TOLERANCE * even);
  if (off.length > 0) {
    const detail = off.map(({ c, k }) => `class ${k} (${CLASS_NAMES[k]}) has ${c}`).join(', ');
    throw new Error(
      `${split} subset is unbalanced: expected about ${Math.round(even)} per class (±${BALANCE_TOLERANCE * 100}%), but ${detail}`,
    );
  }
}

function readme(counts: { train: number; test: number }, perClass: Record<'train' | 'test', number[]>): string {
  const rows = CLASS_NAMES.map((name, k) => `| ${k} | ${name} | ${perClass.train[k]} | ${perClass.test[k]} |`).join(
    '\n',
  );
  return `# Fashion-MNIST subset

A small slice of [Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist) so batchlab
can train on real images when the full set is not installed: the first ${counts.train} training and
first ${counts.test} test samples of the original files, unchanged, as gzip'd IDX files with the
standard names. The counts keep this directory near 4 MB (Fashion-MNIST compresses only about
2:1). \`loadDataset({ name: 'fashion-mnist' })\` uses it when no \`--data-dir\` is given and
neither \`./data/fashion-mnist\` nor \`/usr/share/datasets/fashion-mnist\` (Debian's
\`dataset-fashion-mnist\` package, the full 60000/10000 set) holds the files.

Made from Debian's \`dataset-fashion-mnist\` files by \`scripts/make-fashion-mnist-subset.ts\`:

    npm run build && node dist/scripts/make-fashion-mnist-subset.js /usr/share/datasets/fashion-mnist --train ${counts.train} --test ${counts.test}

The output is deterministic (gzip level 9, no timestamps). Samples per class:

| label | class | train | test |
| ---: | --- | ---: | ---: |
${rows}

## License

Fashion-MNIST is released under the MIT License by Zalando SE:

    The MIT License (MIT) Copyright © 2017 Zalando SE, https://tech.zalando.com

    Permission is hereby granted, free of charge, to any person obtaining a copy of this
    software and associated documentation files (the "Software"), to deal in the Software
    without restriction, including without limitation the rights to use, copy, modify, merge,
    publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
    to whom the Software is furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all copies or
    substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
    INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
    PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
    FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
    OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
    DEALINGS IN THE SOFTWARE.
`;
}

main().catch((err: unknown) => {
  console.error(`make-fashion-mnist-subset: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
