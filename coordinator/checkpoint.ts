// Checkpoints: everything a run needs to continue with the same result as if never stopped —
// weights, batch-norm moving statistics, optimizer state, step and sample count (the sampler is a function of seed and step),
// the noise-scale EMAs, and the LR settings a resume must not change silently.
//
// Files: DIR/checkpoint-<step, 9 digits>.batchlab, the last `keep` of them (default 2). A save
// writes DIR/checkpoint-<step>.batchlab.tmp with a loop that checks every write, fsyncs it, reads
// it back and compares it byte for byte, renames it to its name, fsyncs DIR, and only then deletes the
// checkpoints older than the newest `keep`. A save that fails (ENOSPC, EMFILE, EIO, a read-only
// volume, a bad read-back) removes its temp file and leaves every earlier checkpoint as it was.
// A load takes the newest file that reads back whole and names each newer one it skipped and why.
// DIR/checkpoint.batchlab (one file, version 1, written by earlier batchlab) is read as the oldest.
//
// Layout: "BLCKPT01" | u32 LE header length | JSON header | pad to 4 | float32 arrays.
// Header version 2 adds `runId` and `schedule` to version 1 (still read: no schedule to compare).
// The header carries a SHA-256 of itself and the array bytes; a torn or edited file is refused.

import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { BatchlabError } from '../shared/errors.js';
import type { LrWindow } from '../shared/lr-schedule.js';
import type { OptimizerState } from '../shared/optimizers/index.js';
import type { ParamSpec } from '../shared/protocol.js';
import type { NoiseScaleState } from '../shared/statistics/noise-scale.js';

const MAGIC = 'BLCKPT01';
/** The array of a batch-norm model's moving statistics. */
const MOVING_STATS = 'batchnorm.moving';
const VERSION = 2;
/** The one file of version-1 checkpoints (read, never written). */
export const LEGACY_CHECKPOINT_FILE = 'checkpoint.batchlab';
const NAME = /^checkpoint-(\d+)\.batchlab$/;
const TEMP = /^checkpoint-\d+\.batchlab\.tmp$/;
/** How many checkpoints a directory keeps unless told otherwise. */
export const DEFAULT_KEEP_CHECKPOINTS = 2;

/** The file name of the checkpoint after `step` steps: checkpoint-000000040.batchlab. */
export function checkpointFileName(step: number): string {
  return `checkpoint-${String(step).padStart(9, '0')}.batchlab`;
}

/** What must match for a checkpoint to continue this run. */
export interface CheckpointIdentity {
  model: string;
  params: ParamSpec[];
  datasetFingerprint: string;
  globalBatchSize: number;
  optimizer: string;
  seed: number;
}

/** The LR settings of a run: a resume refuses a change unless --allow-schedule-change. */
export interface TrainingSchedule {
  lr: number;
  lrScaling: string;
  /** B0 as resolved (the global batch when --base-batch is not given). */
  baseBatch: number;
  warmupSteps: number;
  warmup: string;
  decay: string;
  decayBoundaries: number[];
  decayFactor: number;
  lrWindows: LrWindow[];
  /** The run length (it shapes cosine decay). */
  totalSteps: number;
  weightDecay: number;
  /** null for optimizers that ignore momentum. */
  momentum: number | null;
  nesterov: boolean | null;
}

export interface Checkpoint {
  identity: CheckpointIdentity;
  /** null in a version-1 checkpoint. */
  schedule: TrainingSchedule | null;
  /** The run that wrote it (null in a version-1 checkpoint). */
  runId: string | null;
  stepsDone: number;
  samples: number;
  weights: Float32Array;
  /** A model with batch norm: its moving statistics (shared/batch-norm.ts layout); else null. */
  movingStats?: Float32Array | null;
  optimizerState: OptimizerState;
  noiseState: NoiseScaleState | null;
  /** Wall-clock time it was written (ISO 8601), for the log. */
  writtenAt: string;
}

interface ArrayEntry {
  key: string;
  offset: number;
  length: number;
}

interface Header {
  version: 1 | 2;
  identity: CheckpointIdentity;
  runId?: string | null;
  schedule?: TrainingSchedule | null;
  stepsDone: number;
  samples: number;
  writtenAt: string;
  /** Scalar entries of the optimizer state (e.g. Adam's t). */
  optimizerScalars: Record<string, number>;
  noiseState: NoiseScaleState | null;
  arrays: ArrayEntry[];
  sha256: string;
}

/** SHA-256 over the header (with its own hash field empty) and the array bytes. */
function digestOf(header: Header, body: Uint8Array): string {
  return createHash('sha256')
    .update(JSON.stringify({ ...header, sha256: '' }))
    .update(body)
    .digest('hex');
}

/** Why a file cannot be used (a message without the path). */
class Unusable extends Error {}

