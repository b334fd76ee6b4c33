import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertSameRun,
  CHECKPOINT_FILE,
  loadCheckpoint,
  saveCheckpoint,
  type Checkpoint,
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

function sample(): Checkpoint {
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
    stepsDone: 12,
    samples: 768,
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
    const path = await saveCheckpoint(dir, sample());
    const bytes = readFileSync(path);
    bytes[bytes.length - 3]! ^= 0xff;
    writeFileSync(path, bytes);
    await expect(loadCheckpoint(dir)).rejects.toThrow(/SHA-256 \(torn write or edited file\)/);
  });

  it('refuses a file whose header was edited (a step count changed by hand)', async () => {
    const dir = freshDir();
    const path = await saveCheckpoint(dir, sample());
    const text = readFileSync(path).toString('latin1').replace('"stepsDone":12', '"stepsDone":99');
    writeFileSync(path, Buffer.from(text, 'latin1'));
    await expect(loadCheckpoint(dir)).rejects.toThrow(/torn write or edited file/);
  });

  it('refuses a truncated file and a file that is not a checkpoint', async () => {
    const dir = freshDir();
    const path = await saveCheckpoint(dir, sample());
    writeFileSync(path, readFileSync(path).subarray(0, 30));
    await expect(loadCheckpoint(dir)).rejects.toThrow(/unusable/);
    writeFileSync(path, 'hello');
    await expect(loadCheckpoint(dir)).rejects.toThrow(/does not start with BLCKPT01/);
  });

  it('says where it looked when there is no checkpoint to resume', async () => {
    const dir = freshDir();
    await expect(loadCheckpoint(dir)).rejects.toThrow(new RegExp(`no checkpoint at .*${CHECKPOINT_FILE}`));
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
});
