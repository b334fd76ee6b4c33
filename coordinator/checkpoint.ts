// Checkpoints: everything a run needs to continue with the same result as if never stopped —
// weights, optimizer state, step and sample count (the sampler is a function of seed and step),
// and the noise-scale EMAs — in one file written atomically (temp file, fsync, rename).
// Layout: "BLCKPT01" | u32 LE header length | JSON header | pad to 4 | float32 arrays.
// The header carries a SHA-256 of itself and the array bytes; a torn or edited file is refused.

import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { BatchlabError } from '../shared/errors.js';
import type { OptimizerState } from '../shared/optimizers/index.js';
import type { ParamSpec } from '../shared/protocol.js';
import type { NoiseScaleState } from '../shared/statistics/noise-scale.js';

const MAGIC = 'BLCKPT01';
export const CHECKPOINT_FILE = 'checkpoint.batchlab';

/** What must match for a checkpoint to continue this run. */
export interface CheckpointIdentity {
  model: string;
  params: ParamSpec[];
  datasetFingerprint: string;
  globalBatchSize: number;
  optimizer: string;
  seed: number;
}

export interface Checkpoint {
  identity: CheckpointIdentity;
  stepsDone: number;
  samples: number;
  weights: Float32Array;
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
  version: 1;
  identity: CheckpointIdentity;
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

function corrupt(path: string, why: string): BatchlabError {
  return new BatchlabError(
    'SHAPE_MISMATCH',
    `checkpoint ${path} is unusable: ${why}; delete it or point --checkpoint-dir elsewhere`,
  );
}

/** Writes `checkpoint` to DIR/checkpoint.batchlab atomically; returns the path. */
export async function saveCheckpoint(dir: string, checkpoint: Checkpoint): Promise<string> {
  const arrays: [string, Float32Array][] = [['weights', checkpoint.weights]];
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
    version: 1,
    identity: checkpoint.identity,
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
  await mkdir(dir, { recursive: true });
  const path = join(dir, CHECKPOINT_FILE);
  const temp = `${path}.tmp`;
  const handle = await open(temp, 'w');
  try {
    await handle.writev([prefix, body]);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
  return path;
}

/** Reads DIR/checkpoint.batchlab. Throws a message saying what is wrong with a bad file. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const path = join(dir, CHECKPOINT_FILE);
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch {
    throw new BatchlabError(
      'BAD_OPTION',
      `--resume: no checkpoint at ${path}; run once with --checkpoint-dir ${dir} first`,
    );
  }
  if (data.length < 12 || data.toString('latin1', 0, 8) !== MAGIC)
    throw corrupt(path, `it does not start with ${MAGIC}`);
  const jsonLength = data.readUInt32LE(8);
  if (12 + jsonLength > data.length)
    throw corrupt(path, `header length ${jsonLength} runs past the end of the file (${data.length} bytes)`);
  let header: Header;
  try {
    header = JSON.parse(data.toString('utf8', 12, 12 + jsonLength)) as Header;
  } catch (error) {
    throw corrupt(path, `header is not JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || header.version !== 1)
    throw corrupt(path, `version ${header?.version}, this batchlab reads version 1`);
  if (!Array.isArray(header.arrays)) throw corrupt(path, 'its header lists no arrays');
  const bodyStart = (12 + jsonLength + 3) & ~3;
  const body = data.subarray(bodyStart);
  if (digestOf(header, body) !== header.sha256)
    throw corrupt(path, 'its contents do not match their SHA-256 (torn write or edited file)');
  const aligned = new Float32Array(body.length / 4);
  new Uint8Array(aligned.buffer).set(body);
  const take = (entry: ArrayEntry): Float32Array => {
    if (entry.offset + entry.length > aligned.length) throw corrupt(path, `array ${entry.key} runs past the end`);
    return aligned.slice(entry.offset, entry.offset + entry.length);
  };
  const weightsEntry = header.arrays.find((a) => a.key === 'weights');
  if (!weightsEntry) throw corrupt(path, 'it holds no weights');
  const optimizerState: OptimizerState = { ...header.optimizerScalars };
  for (const entry of header.arrays)
    if (entry.key.startsWith('optimizer.')) optimizerState[entry.key.slice('optimizer.'.length)] = take(entry);
  return {
    identity: header.identity,
    stepsDone: header.stepsDone,
    samples: header.samples,
    weights: take(weightsEntry),
    optimizerState,
    noiseState: header.noiseState,
    writtenAt: header.writtenAt,
  };
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
