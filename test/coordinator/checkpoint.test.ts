import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertSameRun,
  checkpointFileName,
  describeScheduleChange,
  listCheckpoints,
  loadCheckpoint,
  loadNewestCheckpoint,
  moveCheckpointsAside,
  saveCheckpoint,
  scheduleChanges,
  type Checkpoint,
  type TrainingSchedule,
} from '../../coordinator/checkpoint.js';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG } from '../../shared/optimizers/index.js';
import { NoiseScaleEstimator } from '../../shared/statistics/noise-scale.js';

const root = mkdtempSync(join(tmpdir(), 'batchlab-ckpt-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(root, `c${n++}`);

const params = [
  { name: 'dense/kernel', shape: [3, 2] },
  { name: 'dense/bias', shape: [2] },
];
const identity = {
  model: '{"class_name":"Sequential"}',
  params,
  datasetFingerprint: 'abcd1234',
  globalBatchSize: 64,
  optimizer: 'adam',
  seed: 7,
};

const schedule: TrainingSchedule = {
  lr: 0.001,
  lrScaling: 'none',
  baseBatch: 64,
  warmupSteps: 0,
  warmup: 'gradual',
  decay: 'constant',
  decayBoundaries: [],
  decayFactor: 0.1,
  lrWindows: [],
  totalSteps: 100,
  weightDecay: 0,
  momentum: null,
  nesterov: null,
};

function sample(stepsDone = 12): Checkpoint {
  const weights = Float32Array.from([0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.01, -0.02]);
  const optimizer = createOptimizer('adam', DEFAULT_OPTIMIZER_CONFIG, params);
  optimizer.apply(weights, Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), 0.01);
  const noise = new NoiseScaleEstimator();
  noise.update({
    microBatches: [
      { samples: 32, sqNorm: 2 },
      { samples: 32, sqNorm: 3 },
    ],
    globalSqNorm: 1,
    lr: 0.01,
    globalBatchSize: 64,
    momentum: 0,
  });
  return {
    identity,
    schedule,
    runId: 'abc123',
    stepsDone,
    samples: stepsDone * 64,
    weights,
    optimizerState: optimizer.state(),
    noiseState: noise.state(),
    writtenAt: '2026-11-28T00:00:00.000Z',
  };
}

describe('checkpoints', () => {
  it('round-trips weights, optimizer state, step, samples and noise-scale EMAs exactly', async () => {
    const dir = freshDir();
    const saved = sample();
    await saveCheckpoint(dir, saved);
    const loaded = await loadCheckpoint(dir);
    expect(loaded.stepsDone).toBe(12);
    expect(loaded.samples).toBe(768);
    expect(Buffer.from(loaded.weights.buffer).equals(Buffer.from(saved.weights.buffer))).toBe(true);
    expect(loaded.optimizerState.t).toBe(1);
    expect(Array.from(loaded.optimizerState.m as Float32Array)).toEqual(
      Array.from(saved.optimizerState.m as Float32Array),
    );
    expect(Array.from(loaded.optimizerState.v as Float32Array)).toEqual(
      Array.from(saved.optimizerState.v as Float32Array),
    );
    expect(loaded.noiseState).toEqual(saved.noiseState);
    expect(loaded.identity).toEqual(identity);
    expect(loaded.schedule).toEqual(schedule);
    expect(loaded.runId).toBe('abc123');
  });

  it('continues an optimizer bit-identically after a reload', async () => {
    const dir = freshDir();
    const saved = sample();
    await saveCheckpoint(dir, saved);
    const loaded = await loadCheckpoint(dir);
    const a = createOptimizer('adam', DEFAULT_OPTIMIZER_CONFIG, params);
    a.loadState(saved.optimizerState);
    const b = createOptimizer('adam', DEFAULT_OPTIMIZER_CONFIG, params);
    b.loadState(loaded.optimizerState);
    const wa = Float32Array.from(saved.weights);
    const wb = Float32Array.from(loaded.weights);
    const g = Float32Array.from([0.5, -1, 2, 0, 1, 3, -2, 1]);
    a.apply(wa, g, 0.01);
    b.apply(wb, g, 0.01);
    expect(Array.from(wb)).toEqual(Array.from(wa));
  });

  it('refuses a file whose bytes were changed, saying it is torn or edited', async () => {
    const dir = freshDir();
    const { path } = await saveCheckpoint(dir, sample());
    const bytes = readFileSync(path);
    bytes[bytes.length - 3]! ^= 0xff;
    writeFileSync(path, bytes);
    await expect(loadCheckpoint(dir)).rejects.toThrow(/SHA-256 \(torn write or edited file\)/);
  });

  it('refuses a file whose header was edited (a step count changed by hand)', async () => {
    const dir = freshDir();
    const { path } = await saveCheckpoint(dir, sample());
    const text = readFileSync(path).toString('latin1').replace('"stepsDone":12', '"stepsDone":99');
    writeFileSync(path, Buffer.from(text, 'latin1'));
    await expect(loadCheckpoint(dir)).rejects.toThrow(/torn write or edited file/);
  });

  it('refuses a truncated file and a file that is not a checkpoint', async () => {
    const dir = freshDir();
    const { path } = await saveCheckpoint(dir, sample());
    writeFileSync(path, readFileSync(path).subarray(0, 30));
    await expect(loadCheckpoint(dir)).rejects.toThrow(/unusable/);
    writeFileSync(path, 'hello');
    await expect(loadCheckpoint(dir)).rejects.toThrow(/does not start with BLCKPT01/);
  });

  it('says where it looked when there is no checkpoint to resume', async () => {
    const dir = freshDir();
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      /--resume: no checkpoint in .*c\d+ \(no checkpoint-\*\.batchlab file\)/,
    );
  });

  it('names every field that differs from the run being resumed', () => {
    expect(() => assertSameRun(identity, { ...identity }, 'd')).not.toThrow();
    expect(() => assertSameRun(identity, { ...identity, globalBatchSize: 128, optimizer: 'sgd' }, 'd')).toThrow(
      /globalBatchSize: checkpoint 64, this run 128; optimizer: checkpoint "adam", this run "sgd"/,
    );
    expect(() =>
      assertSameRun(identity, { ...identity, params: [{ name: 'dense/kernel', shape: [3, 4] }] }, 'd'),
    ).toThrow(/parameters: checkpoint dense\/kernel\[3x2\]/);
  });

  it('keeps the newest --keep-checkpoints files, deleting older ones only after a newer one is written', async () => {
    const dir = freshDir();
    for (const step of [10, 20, 30]) await saveCheckpoint(dir, sample(step), 2);
    expect(readdirSync(dir).sort()).toEqual([checkpointFileName(20), checkpointFileName(30)]);
    const saved = await saveCheckpoint(dir, sample(40), 3);
    expect(saved.retired).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual([20, 30, 40].map(checkpointFileName));
    const last = await saveCheckpoint(dir, sample(50), 1);
    expect(last.retired.map((p) => p.slice(dir.length + 1))).toEqual([40, 30, 20].map(checkpointFileName));
    expect(readdirSync(dir)).toEqual([checkpointFileName(50)]);
    expect((await loadCheckpoint(dir)).stepsDone).toBe(50);
  });

  it('orders by step, not by name length: step 1000 is newer than step 999', async () => {
    const dir = freshDir();
    await saveCheckpoint(dir, sample(999), 2);
    await saveCheckpoint(dir, sample(1000), 2);
    expect((await listCheckpoints(dir)).map((p) => p.slice(dir.length + 1))).toEqual([
      checkpointFileName(1000),
      checkpointFileName(999),
    ]);
  });

  it('falls back to the newest usable checkpoint, naming each newer one skipped and why', async () => {
    const dir = freshDir();
    for (const step of [10, 20, 30]) await saveCheckpoint(dir, sample(step), 3);
    const newest = join(dir, checkpointFileName(30));
    writeFileSync(newest, readFileSync(newest).subarray(0, 1000));
    const second = join(dir, checkpointFileName(20));
    const bytes = readFileSync(second);
    bytes[bytes.length - 5]! ^= 0x01;
    writeFileSync(second, bytes);
    const loaded = await loadNewestCheckpoint(dir);
    expect(loaded.checkpoint.stepsDone).toBe(10);
    expect(loaded.path).toBe(join(dir, checkpointFileName(10)));
    expect(loaded.skipped.map((s) => s.path)).toEqual([newest, second]);
    expect(loaded.skipped[0]!.why).toMatch(/checkpoint-000000030\.batchlab is unusable: (header length|.*SHA-256)/);
    expect(loaded.skipped[1]!.why).toMatch(/checkpoint-000000020\.batchlab is unusable: .*SHA-256 \(torn write/);
  });

  it('refuses when no checkpoint is usable, naming each file and why', async () => {
    const dir = freshDir();
    const { path } = await saveCheckpoint(dir, sample(10));
    writeFileSync(path, 'hello');
    await expect(loadNewestCheckpoint(dir)).rejects.toThrow(
      /no usable checkpoint in .*: checkpoint .*checkpoint-000000010\.batchlab is unusable: it does not start with BLCKPT01/,
    );
  });

  it('leaves no temp file behind, and reads a version-1 checkpoint (checkpoint.batchlab) as the oldest', async () => {
    const dir = freshDir();
    const { path } = await saveCheckpoint(dir, sample(10));
    expect(readdirSync(dir)).toEqual([checkpointFileName(10)]);
    // Rewrite it as version 1 wrote it: no runId or schedule, one file named checkpoint.batchlab.
    const data = readFileSync(path);
    const length = data.readUInt32LE(8);
    const header = JSON.parse(data.toString('utf8', 12, 12 + length));
    const body = data.subarray((12 + length + 3) & ~3);
    delete header.runId;
    delete header.schedule;
    header.version = 1;
    header.stepsDone = 7;
    header.sha256 = createHash('sha256')
      .update(JSON.stringify({ ...header, sha256: '' }))
      .update(body)
      .digest('hex');
    const json = Buffer.from(JSON.stringify(header));
    const prefix = Buffer.alloc((12 + json.length + 3) & ~3);
    prefix.write('BLCKPT01', 0, 'latin1');
    prefix.writeUInt32LE(json.length, 8);
    json.copy(prefix, 12);
    const old = freshDir();
    mkdirSync(old);
    writeFileSync(join(old, 'checkpoint.batchlab'), Buffer.concat([prefix, body]));
    const v1 = await loadCheckpoint(old);
    expect([v1.stepsDone, v1.schedule, v1.runId]).toEqual([7, null, null]);
    // A newer numbered checkpoint comes first; the version-1 file is the oldest and is rotated out.
    await saveCheckpoint(old, sample(20), 1);
    expect(readdirSync(old)).toEqual([checkpointFileName(20)]);
  });

  it('moves checkpoints aside into a dated subdirectory, bytes unchanged', async () => {
    const dir = freshDir();
    const { path } = await saveCheckpoint(dir, sample(10));
    const before = readFileSync(path);
    const aside = await moveCheckpointsAside(dir, new Date('2026-12-06T01:02:03.456Z'));
    expect(aside).toBe(join(dir, 'replaced-2026-12-06T01-02-03Z'));
    expect(await listCheckpoints(dir)).toEqual([]);
    expect(readFileSync(join(aside, checkpointFileName(10))).equals(before)).toBe(true);
  });

  it('names every LR setting that differs; the run length only where cosine decay uses it', () => {
    expect(scheduleChanges(schedule, { ...schedule, totalSteps: 500 })).toEqual([]);
    const changes = scheduleChanges(schedule, { ...schedule, lr: 0.002, weightDecay: 0.01, warmupSteps: 5 });
    expect(changes.map(describeScheduleChange)).toEqual([
      '--lr: checkpoint 0.001, this run 0.002',
      '--warmup-steps: checkpoint 0, this run 5',
      '--weight-decay: checkpoint 0, this run 0.01',
    ]);
    const cosine = { ...schedule, decay: 'cosine' };
    expect(scheduleChanges(cosine, { ...cosine, totalSteps: 500 }).map(describeScheduleChange)).toEqual([
      '--steps: checkpoint 100, this run 500',
    ]);
  });
});
