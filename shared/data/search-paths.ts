// Where file-backed datasets are looked for: an explicit --data-dir, else <cwd>/data/<name>,
// the Debian dataset directory, and (fashion-mnist only) the subset embedded in this package.

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DatasetName, DatasetOptions } from './dataset.js';

/** A file-backed dataset name. */
export type FileDatasetName = Exclude<DatasetName, 'synthetic'>;

/** Directory, under the package root, of the embedded Fashion-MNIST subset. */
export const EMBEDDED_SUBSET_DIR = join('assets', 'fashion-mnist-subset');

/** Where Debian's dataset packages install data (e.g. `dataset-fashion-mnist`). */
export const SYSTEM_DATASETS_DIR = '/usr/share/datasets';

/**
 * The package root: the nearest directory at or above `from` (default: this module's
 * directory, which is `shared/data` in source and `dist/shared/data` when compiled) that
 * contains a package.json; undefined when there is none.
 */
export function findPackageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string | undefined {
  let dir = resolve(from);
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** The embedded Fashion-MNIST subset directory, or undefined when no package root is found. */
export function embeddedSubsetDir(packageRoot: string | undefined = findPackageRoot()): string | undefined {
  return packageRoot === undefined ? undefined : join(packageRoot, EMBEDDED_SUBSET_DIR);
}

/**
 * The directories searched for a file-backed dataset, in order: only `dataDir` when it is
 * given; otherwise `<cwd>/data/<name>`, `/usr/share/datasets/<name>` and, for fashion-mnist,
 * the embedded subset. All paths are absolute.
 * @param packageRoot the package root holding the embedded subset (default: found from this module)
 */
export function datasetSearchPaths(
  name: FileDatasetName,
  opts: Pick<DatasetOptions, 'dataDir' | 'cwd'> = {},
  packageRoot: string | undefined = findPackageRoot(),
): string[] {
  const cwd = resolve(opts.cwd ?? process.cwd());
  if (opts.dataDir !== undefined) return [resolve(cwd, opts.dataDir)];
  const paths = [join(cwd, 'data', name), join(SYSTEM_DATASETS_DIR, name)];
  const embedded = name === 'fashion-mnist' ? embeddedSubsetDir(packageRoot) : undefined;
  if (embedded !== undefined) paths.push(embedded);
  return paths;
}
