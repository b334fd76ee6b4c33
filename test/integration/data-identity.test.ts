// A worker whose data differs from the coordinator's by a single pixel byte is refused at the
// handshake: it exits non-zero naming the file that differs, and a worker with the same files
// trains. The byte is one a strided sample of the pixels would skip.

import { type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runCli, startCli, SUBSET_DIR, waitForOutput } from '../support/cli.js';
import { watch } from '../support/processes.js';

const root = mkdtempSync(join(tmpdir(), 'batchlab-data-identity-'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('dataset identity at the handshake', () => {
  it('refuses a worker whose train images differ by one byte, naming the file', async () => {
    const same = join(root, 'same');
    const changed = join(root, 'changed');
    cpSync(SUBSET_DIR, same, { recursive: true });
    cpSync(SUBSET_DIR, changed, { recursive: true });
    const images = join(changed, 'train-images-idx3-ubyte.gz');
    const raw = gunzipSync(readFileSync(images));
    // Pixel 1000 of the 6 272 000: not among every 95th byte the old fingerprint sampled.
    raw[16 + 1000] = raw[16 + 1000]! ^ 1;
    writeFileSync(images, gzipSync(raw));
    const env = { BATCHLAB_TOKEN: 'identity', XDG_CACHE_HOME: join(root, 'cache') };

    const coordinator = startCli(
      [
        'coordinator',
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--metrics-port',
        'off',
        '--dataset',
        'fashion-mnist',
        '--data-dir',
        same,
        '--steps',
        '3',
        '--global-batch',
        '32',
        '--micro-batch',
        '16',
        '--hidden',
        '16',
      ],
      env,
    );
    children.push(coordinator);
    const run = watch(coordinator);
    const port = Number((await waitForOutput(coordinator, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
    const worker = (dir: string) =>
      runCli(['worker', '--connect', `ws://127.0.0.1:${port}`, '--data-dir', dir, '--metrics-port', 'off'], env);

    const refused = await worker(changed);
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toMatch(/\[DATASET_MISMATCH\] dataset file train-images-idx3-ubyte differs/);
    expect(refused.stderr).toContain(images);
    expect(run.output()).toMatch(/reported \[DATASET_MISMATCH\] dataset file train-images-idx3-ubyte differs/);

    const accepted = await worker(same);
    expect(accepted.code, accepted.stderr).toBe(0);
    expect(await run.exit, run.output()).toBe(0);
  }, 120_000);
});
