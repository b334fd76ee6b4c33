// The dataset registry: the explicit list of datasets the trainer can load, how each is
// found, and a one-line description for logs.

import { existsSync } from 'node:fs';
import type { Dataset, DatasetOptions } from './dataset.js';
import { IDX_FILE_NAMES, loadIdxDataset, scanIdxDirectory } from './idx-dataset.js';
import { datasetSearchPaths, embeddedSubsetDir, type FileDatasetName } from './search-paths.js';
import { makeSyntheticDataset } from './synthetic.js';

export { DATASET_NAMES, gatherSamples, isDatasetName, sampleSize } from './dataset.js';
export type { Dataset, DatasetName, DatasetOptions, Split } from './dataset.js';
export { datasetSearchPaths, findPackageRoot, embeddedSubsetDir } from './search-paths.js';
export type { FileDatasetName } from './search-paths.js';
export { SYNTHETIC_DEFAULT_TEST, SYNTHETIC_DEFAULT_TRAIN } from './synthetic.js';

/**
 * Loads a dataset by name.
 *
 * - `synthetic`: generated from `opts.seed` (`syntheticTrain`/`syntheticTest` samples);
 *   `dataDir` is ignored.
 * - `fashion-mnist`, `mnist`: the four standard IDX files (each gzip'd or plain) from the
 *   first directory of {@link datasetSearchPaths} that holds them: `opts.dataDir` alone when
 *   given, else `<cwd>/data/<name>`, `/usr/share/datasets/<name>`, and for fashion-mnist the
 *   subset embedded in this package.
 *
 * @throws Error when `opts.dataDir` lacks the files (naming the directory and the files), when
 *   a searched directory holds only some of the files, when no directory holds them (listing
 *   every place searched and how to fix it), or when a file is invalid (naming the file)
 */
export async function loadDataset(opts: DatasetOptions): Promise<Dataset> {
  switch (opts.name) {
    case 'synthetic':
      return makeSyntheticDataset({ seed: opts.seed, train: opts.syntheticTrain, test: opts.syntheticTest });
    case 'fashion-mnist':
    case 'mnist':
      return loadFileDataset(opts.name, opts);
    default: {
      const name: never = opts.name;
      throw new Error(`unknown dataset ${JSON.stringify(name)}; expected one of synthetic, fashion-mnist, mnist`);
    }
  }
}

/** One line for logs, e.g. `fashion-mnist: 60000 train / 10000 test from /usr/share/datasets/fashion-mnist`. */
export function describeDataset(ds: Dataset): string {
  return `${ds.name}: ${ds.train.count} train / ${ds.test.count} test from ${ds.source}`;
}

async function loadFileDataset(name: FileDatasetName, opts: DatasetOptions): Promise<Dataset> {
  const dirs = datasetSearchPaths(name, opts);
  const embedded = embeddedSubsetDir();
  const fileList = Object.values(IDX_FILE_NAMES)
    .map((f) => `${f}.gz`)
    .join(', ');
  if (opts.dataDir !== undefined) {
    // With --data-dir the search is that one resolved directory.
    const dir = dirs[0]!;
    if (!existsSync(dir))
      throw new Error(
        `${name}: data directory ${dir} (from --data-dir) does not exist; expected it to hold ${fileList}`,
      );
    const scan = scanIdxDirectory(dir);
    if (!scan.complete) {
      throw new Error(
        `${name}: data directory ${dir} (from --data-dir) is missing ${scan.missing.join(', ')}; expected ${fileList} (with or without .gz)`,
      );
    }
    return loadIdxDataset(name, scan.files, dir);
  }
  const searched: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) {
      searched.push(`  ${dir} (no such directory)`);
      continue;
    }
    const scan = scanIdxDirectory(dir);
    if (scan.complete) return loadIdxDataset(name, scan.files, dir === embedded ? `${dir} (embedded subset)` : dir);
    if (scan.found.length > 0) {
      throw new Error(
        `${name}: ${dir} holds only part of the dataset: missing ${scan.missing.join(', ')}; add them or remove the directory, or pass --data-dir`,
      );
    }
    searched.push(`  ${dir} (none of the files)`);
  }
  const fix =
    name === 'fashion-mnist'
      ? `install Debian's copy (apt-get install dataset-fashion-mnist), put ${fileList} in ${dirs[0]}, or pass --data-dir DIR`
      : `put ${fileList} in ${dirs[0]}, or pass --data-dir DIR pointing at a directory holding them`;
  throw new Error(`${name}: dataset files not found. Searched:\n${searched.join('\n')}\nTo fix: ${fix}.`);
}
