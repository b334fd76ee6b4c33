// `batchlab data fetch` against a local HTTP server serving a generated archive (nothing is
// downloaded from the internet): the files land in place and load; a second fetch does nothing;
// a wrong checksum, a connection dropped mid-body and an HTTP error exit non-zero and leave
// nothing behind; a directory holding part of the dataset is refused.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeFetch, fetchDataset } from '../../cli/data-fetch.js';
import { loadDataset } from '../../shared/data/index.js';
import { makeCifarArchive, writeCifarFiles } from '../support/cifar-files.js';
import { runCli, startCli, waitForOutput } from '../support/cli.js';
import { watch } from '../support/processes.js';

const root = mkdtempSync(join(tmpdir(), 'batchlab-data-fetch-'));
const env = { XDG_CACHE_HOME: join(root, 'cache') };
const OPTS = { trainPerFile: 4, test: 3, seed: 2 };
const archive = makeCifarArchive('cifar10', OPTS);
const md5 = createHash('md5').update(archive).digest('hex');
/** Files whose MD5 a test passes on: the wrong dataset's archive, and bytes that are no gzip. */
const otherArchive = makeCifarArchive('cifar100', OPTS);
const notGzip = Buffer.from('not an archive at all');
const md5Of = (bytes: Buffer): string => createHash('md5').update(bytes).digest('hex');

/** What the server does with each path. */
let requests: string[] = [];
let server: Server;
let base: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push(req.url!);
    if (req.url === '/cifar10.tar.gz') {
      res.writeHead(200, { 'content-length': archive.length });
      res.end(archive);
    } else if (req.url === '/stall.tar.gz') {
      // Half the archive, then nothing: the download waits until interrupted.
      res.writeHead(200, { 'content-length': archive.length });
      res.write(archive.subarray(0, archive.length >> 1));
    } else if (req.url === '/cifar100.tar.gz' || req.url === '/text') {
      res.end(req.url === '/text' ? notGzip : otherArchive);
    } else if (req.url === '/moved') {
      res.writeHead(302, { location: '/cifar10.tar.gz' });
      res.end();
    } else if (req.url === '/cut.tar.gz') {
      // The full length announced, half of it sent, then the connection dropped.
      res.writeHead(200, { 'content-length': archive.length });
      res.write(archive.subarray(0, archive.length >> 1), () => setTimeout(() => res.socket?.destroy(), 50));
    } else {
      res.writeHead(404);
      res.end('no such file');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(root, { recursive: true, force: true });
});

const fetchArgs = (dir: string, path: string, sum = md5) => [
  'data',
  'fetch',
  'cifar10',
  '--dir',
  dir,
  '--url',
  `${base}${path}`,
  '--md5',
  sum,
];