/** The file's bytes as one buffer: prefix (magic, header) and body (arrays). */
function encode(checkpoint: Checkpoint): Buffer[] {
  const arrays: [string, Float32Array][] = [['weights', checkpoint.weights]];
  if (checkpoint.movingStats) arrays.push([MOVING_STATS, checkpoint.movingStats]);
  const optimizerScalars: Record<string, number> = {};
  for (const [key, value] of Object.entries(checkpoint.optimizerState)) {
    if (typeof value === 'number') optimizerScalars[key] = value;
    else arrays.push([`optimizer.${key}`, value]);
  }
  const entries: ArrayEntry[] = [];
  let offset = 0;
  for (const [key, values] of arrays) {
    entries.push({ key, offset, length: values.length });
    offset += values.length;
  }
  const body = Buffer.alloc(offset * 4);
  for (const [i, [, values]] of arrays.entries())
    body.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), entries[i]!.offset * 4);
  const header: Header = {
    version: VERSION,
    identity: checkpoint.identity,
    runId: checkpoint.runId,
    schedule: checkpoint.schedule,
    stepsDone: checkpoint.stepsDone,
    samples: checkpoint.samples,
    writtenAt: checkpoint.writtenAt,
    optimizerScalars,
    noiseState: checkpoint.noiseState,
    arrays: entries,
    sha256: '',
  };
  header.sha256 = digestOf(header, body);
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc((8 + 4 + json.length + 3) & ~3);
  prefix.write(MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(json.length, 8);
  json.copy(prefix, 12);
  return [prefix, body];
}

