// `batchlab local` starts workers that can hold a batch-norm model's micro-batch: the micro-batch
// is the ghost batch, computed in one pass, and the coordinator refuses a worker whose --max-chunk
// is smaller. A micro-batch above the workers' default --max-chunk (1024) must still train.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DEFAULT_MAX_CHUNK } from '../../shared/micro-batches.js';
import { runCli } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-ghost-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('trains a batch-norm model whose micro-batch is larger than the default --max-chunk', async () => {
  const micro = DEFAULT_MAX_CHUNK + 26;
  const report = join(dir, 'report.json');
  const args = [
    ...['local', '--workers', '2', '--model', 'resnet', '--depth', '8', '--hidden', '2,2,2'],
    ...['--dataset', 'synthetic', '--global-batch', String(2 * micro), '--micro-batch', String(micro)],
    ...['--steps', '1', '--metrics-port', 'off', '--report', report],
  ];
  const result = await runCli(args, {}, 300_000);
  expect(result.code, result.stderr).toBe(0);
  const { steps, workerMemory } = JSON.parse(readFileSync(report, 'utf8')) as {
    steps: number;
    workerMemory: unknown[];
  };
  expect(steps).toBe(1);
  expect(workerMemory.length, 'both workers took part').toBe(2);
}, 400_000);
