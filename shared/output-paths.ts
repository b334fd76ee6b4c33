// Output paths checked before any work starts: a run that can only fail at its end (a report
// onto a directory, a model onto a file, an unwritable place) is refused at once instead, with
// exit code 2 and the option named, so no training time is lost.

import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { OptionError } from './errors.js';

/** What an option writes: one file (written beside itself as FILE.tmp, then renamed) or a directory's contents. */
export type OutputKind = 'file' | 'directory';

export interface OutputPath {
  /** The option's name without dashes, for the message. */
  option: string;
  path: string;
  kind: OutputKind;
}

/**
 * Throws an OptionError for the first output that cannot be written: a file option naming a
 * directory, a directory option naming a file, a parent that is a file, a place without write
 * permission, or two options naming the same path. Creates nothing.
 */
export async function checkOutputPaths(outputs: readonly OutputPath[]): Promise<void> {
  const seen = new Map<string, string>();
  for (const output of outputs) {
    const absolute = resolve(output.path);
    const other = seen.get(absolute);
    if (other !== undefined)
      throw new OptionError(output.option, output.path, `a path that --${other} does not also write to`);
    seen.set(absolute, output.option);
    await checkOutputPath(output, absolute);
  }
}

async function checkOutputPath({ option, path, kind }: OutputPath, absolute: string): Promise<void> {
  const existing = await stat(absolute).catch(() => null);
  const refuse = (why: string): never => {
    throw new OptionError(option, path, `a ${kind} path it can write (${why})`);
  };
  if (existing) {
    if (kind === 'file' && existing.isDirectory()) refuse('it is a directory');
    if (kind === 'directory' && !existing.isDirectory()) refuse('it is a file');
    if (kind === 'file' && !existing.isFile()) refuse('it is not a regular file');
    // A directory's contents are written in it; a file is replaced by a rename in its directory.
    const where = kind === 'directory' ? absolute : dirname(absolute);
    const denied = await notWritable(where);
    if (denied) refuse(`${where} is not writable: ${denied}`);
    const fileDenied = kind === 'file' ? await notWritable(absolute) : null;
    if (fileDenied) refuse(`the file is not writable: ${fileDenied}`);
    return;
  }
  // Missing: it and any missing parents are created, inside the nearest existing ancestor.
  let ancestor = dirname(absolute);
  for (;;) {
    const found = await stat(ancestor).catch(() => null);
    if (found) {
      if (!found.isDirectory()) refuse(`${ancestor} is a file`);
      const denied = await notWritable(ancestor);
      if (denied) refuse(`${ancestor} is not writable: ${denied}`);
      return;
    }
    const parent = dirname(ancestor);
    if (parent === ancestor) return;
    ancestor = parent;
  }
}

/** Null when this process may write in `path`; else the error code (EACCES, EROFS, …). */
async function notWritable(path: string): Promise<string | null> {
  return access(path, constants.W_OK).then(
    () => null,
    (error: NodeJS.ErrnoException) => error.code ?? error.message,
  );
}

/** The outputs among `candidates` that were given (an absent or empty path writes nothing). */
export function givenOutputs(
  candidates: readonly [option: string, path: string | undefined, kind: OutputKind][],
): OutputPath[] {
  return candidates.filter(([, path]) => Boolean(path)).map(([option, path, kind]) => ({ option, path: path!, kind }));
}
