// The on-disk cache of data file digests, so a second run over the same files does not hash
// them again. An entry is trusted only for the same absolute path whose identity (device,
// inode, size, modification and change times in nanoseconds) is unchanged, both before and
// after the file was read: rewriting a file in place, replacing it, or restoring its mtime
// (`cp -p`, `touch -d`) changes the change time, so the file is hashed again.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { sha256Hex } from './fingerprint.js';

/** Bumped when what a digest covers changes: older entries are then ignored. */
const CACHE_VERSION = 1;

/** The cache directory: `$XDG_CACHE_HOME/batchlab`, else `~/.cache/batchlab`; null without a home. */
export function dataCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.XDG_CACHE_HOME) return join(resolve(env.XDG_CACHE_HOME), 'batchlab');
  let home: string;
  try {
    home = homedir();
  } catch {
    return null;
  }
  return home ? join(home, '.cache', 'batchlab') : null;
}

/** A file's identity: changes whenever its contents can have changed. */
export async function fileIdentity(path: string): Promise<string> {
  const s = await stat(path, { bigint: true });
  return [s.dev, s.ino, s.size, s.mtimeNs, s.ctimeNs].join(':');
}

/** The last dataset loaded through {@link loadRememberingLast}, by its files' identity. */
let lastLoaded: { key: string; loading: Promise<unknown> } | null = null;

/**
 * `load()`, or the result of the last call when it had the same `what` and the same `paths` with
 * unchanged identities (device, inode, size, modification and change times). A failed load is
 * not remembered. Only the last load is kept, whatever the dataset.
 */
export async function loadRememberingLast<T>(
  what: unknown,
  paths: readonly string[],
  load: () => Promise<T>,
): Promise<T> {
  const identities = await Promise.all(paths.map(async (path) => [path, await fileIdentity(path)]));
  const key = JSON.stringify([what, ...identities]);
  if (lastLoaded?.key !== key) {
    const loading = load();
    lastLoaded = { key, loading };
    loading.catch(() => {
      if (lastLoaded?.loading === loading) lastLoaded = null;
    });
  }
  return lastLoaded.loading as Promise<T>;
}

interface Entry {
  version: number;
  path: string;
  identity: string;
  sha256: string;
}

/** What {@link readDigested} read, its SHA-256, and whether the digest came from the cache. */
export interface Digested {
  bytes: Uint8Array;
  sha256: string;
  cached: boolean;
}

/**
 * Reads a file with `read` (which may decode it, e.g. gunzip) and returns the SHA-256 of what it
 * returned: from the cache when the file is unchanged since it was last hashed, else computed
 * (and stored, when the file did not change while being read). Cache errors are ignored.
 */
export async function readDigested(path: string, read: (path: string) => Promise<Uint8Array>): Promise<Digested> {
  const absolute = resolve(path);
  const before = await fileIdentity(absolute);
  const bytes = await read(path);
  const stable = (await fileIdentity(absolute)) === before;
  const dir = dataCacheDir();
  const entryFile = dir === null ? null : join(dir, 'digests', `${sha256Hex(absolute)}.json`);
  if (stable && entryFile !== null) {
    const entry = readEntry(entryFile);
    if (entry !== null && entry.path === absolute && entry.identity === before) {
      return { bytes, sha256: entry.sha256, cached: true };
    }
  }
  const sha256 = sha256Hex(bytes);
  if (stable && entryFile !== null) {
    writeEntry(entryFile, { version: CACHE_VERSION, path: absolute, identity: before, sha256 });
  }
  return { bytes, sha256, cached: false };
}

function readEntry(file: string): Entry | null {
  try {
    const entry = JSON.parse(readFileSync(file, 'utf8')) as Partial<Entry>;
    const valid =
      entry.version === CACHE_VERSION &&
      typeof entry.path === 'string' &&
      typeof entry.identity === 'string' &&
      typeof entry.sha256 === 'string' &&
      /^[0-9a-f]{64}$/.test(entry.sha256);
    return valid ? (entry as Entry) : null;
  } catch {
    return null;
  }
}

/** Written to a temporary name and renamed, so a reader never sees half an entry. */
function writeEntry(file: string, entry: Entry): void {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(join(file, '..'), { recursive: true });
    writeFileSync(temporary, JSON.stringify(entry));
    renameSync(temporary, file);
  } catch {
    // A read-only or full cache directory only costs the next run the hashing.
  }
}
