// Dataset fingerprints: a SHA-256 over every byte of the data a process trains and evaluates
// on. Each array (train/test images and labels) has its own digest, so a mismatch can name the
// first array that differs; the overall fingerprint hashes the name, shape, class count and
// those digests.

import { createHash } from 'node:crypto';

/** One array of a dataset and the SHA-256 of its bytes. */
export interface DataFile {
  /** Stable name, the same on every host: the IDX base name (e.g. `train-images-idx3-ubyte`). */
  name: string;
  /** SHA-256 (64 hex digits) of the decoded bytes (for IDX files: the uncompressed file). */
  sha256: string;
  /** Where this process read it from (absent for generated data); for messages only. */
  path?: string;
}

/** Version of the fingerprint's layout; part of what is hashed. */
const FINGERPRINT_LAYOUT = 'batchlab-dataset-sha256-v1';

/** SHA-256 of `bytes` as 64 lowercase hex digits. */
export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The bytes of a typed array (no copy). */
export function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/**
 * Fingerprints a dataset: SHA-256 over its name, sample shape, class count and every file's
 * name and digest, in order. Returns 64 hex digits.
 */
export function datasetFingerprint(
  name: string,
  sampleShape: readonly number[],
  numClasses: number,
  files: readonly DataFile[],
): string {
  const hash = createHash('sha256');
  for (const part of [FINGERPRINT_LAYOUT, name, sampleShape.join('x'), String(numClasses)]) hash.update(`${part}\0`);
  for (const file of files) hash.update(`${file.name}\0${file.sha256}\0`);
  return hash.digest('hex');
}

/**
 * The first of `ours` whose digest differs from the file of the same name in `theirs` (or that
 * `theirs` lacks), then the first of `theirs` that `ours` lacks; null when the lists agree.
 */
export function firstDifferingFile(
  ours: readonly DataFile[],
  theirs: readonly { name: string; sha256: string }[],
): { name: string; ours: DataFile | null; theirs: string | null } | null {
  const theirsByName = new Map(theirs.map((f) => [f.name, f.sha256]));
  for (const file of ours) {
    const other = theirsByName.get(file.name);
    if (other !== file.sha256) return { name: file.name, ours: file, theirs: other ?? null };
  }
  const ourNames = new Set(ours.map((f) => f.name));
  const missing = theirs.find((f) => !ourNames.has(f.name));
  return missing ? { name: missing.name, ours: null, theirs: missing.sha256 } : null;
}
