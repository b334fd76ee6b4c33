// The dataset registry: the explicit list of datasets the trainer can load, how each is
// found, and a one-line description for logs.

import { existsSync } from 'node:fs';
import type { Dataset, DatasetOptions } from './dataset.js';
import { DataError } from '../errors.js';
import { CIFAR, cifarFileNames, loadCifarDataset, scanCifarDirectory, type CifarName } from './cifar.js';
import { DATASET_NAMES } from './dataset.js';
import { IDX_FILE_NAMES, loadIdxDataset, scanIdxDirectory, type IdxDatasetName } from './idx-dataset.js';
import { datasetSearchPaths, embeddedSubsetDir, type FileDatasetName } from './search-paths.js';
import { makeSyntheticDataset } from './synthetic.js';

export { DATASET_NAMES, gatherSamples, isDatasetName, sampleSize } from './dataset.js';
export type { Dataset, DatasetName, DatasetOptions, Split } from './dataset.js';
export { datasetSearchPaths, findPackageRoot, embeddedSubsetDir } from './search-paths.js';
export type { FileDatasetName } from './search-paths.js';
export { CIFAR, CIFAR_NAMES, isCifarName, scanCifarDirectory } from './cifar.js';
export type { CifarName } from './cifar.js';
export { SYNTHETIC_DEFAULT_TEST, SYNTHETIC_DEFAULT_TRAIN } from './synthetic.js';

/**
 * Loads a dataset by name.
 *
 * - `synthetic`: generated from `opts.seed` (`syntheticTrain`/`syntheticTest` samples);
 *   `dataDir` is ignored.
 * - `fashion-mnist`, `mnist`: the four standard IDX files (each gzip'd or plain);
 *   `cifar10`, `cifar100`: the binary distribution's .bin files, in the directory itself or in
 *   the archive's subdirectory (`cifar-10-batches-bin/`, `cifar-100-binary/`). Each from the
 *   first directory of {@link datasetSearchPaths} that holds them: `opts.dataDir` alone when
 *   given, else `<cwd>/data/<name>`, `/usr/share/datasets/<name>`, and for fashion-mnist the
 *   subset embedded in this package.
 *
 * @throws DataError when `opts.dataDir` lacks the files (naming the directory and the files), when
 *   a searched directory holds only some of the files, when no directory holds them (listing
 *   every place searched and how to get them), or when a CIFAR file is invalid (naming the file);
 *   Error naming the file when an IDX file is invalid
 */
export async function loadDataset(opts: DatasetOptions): Promise<Dataset> {
  switch (opts.name) {
    case 'synthetic':
      return makeSyntheticDataset({ seed: opts.seed, train: opts.syntheticTrain, test: opts.syntheticTest });
    case 'fashion-mnist':
    case 'mnist':
      return loadFileDataset(opts.name, opts, idxFormat(opts.name));
    case 'cifar10':
    case 'cifar100':
      return loadFileDataset(opts.name, opts, cifarFormat(opts.name));
    default: {
      const name: never = opts.name;
      throw new Error(`unknown dataset ${JSON.stringify(name)}; expected one of ${DATASET_NAMES.join(', ')}`);
    }
  }
}

/** One line for logs, e.g. `fashion-mnist: 60000 train / 10000 test from /usr/share/datasets/fashion-mnist`. */
export function describeDataset(ds: Dataset): string {
  return `${ds.name}: ${ds.train.count} train / ${ds.test.count} test from ${ds.source}`;
}

/** What a directory holds: everything (and how to load it), or which files are found and missing. */
type DirectoryScan =
  | { complete: true; load: (source: string) => Promise<Dataset> }
  | { complete: false; found: string[]; missing: string[] };

/** How a file-backed dataset is stored: what a directory must hold, and how to get it. */
interface FileFormat {
  /** The files a directory must hold, for messages. */
  expected: string;
  scan: (dir: string) => DirectoryScan;
  /** How to get the files, given the first directory searched. */
  fix: (firstDir: string) => string;
}

function idxFormat(name: IdxDatasetName): FileFormat {
  const fileList = Object.values(IDX_FILE_NAMES)
    .map((f) => `${f}.gz`)
    .join(', ');
  return {
    expected: `${fileList} (with or without .gz)`,
    scan: (dir) => {
      const scan = scanIdxDirectory(dir);
      return scan.complete ? { complete: true, load: (source) => loadIdxDataset(name, scan.files, source) } : scan;
    },
    fix: (firstDir) =>
      name === 'fashion-mnist'
        ? `install Debian's copy (apt-get install dataset-fashion-mnist), put ${fileList} in ${firstDir}, or pass --data-dir DIR`
        : `put ${fileList} in ${firstDir}, or pass --data-dir DIR pointing at a directory holding them`,
  };
}

function cifarFormat(name: CifarName): FileFormat {
  const { subdir } = CIFAR[name];
  return {
    expected: `${cifarFileNames(name).join(', ')} (in the directory or in its ${subdir}/)`,
    scan: (dir) => {
      const scan = scanCifarDirectory(name, dir);
      return scan.complete
        ? { complete: true, load: (source) => loadCifarDataset(name, scan.files, scan.dir === dir ? source : scan.dir) }
        : scan;
    },
    fix: (firstDir) =>
      `download it with 'batchlab data fetch ${name}' (into ${firstDir}), or 'batchlab data fetch ${name} --dir DIR' and pass --data-dir DIR`,
  };
}

async function loadFileDataset(name: FileDatasetName, opts: DatasetOptions, format: FileFormat): Promise<Dataset> {
  const dirs = datasetSearchPaths(name, opts);
  const embedded = embeddedSubsetDir();
  if (opts.dataDir !== undefined) {
    // With --data-dir the search is that one resolved directory.
    const dir = dirs[0]!;
    if (!existsSync(dir))
      throw new DataError(
        `${name}: data directory ${dir} (from --data-dir) does not exist; expected it to hold ${format.expected}. To fix: ${format.fix(dir)}.`,
      );
    const scan = format.scan(dir);
    if (!scan.complete) {
      throw new DataError(
        `${name}: data directory ${dir} (from --data-dir) is missing ${scan.missing.join(', ')}; expected ${format.expected}. To fix: ${format.fix(dir)}.`,
      );
    }
    return scan.load(dir);
  }
  const searched: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) {
      searched.push(`  ${dir} (no such directory)`);
      continue;
    }
    const scan = format.scan(dir);
    if (scan.complete) return scan.load(dir === embedded ? `${dir} (embedded subset)` : dir);
    if (scan.found.length > 0) {
      throw new DataError(
        `${name}: ${dir} holds only part of the dataset: missing ${scan.missing.join(', ')}; add them or remove the directory, or pass --data-dir`,
      );
    }
    searched.push(`  ${dir} (none of the files)`);
  }
  throw new DataError(
    `${name}: dataset files not found. Searched:\n${searched.join('\n')}\nTo fix: ${format.fix(dirs[0]!)}.`,
  );
}