describe('batchlab data fetch', () => {
  it('downloads, checks and unpacks the archive into --dir, where --data-dir finds it; a second fetch does nothing', async () => {
    const parent = join(root, 'ok');
    const dir = join(parent, 'c10');
    requests = [];
    const result = await runCli(fetchArgs(dir, '/moved'), env);
    expect(result.code, result.stderr).toBe(0);
    expect(requests).toEqual(['/moved', '/cifar10.tar.gz']);
    expect(result.stderr).toMatch(/MB \/ [\d.]+ MB \(100%\)/);
    expect(result.stderr).toContain(`MD5 ${md5} as expected`);
    expect(result.stdout).toContain(`cifar10: put 20 train / 3 test images in ${join(dir, 'cifar-10-batches-bin')}`);
    expect(result.stdout).toContain(`--dataset cifar10 --data-dir ${dir}`);
    // Only the dataset: no temporary file or directory beside it.
    expect(readdirSync(parent)).toEqual(['c10']);
    expect(readdirSync(join(dir, 'cifar-10-batches-bin')).sort()).toEqual(
      [
        ...['batches.meta.txt', 'data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin'],
        ...['data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin'],
      ].sort(),
    );
    const fetched = await loadDataset({ name: 'cifar10', dataDir: dir, seed: 1 });
    writeCifarFiles(join(root, 'reference'), { name: 'cifar10', ...OPTS });
    const reference = await loadDataset({ name: 'cifar10', dataDir: join(root, 'reference'), seed: 1 });
    expect(fetched.fingerprint).toBe(reference.fingerprint);

    requests = [];
    const again = await runCli(fetchArgs(dir, '/cifar10.tar.gz'), env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(
      `cifar10: already in ${join(dir, 'cifar-10-batches-bin')} (20 train / 3 test images); nothing to do`,
    );
    expect(requests).toEqual([]);
  }, 60_000);

  it('refuses an archive whose MD5 is not the expected one and leaves nothing behind', async () => {
    const parent = join(root, 'bad-sum');
    const result = await runCli(fetchArgs(join(parent, 'c10'), '/cifar10.tar.gz', '0'.repeat(32)), env);
    expect(result.code, result.stderr).toBe(5);
    expect(result.stderr).toContain(
      `[DOWNLOAD_FAILED] cifar10: ${base}/cifar10.tar.gz gave an archive with MD5 ${md5}, expected ${'0'.repeat(32)} (--md5)`,
    );
    // The parent did not exist before: it is removed with everything in it.
    expect(existsSync(parent)).toBe(false);
  }, 60_000);

  it('fails on a connection dropped mid-body and leaves nothing behind', async () => {
    const parent = join(root, 'cut');
    mkdirSync(parent);
    const result = await runCli(fetchArgs(join(parent, 'c10'), '/cut.tar.gz'), env);
    expect(result.code, result.stderr).toBe(5);
    expect(result.stderr).toMatch(
      new RegExp(`the download of ${base}/cut\\.tar\\.gz was cut after \\d+ of ${archive.length} bytes`),
    );
    expect(readdirSync(parent)).toEqual([]);
  }, 60_000);

  it('stops on SIGINT mid-download with exit code 130 and leaves nothing behind', async () => {
    const parent = join(root, 'interrupted');
    mkdirSync(parent);
    const child = startCli(fetchArgs(join(parent, 'c10'), '/stall.tar.gz'), env);
    const run = watch(child);
    await waitForOutput(child, /MB \/ [\d.]+ MB \(\d+%\)/);
    expect(readdirSync(parent)).toEqual(['.c10.' + child.pid + '.download']);
    child.kill('SIGINT');
    expect(await run.exit, run.output()).toBe(130);
    expect(run.output()).toContain('[INTERRUPTED] interrupted by SIGINT');
    expect(readdirSync(parent)).toEqual([]);
  }, 60_000);

  it('fails on an HTTP error, naming the status, and leaves nothing behind', async () => {
    const parent = join(root, 'missing');
    mkdirSync(parent);
    const result = await runCli(fetchArgs(join(parent, 'c10'), '/nothing-here'), env);
    expect(result.code, result.stderr).toBe(5);
    expect(result.stderr).toContain(`[DOWNLOAD_FAILED] ${base}/nothing-here answered HTTP 404`);
    expect(readdirSync(parent)).toEqual([]);
  }, 60_000);

  it('refuses an archive with the expected MD5 that is not the dataset or not a gzip tar, leaving nothing behind', async () => {
    const parent = join(root, 'wrong-archive');
    mkdirSync(parent);
    const wrong = await runCli(fetchArgs(join(parent, 'c10'), '/cifar100.tar.gz', md5Of(otherArchive)), env);
    expect(wrong.code, wrong.stderr).toBe(5);
    expect(wrong.stderr).toContain(
      `[DOWNLOAD_FAILED] the archive from ${base}/cifar100.tar.gz does not hold cifar-10-batches-bin/ with data_batch_1.bin`,
    );
    expect(readdirSync(parent)).toEqual([]);
    const text = await runCli(fetchArgs(join(parent, 'c10'), '/text', md5Of(notGzip)), env);
    expect(text.code, text.stderr).toBe(5);
    expect(text.stderr).toContain(`[DOWNLOAD_FAILED] the archive from ${base}/text: not a gzip'd tar archive`);
    expect(readdirSync(parent)).toEqual([]);
  }, 60_000);

  it('refuses a directory that holds part of the dataset (exit 2), and a bad --md5 (exit 2)', async () => {
    const dir = join(root, 'partial');
    writeCifarFiles(dir, { name: 'cifar10', ...OPTS, omit: ['test_batch.bin'] });
    const result = await runCli(fetchArgs(dir, '/cifar10.tar.gz'), env);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain(
      `[BAD_DATA] cifar10: ${dir} holds part of the dataset (missing cifar-10-batches-bin/test_batch.bin); remove ${join(dir, 'cifar-10-batches-bin')} and run again`,
    );
    const badSum = await runCli(fetchArgs(join(root, 'x'), '/cifar10.tar.gz', 'abc'), env);
    expect(badSum.code).toBe(2);
    expect(badSum.stderr).toContain('--md5: got "abc"; expected 32 hex digits');
  }, 60_000);

  it('puts the data in ./data/<name> by default, where the search finds it, into an existing directory too', async () => {
    const cwd = join(root, 'cwd');
    mkdirSync(join(cwd, 'data', 'cifar10'), { recursive: true });
    const lines: string[] = [];
    const progress = { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream;
    const result = await fetchDataset(
      { name: 'cifar10', url: `${base}/cifar10.tar.gz`, md5, cwd },
      { log: (l) => lines.push(l), progress },
    );
    expect(result).toMatchObject({ dir: join(cwd, 'data', 'cifar10'), fetched: true, train: 20, test: 3 });
    expect(readdirSync(join(cwd, 'data'))).toEqual(['cifar10']);
    expect(describeFetch('cifar10', result, cwd)).toContain(
      `run from ${cwd}, the search finds it without --data-dir (./data/cifar10)`,
    );
    const ds = await loadDataset({ name: 'cifar10', cwd, seed: 1 });
    expect(ds.source).toBe(join(cwd, 'data', 'cifar10', 'cifar-10-batches-bin'));
  });
});
