// Real data, real processes: the reference command learns Fashion-MNIST on the
// embedded subset the repo ships.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { runCli, SUBSET_DIR } from '../support/cli.js';
import { REPORT_KEYS } from '../support/report.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-accuracy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('2 workers reach at least 0.75 eval accuracy on the embedded Fashion-MNIST subset in 150 steps', async () => {
  const report = join(dir, 'report.json');
  const result = await runCli([
    'local',
    '--workers',
    '2',
    '--dataset',
    'fashion-mnist',
    '--data-dir',
    SUBSET_DIR,
    '--model',
    'mlp',
    '--optimizer',
    'adam',
    '--lr',
    '0.001',
    '--global-batch',
    '128',
    '--steps',
    '150',
    '--report',
    report,
  ]);
  expect(result.code, result.stderr).toBe(0);
  const summary = JSON.parse(readFileSync(report, 'utf8'));
  for (const key of REPORT_KEYS) {
    expect(summary).toHaveProperty(key);
  }
  expect(summary).toMatchObject({
    workers: 2,
    globalBatchSize: 128,
    steps: 150,
    samples: 150 * 128,
    learningRate: 0.001,
  });
  expect(summary.evalAccuracy).toBeGreaterThanOrEqual(0.75);
  expect(summary.finalLoss).toBeLessThan(summary.initialLoss);
  // The summary table a person reads ends the output.
  expect(result.stdout).toMatch(/batchlab run summary/);
  expect(result.stdout).toMatch(/eval loss \/ accuracy/);
  // Progress lines appear on stderr when not a terminal.
  expect(result.stderr).toMatch(/step +150\/150 +loss/);
}, 240_000);
