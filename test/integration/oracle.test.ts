// The headline property: for the same seed, global batch and micro-batch size, N worker
// processes produce the same weights as one (DESIGN.md "the oracle").

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, SUBSET_DIR } from '../support/cli.js';
import { maxRelativeDifference } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-oracle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function trainWith(workers: number, extra: string[], tag: string): Promise<{ weights: Float32Array; report: Record<string, unknown> }> {
  const out = join(dir, `${tag}-w${workers}`);
  const result = await runCli([
    'local', '--workers', String(workers), '--dataset', 'fashion-mnist', '--data-dir', SUBSET_DIR,
    '--global-batch', '96', '--micro-batch', '16', '--seed', '5', '--eval-every', '0', '--metrics-port', 'off',
    '--save-model', out, '--report', `${out}.json`, ...extra,
  ]);
  expect(result.code, result.stderr).toBe(0);
  const bytes = readFileSync(join(out, 'weights.bin'));
  return {
    weights: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)),
    report: JSON.parse(readFileSync(`${out}.json`, 'utf8')),
  };
}

describe('N workers give the same weights as one worker', () => {
  it.each([
    ['sgd', ['--optimizer', 'sgd', '--lr', '0.05', '--model', 'mlp', '--hidden', '64,32', '--steps', '20']],
    ['adam', ['--optimizer', 'adam', '--lr', '0.001', '--model', 'mlp', '--hidden', '64,32', '--steps', '20']],
    ['cnn-sgd', ['--optimizer', 'sgd', '--lr', '0.05', '--model', 'cnn', '--hidden', '4,8', '--steps', '6', '--backend', 'wasm']],
    // Float16 on the wire rounds every gradient and weight frame the same way whoever computes it.
    ['adam-f16-wire', ['--optimizer', 'adam', '--lr', '0.001', '--model', 'mlp', '--hidden', '64,32', '--steps', '20', '--wire-dtype', 'f16']],
    // A 4× slower third worker gets fewer micro-batches (throughput split): the split changes, the bits must not.
    ['adam-uneven-split', ['--optimizer', 'adam', '--lr', '0.001', '--model', 'mlp', '--hidden', '64,32', '--steps', '12'], ['--debug-slowdown', '1,1,4']],
  ])('%s: 3 workers match 1 worker within 1e-5 relative', async (tag, extra, extraForThree: string[] = []) => {
    const one = await trainWith(1, extra, tag);
    const three = await trainWith(3, [...extra, ...extraForThree], tag);
    const difference = maxRelativeDifference(one.weights, three.weights);
    expect(difference).toBeLessThan(1e-5);
    expect(three.report.workers).toBe(3);
    expect(one.report.workers).toBe(1);
    // Every step used the whole global batch, and training moved the weights somewhere useful.
    expect(three.report.samples).toBe((three.report.steps as number) * 96);
    expect(three.report.finalLoss as number).toBeLessThan(three.report.initialLoss as number);
    expect(three.report.finalLoss).toBe(one.report.finalLoss);
  }, 180_000);
});

describe('float16 on the wire', () => {
  it('changes the weights (it is really used) but only slightly: within 2% of the float32 run after 20 Adam steps', () => {
    const read = (tag: string): Float32Array => {
      const bytes = readFileSync(join(dir, `${tag}-w1`, 'weights.bin'));
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    };
    const f32 = read('adam');
    const f16 = read('adam-f16-wire');
    expect(Buffer.compare(Buffer.from(f32.buffer), Buffer.from(f16.buffer))).not.toBe(0);
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < f32.length; i++) {
      diff += (f32[i]! - f16[i]!) ** 2;
      norm += f32[i]! ** 2;
    }
    expect(Math.sqrt(diff / norm)).toBeLessThan(0.02);
  });
});
