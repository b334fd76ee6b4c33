// The headline property: for the same seed, global batch and micro-batch size, N worker
// processes produce the same weights as one, bit for bit on one backend (docs/ARCHITECTURE.md, "Why N workers equal one").
// Every case trains what it compares itself; runs with the same command line are trained once
// and shared, so a case never depends on another case having run first.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, SUBSET_DIR } from '../support/cli.js';
import { bitDifference, expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-oracle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Trained {
  weights: Float32Array;
  report: Record<string, unknown>;
}

async function train(workers: number, extra: string[], out: string): Promise<Trained> {
  const result = await runCli([
    'local',
    '--workers',
    String(workers),
    '--dataset',
    'fashion-mnist',
    '--data-dir',
    SUBSET_DIR,
    '--global-batch',
    '96',
    '--micro-batch',
    '16',
    '--seed',
    '5',
    '--eval-every',
    '0',
    '--metrics-port',
    'off',
    '--save-model',
    out,
    '--report',
    `${out}.json`,
    ...extra,
  ]);
  if (result.code !== 0)
    throw new Error(
      `batchlab local --workers ${workers} ${extra.join(' ')} exited with ${result.code}:\n${result.stderr.slice(-3000)}`,
    );
  return { weights: readSavedWeights(out), report: JSON.parse(readFileSync(`${out}.json`, 'utf8')) };
}

const runs = new Map<string, Promise<Trained>>();
/** The run with these arguments, trained on first use. */
function trained(workers: number, extra: string[]): Promise<Trained> {
  const key = JSON.stringify([workers, extra]);
  if (!runs.has(key)) runs.set(key, train(workers, extra, join(dir, `run-${runs.size}`)));
  return runs.get(key)!;
}

const MLP = ['--model', 'mlp', '--hidden', '64,32'];
const ADAM = ['--optimizer', 'adam', '--lr', '0.001', ...MLP, '--steps', '20'];

/** Trains with 1 and 3 workers and asserts the 3-worker run ends with the 1-worker run's exact bits. */
async function expectThreeAsOne(tag: string, extra: string[], extraForThree: string[] = []): Promise<void> {
  const [one, three] = await Promise.all([trained(1, extra), trained(3, [...extra, ...extraForThree])]);
  expect(one.report.workers).toBe(1);
  expect(three.report.workers).toBe(3);
  expectBitIdentical(one.weights, three.weights, `${tag}: weights of 3 workers vs 1`);
  // Every step asked for ran with the whole global batch, and training moved the weights somewhere useful.
  const steps = Number(extra[extra.indexOf('--steps') + 1]);
  expect(steps).toBeGreaterThan(0);
  for (const run of [one, three]) expect(run.report).toMatchObject({ steps, samples: steps * 96 });
  expect(three.report.finalLoss as number).toBeLessThan(three.report.initialLoss as number);
  expect(three.report.finalLoss).toBe(one.report.finalLoss);
}

describe('N workers give the same weights as one worker', () => {
  it.each([
    ['sgd', ['--optimizer', 'sgd', '--lr', '0.05', ...MLP, '--steps', '20']],
    ['adam', ADAM],
    [
      'cnn-sgd',
      ['--optimizer', 'sgd', '--lr', '0.05', '--model', 'cnn', '--hidden', '4,8', '--steps', '6', '--backend', 'wasm'],
    ],
    // Float16 on the wire rounds every gradient and weight frame the same way whoever computes it.
    ['adam-f16-wire', [...ADAM, '--wire-dtype', 'f16']],
  ])(
    '%s: 3 workers give bit-identical weights to 1 worker',
    async (tag, extra) => {
      await expectThreeAsOne(tag, extra);
    },
    180_000,
  );

  it('adam-uneven-split: a 4× slower third worker gets fewer micro-batches (throughput split), and the bits do not change', async () => {
    const trace = join(dir, 'uneven-split-trace.json');
    await expectThreeAsOne(
      'adam-uneven-split',
      ['--optimizer', 'adam', '--lr', '0.001', ...MLP, '--steps', '12'],
      ['--debug-slowdown', '1,1,4', '--trace', trace],
    );
    // The split really was uneven: otherwise this case would only repeat 'adam'.
    const events = (
      JSON.parse(readFileSync(trace, 'utf8')) as {
        traceEvents: { name: string; tid: number; cat?: string; args?: Record<string, unknown> }[];
      }
    ).traceEvents;
    const nameOf = new Map(events.filter((e) => e.name === 'thread_name').map((e) => [e.tid, String(e.args!.name)]));
    const computed = new Map<string, number>();
    for (const e of events.filter((x) => x.cat === 'compute')) {
      const name = /\((local-\d)\)/.exec(nameOf.get(e.tid) ?? '')?.[1] ?? `tid ${e.tid}`;
      computed.set(name, (computed.get(name) ?? 0) + 1);
    }
    const counts = Object.fromEntries([...computed].sort());
    expect(Object.keys(counts), JSON.stringify(counts)).toEqual(['local-1', 'local-2', 'local-3']);
    expect(counts['local-1']! + counts['local-2']! + counts['local-3']!).toBe(12 * 6);
    expect(counts['local-3'], `micro-batches per worker: ${JSON.stringify(counts)}`).toBeLessThan(
      Math.min(counts['local-1']!, counts['local-2']!),
    );
  }, 180_000);
});

describe('the sharded reducer sums and applies among the workers with the bits of the star', () => {
  const LAMB = ['--optimizer', 'lamb', '--lr', '0.002', ...MLP, '--steps', '12'];
  const CNN = [
    '--optimizer',
    'sgd',
    '--lr',
    '0.05',
    '--model',
    'cnn',
    '--hidden',
    '4,8',
    '--steps',
    '6',
    '--backend',
    'wasm',
  ];
  it.each([
    ['sgd', ['--optimizer', 'sgd', '--lr', '0.05', ...MLP, '--steps', '20']],
    ['adam', ADAM],
    ['lamb', LAMB],
    ['cnn-sgd', CNN],
  ])(
    '%s: --reducer sharded with 1, 2 and 3 workers gives the weights of 1 worker under the star',
    async (tag, extra) => {
      const sharded = ['--reducer', 'sharded'];
      const [star, ...runs] = await Promise.all([
        trained(1, extra),
        trained(1, [...extra, ...sharded]),
        trained(2, [...extra, ...sharded]),
        trained(3, [...extra, ...sharded]),
      ]);
      runs.forEach((run, i) => {
        expect(run.report.workers).toBe(i + 1);
        // The sharded reducer ran to the end (no fallback to the star).
        expect(run.report.reducer).toBe('sharded');
        expectBitIdentical(star.weights, run.weights, `${tag}: sharded with ${i + 1} workers vs the star`);
        expect(run.report.finalLoss).toBe(star.report.finalLoss);
        // |mean gradient|², squared on the workers, enters the noise scale with the star's bits too.
        expect(run.report.gradientNoiseScale).toBe(star.report.gradientNoiseScale);
      });
    },
    240_000,
  );
});

describe('float16 on the wire', () => {
  it('changes the weights (it is really used) but only slightly: within 2% of the float32 run after 20 Adam steps', async () => {
    const [{ weights: f32 }, { weights: f16 }] = await Promise.all([
      trained(1, ADAM),
      trained(1, [...ADAM, '--wire-dtype', 'f16']),
    ]);
    expect(f16.length).toBe(f32.length);
    expect(f32.length).toBeGreaterThan(0);
    expect(
      bitDifference(f32, f16),
      'f16 on the wire left the weights bit-identical to f32: it is not used',
    ).not.toBeNull();
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < f32.length; i++) {
      diff += (f32[i]! - f16[i]!) ** 2;
      norm += f32[i]! ** 2;
    }
    expect(Math.sqrt(diff / norm)).toBeLessThan(0.02);
  }, 180_000);
});
