// Input paths checked before any work starts: a --data-dir, certificate or key that is missing,
// of the wrong kind or unreadable is refused at once (exit 2, the option and the path named)
// instead of failing after the dataset has loaded or the backend has started.

import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { OptionError } from './errors.js';

/** What an option reads: one file, or a directory's contents. */
export type InputKind = 'file' | 'directory';

/**
 * Throws an OptionError naming `option` and `path` when `path` does not exist, is not a `kind`
 * (a directory for a file option, or the reverse), or cannot be read by this process.
 */
export async function checkInputPath(option: string, path: string, kind: InputKind): Promise<void> {
  const refuse = (why: string): never => {
    throw new OptionError(option, path, `a readable ${kind} (${why})`);
  };
  const found = await stat(path).catch((error: NodeJS.ErrnoException) =>
    refuse(error.code === 'ENOENT' ? 'not found' : `cannot be read: ${error.code ?? error.message}`),
  );
  if (kind === 'directory' && !found.isDirectory()) refuse('not a directory');
  if (kind === 'file' && found.isDirectory()) refuse('it is a directory');
  // A directory is read by listing it (r) and opening its files (x).
  const mode = kind === 'directory' ? constants.R_OK | constants.X_OK : constants.R_OK;
  await access(path, mode).catch((error: NodeJS.ErrnoException) =>
    refuse(`not readable: ${error.code ?? error.message}`),
  );
}

/** Checks, in order, each input of `candidates` that was given (an absent or empty path reads nothing). */
export async function checkInputPaths(
  candidates: readonly [option: string, path: string | undefined, kind: InputKind][],
): Promise<void> {
  for (const [option, path, kind] of candidates) if (path) await checkInputPath(option, path, kind);
}