/** Parses a checkpoint file's bytes; throws Unusable saying what is wrong. */
function decode(data: Buffer): Checkpoint {
  if (data.length < 12 || data.toString('latin1', 0, 8) !== MAGIC)
    throw new Unusable(`it does not start with ${MAGIC}`);
  const jsonLength = data.readUInt32LE(8);
  if (12 + jsonLength > data.length)
    throw new Unusable(`header length ${jsonLength} runs past the end of the file (${data.length} bytes)`);
  let header: Header;
  try {
    header = JSON.parse(data.toString('utf8', 12, 12 + jsonLength)) as Header;
  } catch (error) {
    throw new Unusable(`header is not JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || (header.version !== 1 && header.version !== 2))
    throw new Unusable(`version ${header?.version}, this batchlab reads versions 1 and 2`);
  if (!Array.isArray(header.arrays)) throw new Unusable('its header lists no arrays');
  const bodyStart = (12 + jsonLength + 3) & ~3;
  const body = data.subarray(bodyStart);
  if (digestOf(header, body) !== header.sha256)
    throw new Unusable('its contents do not match their SHA-256 (torn write or edited file)');
  const aligned = new Float32Array(body.length / 4);
  new Uint8Array(aligned.buffer).set(body);
  const take = (entry: ArrayEntry): Float32Array => {
    if (entry.offset + entry.length > aligned.length) throw new Unusable(`array ${entry.key} runs past the end`);
    return aligned.slice(entry.offset, entry.offset + entry.length);
  };
  const weightsEntry = header.arrays.find((a) => a.key === 'weights');
  if (!weightsEntry) throw new Unusable('it holds no weights');
  const movingEntry = header.arrays.find((a) => a.key === MOVING_STATS);
  const optimizerState: OptimizerState = { ...header.optimizerScalars };
  for (const entry of header.arrays)
    if (entry.key.startsWith('optimizer.')) optimizerState[entry.key.slice('optimizer.'.length)] = take(entry);
  return {
    identity: header.identity,
    schedule: header.schedule ?? null,
    runId: header.runId ?? null,
    stepsDone: header.stepsDone,
    samples: header.samples,
    weights: take(weightsEntry),
    movingStats: movingEntry ? take(movingEntry) : null,
    optimizerState,
    noiseState: header.noiseState,
    writtenAt: header.writtenAt,
  };
}

/** Writes every byte of `buffers` from the file's start, looping over short writes. */
async function writeFully(handle: FileHandle, buffers: Buffer[]): Promise<void> {
  let position = 0;
  for (const buffer of buffers) {
    let done = 0;
    while (done < buffer.length) {
      const { bytesWritten } = await handle.write(buffer, done, buffer.length - done, position);
      if (bytesWritten <= 0)
        throw Object.assign(new Error(`write stopped at byte ${position} (0 bytes written)`), { code: 'EIO' });
      done += bytesWritten;
      position += bytesWritten;
    }
  }
}

/** fsync of a directory, so that a rename or unlink in it survives a power loss. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function removeQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

/** The reasons a checkpoint write fails, as `batchlab_checkpoint_failures_total{reason}` labels them. */
export const CHECKPOINT_FAILURE_REASONS = [
  'no_space',
  'too_many_files',
  'io_error',
  'read_only',
  'permission',
  'verify',
  'other',
] as const;
export type CheckpointFailureReason = (typeof CHECKPOINT_FAILURE_REASONS)[number];

const REASON_OF_CODE: Record<string, CheckpointFailureReason> = {
  ENOSPC: 'no_space',
  EDQUOT: 'no_space',
  EMFILE: 'too_many_files',
  ENFILE: 'too_many_files',
  EIO: 'io_error',
  EROFS: 'read_only',
  EACCES: 'permission',
  EPERM: 'permission',
};

/** A failed checkpoint write: the reason label and the message for the log. */
export class CheckpointWriteError extends Error {
  constructor(
    readonly reason: CheckpointFailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'CheckpointWriteError';
  }
}

function writeErrorOf(error: unknown, path: string): CheckpointWriteError {
  if (error instanceof CheckpointWriteError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? '';
  return new CheckpointWriteError(REASON_OF_CODE[code] ?? 'other', `${path}: ${(error as Error).message}`);
}

export interface SavedCheckpoint {
  path: string;
  /** Size of the file. */
  bytes: number;
  /** Older checkpoints deleted to keep the newest `keep`. */
  retired: string[];
}

/**
 * Writes `checkpoint` to DIR/checkpoint-<step>.batchlab durably (see the top of this file), then
 * keeps the newest `keep` checkpoints. Throws a CheckpointWriteError and leaves the earlier
 * checkpoints as they were when any part of the write fails.
 */
export async function saveCheckpoint(
  dir: string,
  checkpoint: Checkpoint,
  keep = DEFAULT_KEEP_CHECKPOINTS,
): Promise<SavedCheckpoint> {
  const path = join(dir, checkpointFileName(checkpoint.stepsDone));
  const temp = `${path}.tmp`;
  const buffers = encode(checkpoint);
  const bytes = buffers.reduce((n, b) => n + b.length, 0);
  try {
    await mkdir(dir, { recursive: true });
    // A temp file left by a process killed mid-write would hold space the next write needs.
    for (const name of await readdir(dir)) if (TEMP.test(name)) await removeQuietly(join(dir, name));
    const handle = await open(temp, 'w');
    try {
      await writeFully(handle, buffers);
      await handle.sync();
    } finally {
      await handle.close();
    }
    // Byte for byte against what was written: as strict as its SHA-256, without decoding a copy.
    const back = await readFile(temp);
    if (back.length !== bytes)
      throw new CheckpointWriteError(
        'verify',
        `${temp} read back wrong: ${back.length} bytes on disk, ${bytes} written`,
      );
    let at = 0;
    for (const written of buffers) {
      if (!back.subarray(at, at + written.length).equals(written))
        throw new CheckpointWriteError('verify', `${temp} read back wrong: bytes differ from those written`);
      at += written.length;
    }
    await rename(temp, path);
    await syncDirectory(dir);
  } catch (error) {
    await removeQuietly(temp);
    throw writeErrorOf(error, path);
  }
  const retired: string[] = [];
  for (const old of (await listCheckpoints(dir)).slice(Math.max(1, keep))) {
    if (old === path) continue;
    await removeQuietly(old);
    retired.push(old);
  }
  if (retired.length) await syncDirectory(dir).catch(() => undefined);
  return { path, bytes, retired };
}

/** What this session's checkpoint writes came to, for the log and the report (null without --checkpoint-dir). */
export interface CheckpointRecord {
  /** Step of the last checkpoint written and read back whole in this session. */
  lastStep: number | null;
  /** Writes that failed. */
  failures: number;
  /** Whether the write at the end (or on a signal) succeeded; null until it is tried. */
  finalWritten: boolean | null;
  /** A low-space warning was logged (again only after space came back). */
  lowSpaceWarned: boolean;
}

/** Bytes available to this user on the volume of `dir`; null where statfs cannot say. */
export async function freeBytesIn(dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return null;
  }
}

/** The checkpoint files in `dir`, newest (highest step) first; a version-1 file comes last. */
export async function listCheckpoints(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const numbered = names
    .map((name) => ({ name, step: Number(NAME.exec(name)?.[1] ?? NaN) }))
    .filter((f) => Number.isFinite(f.step))
    .sort((a, b) => b.step - a.step)
    .map((f) => join(dir, f.name));
  return names.includes(LEGACY_CHECKPOINT_FILE) ? [...numbered, join(dir, LEGACY_CHECKPOINT_FILE)] : numbered;
}

/** Reads one checkpoint file; throws a message saying what is wrong with a bad file. */
export async function readCheckpoint(path: string): Promise<Checkpoint> {
  try {
    return decode(await readFile(path));
  } catch (error) {
    const why = error instanceof Unusable ? error.message : `it cannot be read (${(error as Error).message})`;
    throw new BatchlabError('SHAPE_MISMATCH', `checkpoint ${path} is unusable: ${why}`);
  }
}

export interface LoadedCheckpoint {
  checkpoint: Checkpoint;
  path: string;
  /** Newer files that could not be used, with why. */
  skipped: { path: string; why: string }[];
}

/** The newest checkpoint in `dir` that reads back whole. Throws when there is none. */
export async function loadNewestCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  const paths = await listCheckpoints(dir);
  if (paths.length === 0)
    throw new BatchlabError(
      'BAD_OPTION',
      `--resume: no checkpoint in ${dir} (no checkpoint-*.batchlab file); run once with --checkpoint-dir ${dir} first`,
    );
  const skipped: { path: string; why: string }[] = [];
  for (const path of paths) {
    try {
      return { checkpoint: await readCheckpoint(path), path, skipped };
    } catch (error) {
      skipped.push({ path, why: (error as Error).message });
    }
  }
  throw new BatchlabError(
    'SHAPE_MISMATCH',
    `no usable checkpoint in ${dir}: ${skipped.map((s) => s.why).join('; ')}; move them away or point --checkpoint-dir elsewhere`,
  );
}

/** The newest usable checkpoint in `dir`. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  return (await loadNewestCheckpoint(dir)).checkpoint;
}

/**
 * Moves every checkpoint file of `dir` into a new subdirectory named after the time,
 * `replaced-2026-12-06T01-02-03Z` (nothing is deleted); returns its path.
 */
export async function moveCheckpointsAside(dir: string, now = new Date()): Promise<string> {
  const aside = join(
    dir,
    `replaced-${now
      .toISOString()
      .replace(/\.\d+Z$/, 'Z')
      .replaceAll(':', '-')}`,
  );
  await mkdir(aside, { recursive: true });
  for (const path of await listCheckpoints(dir)) await rename(path, join(aside, basename(path)));
  await syncDirectory(dir);
  return aside;
}

/** Throws naming every field where the checkpoint's run differs from this one. */
export function assertSameRun(saved: CheckpointIdentity, current: CheckpointIdentity, dir: string): void {
  const differences: string[] = [];
  for (const key of ['model', 'datasetFingerprint', 'globalBatchSize', 'optimizer', 'seed'] as const) {
    if (saved[key] !== current[key])
      differences.push(`${key}: checkpoint ${JSON.stringify(saved[key])}, this run ${JSON.stringify(current[key])}`);
  }
  const layout = (p: ParamSpec[]): string => p.map((s) => `${s.name}[${s.shape.join('x')}]`).join(' ');
  if (layout(saved.params) !== layout(current.params))
    differences.push(`parameters: checkpoint ${layout(saved.params)}, this run ${layout(current.params)}`);
  if (differences.length) {
    throw new BatchlabError(
      'SHAPE_MISMATCH',
      `checkpoint in ${dir} is from a different run: ${differences.join('; ')}. Resume with the same options, or use another --checkpoint-dir`,
    );
  }
}

/** One LR setting that differs between a checkpoint and the run resuming it. */
export interface ScheduleChange {
  /** The option, e.g. `--lr`. */
  setting: string;
  checkpoint: unknown;
  run: unknown;
}

/** The option each schedule field comes from. */
const SCHEDULE_OPTIONS: Record<keyof TrainingSchedule, string> = {
  lr: '--lr',
  lrScaling: '--lr-scaling',
  baseBatch: '--base-batch',
  warmupSteps: '--warmup-steps',
  warmup: '--warmup',
  decay: '--decay',
  decayBoundaries: '--decay-steps',
  decayFactor: '--decay-factor',
  lrWindows: '--lr-window',
  totalSteps: '--steps',
  weightDecay: '--weight-decay',
  momentum: '--momentum',
  nesterov: '--nesterov',
};

/** The LR settings that differ; the run length counts only where it shapes the LR (cosine decay). */
export function scheduleChanges(saved: TrainingSchedule, current: TrainingSchedule): ScheduleChange[] {
  const changes: ScheduleChange[] = [];
  for (const key of Object.keys(SCHEDULE_OPTIONS) as (keyof TrainingSchedule)[]) {
    if (key === 'totalSteps' && saved.decay !== 'cosine' && current.decay !== 'cosine') continue;
    if (JSON.stringify(saved[key]) !== JSON.stringify(current[key]))
      changes.push({ setting: SCHEDULE_OPTIONS[key], checkpoint: saved[key], run: current[key] });
  }
  return changes;
}

/** "--lr: checkpoint 0.001, this run 0.002". */
export function describeScheduleChange(change: ScheduleChange): string {
  return `${change.setting}: checkpoint ${JSON.stringify(change.checkpoint)}, this run ${JSON.stringify(change.run)}`;
}
