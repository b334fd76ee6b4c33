// `batchlab data fetch cifar10|cifar100 [--dir D]`: downloads the official binary archive, checks
// its published MD5, and unpacks it into D (default ./data/<name>) atomically: the archive is
// downloaded to a temporary file beside D, verified, unpacked into a temporary directory there,
// checked, and renamed into place. A failure at any point (network, HTTP status, cut download,
// checksum, a bad archive, Ctrl-C) removes what was written and leaves D as it was.

import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import {
  CIFAR,
  checkCifarFileSize,
  cifarFileNames,
  cifarRecordBytes,
  scanCifarDirectory,
  type CifarName,
} from '../shared/data/cifar.js';
import { readTar } from '../shared/data/tar.js';
import { BatchlabError, DataError } from '../shared/errors.js';

const gunzipAsync = promisify(gunzip);

/** What to fetch and where. */
export interface FetchSettings {
  name: CifarName;
  /** Where the data goes (default `./data/<name>`), relative to `cwd`. */
  dir?: string;
  /** A mirror of the archive (default: the official URL). */
  url?: string;
  /** The archive's MD5 (default: the published one). */
  md5?: string;
  /** Directory `dir` is resolved against (default `process.cwd()`). */
  cwd?: string;
}

/** Where the data is, and whether this call put it there. */
export interface FetchResult {
  /** The directory given (or the default), absolute: what --data-dir takes. */
  dir: string;
  /** The directory holding the .bin files. */
  filesDir: string;
  fetched: boolean;
  /** Records of the training files and of the test file. */
  train: number;
  test: number;
}

/** Where progress and messages go. */
export interface FetchOutput {
  /** One line of what is being done. */
  log: (line: string) => void;
  /** The progress stream (stderr): a TTY gets one rewritten line, anything else a line per tenth. */
  progress: NodeJS.WritableStream & { isTTY?: boolean };
  signal?: AbortSignal;
}

/** The download or the archive was not what was expected (DOWNLOAD_FAILED, exit 5). */
function downloadFailed(message: string): BatchlabError {
  return new BatchlabError('DOWNLOAD_FAILED', message);
}

/**
 * Fetches the dataset into `settings.dir`, or does nothing when it already holds all of it.
 * @throws DataError when the directory holds part of the dataset; BatchlabError DOWNLOAD_FAILED
 *   when the download fails, is cut, or its MD5 or contents are not the archive's; the signal's
 *   reason when aborted. Nothing is left behind on failure.
 */
export async function fetchDataset(settings: FetchSettings, out: FetchOutput): Promise<FetchResult> {
  const { name } = settings;
  const layout = CIFAR[name];
  const cwd = resolve(settings.cwd ?? process.cwd());
  const dir = resolve(cwd, settings.dir ?? join('data', name));
  const present = existsSync(dir) ? scanCifarDirectory(name, dir) : null;
  if (present?.complete) {
    const counts = await countRecords(name, present.files);
    out.log(`${name}: already in ${present.dir} (${describeCounts(counts)}); nothing to do`);
    return { dir, filesDir: present.dir, fetched: false, ...counts };
  }
  if (present && (present.found.length > 0 || existsSync(join(dir, layout.subdir)))) {
    throw new DataError(
      `${name}: ${dir} holds part of the dataset (missing ${present.missing.join(', ')}); remove ${
        existsSync(join(dir, layout.subdir)) ? join(dir, layout.subdir) : 'those files'
      } and run again`,
    );
  }
  const parent = dirname(dir);
  const createdParent = await mkdir(parent, { recursive: true });
  const temporary = join(parent, `.${basename(dir)}.${process.pid}.download`);
  let unpacked: string | null = null;
  let done = false;
  try {
    const url = settings.url ?? layout.archive.url;
    const expectedMd5 = (settings.md5 ?? layout.archive.md5).toLowerCase();
    out.log(`${name}: downloading ${url} to ${temporary}`);
    const md5 = await download(url, temporary, out);
    if (md5 !== expectedMd5)
      throw downloadFailed(
        `${name}: ${url} gave an archive with MD5 ${md5}, expected ${expectedMd5}${settings.md5 ? ' (--md5)' : ' (the published checksum)'}: ` +
          'it is corrupt or another file; nothing was unpacked. Try again, or another mirror with --url',
      );
    out.log(`${name}: MD5 ${md5} as expected; unpacking`);
    unpacked = await mkdtemp(join(parent, `.${basename(dir)}.unpack-`));
    const filesDir = await unpack(name, temporary, unpacked, url);
    // Into place with one rename: a new directory as a whole, else the archive's subdirectory into it.
    if (existsSync(dir)) {
      await rename(filesDir, join(dir, layout.subdir));
      await rm(unpacked, { recursive: true, force: true });
    } else {
      await rename(unpacked, dir);
    }
    unpacked = null;
    done = true;
    const files = cifarFileNames(name).map((f) => join(dir, layout.subdir, f));
    return { dir, filesDir: join(dir, layout.subdir), fetched: true, ...(await countRecords(name, files)) };
  } finally {
    await rm(temporary, { force: true });
    if (unpacked !== null) await rm(unpacked, { recursive: true, force: true });
    if (!done && createdParent !== undefined) await rm(createdParent, { recursive: true, force: true });
  }
}

/** What the user reads at the end: where the data is and how a run finds it. */
export function describeFetch(name: CifarName, result: FetchResult, cwd: string = process.cwd()): string {
  const lines = [
    `${name}: ${result.fetched ? 'put' : 'found'} ${describeCounts(result)} in ${result.filesDir}`,
    `use it with: --dataset ${name} --data-dir ${result.dir}`,
  ];
  if (result.dir === join(resolve(cwd), 'data', name))
    lines.push(`run from ${resolve(cwd)}, the search finds it without --data-dir (./data/${name})`);
  return lines.join('\n');
}

function describeCounts({ train, test }: { train: number; test: number }): string {
  return `${train} train / ${test} test images`;
}

async function countRecords(name: CifarName, files: readonly string[]): Promise<{ train: number; test: number }> {
  const sizes = await Promise.all(files.map(async (f) => (await stat(f)).size));
  const records = sizes.map((s) => Math.floor(s / cifarRecordBytes(name)));
  return { train: records.slice(0, -1).reduce((a, b) => a + b, 0), test: records.at(-1)! };
}

/**
 * Downloads `url` (http or https, following up to 5 redirects) to `path`, showing progress;
 * returns the MD5 of what was received.
 */
async function download(url: string, path: string, out: FetchOutput, redirects = 5): Promise<string> {
  const response = await request(url, out.signal);
  const status = response.statusCode ?? 0;
  if (status >= 300 && status < 400 && response.headers.location && redirects > 0) {
    response.resume();
    return download(new URL(response.headers.location, url).href, path, out, redirects - 1);
  }
  if (status !== 200) {
    response.resume();
    throw downloadFailed(`${url} answered HTTP ${status} ${response.statusMessage ?? ''}`.trim());
  }
  const total = Number(response.headers['content-length'] ?? NaN);
  const hash = createHash('md5');
  const progress = progressLine(out.progress, total);
  let received = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      hash.update(chunk);
      progress.update(received);
      callback(null, chunk);
    },
  });
  const cut = (why: string): BatchlabError =>
    downloadFailed(
      `the download of ${url} was cut after ${received} of ${Number.isFinite(total) ? total : 'an unknown number of'} bytes (${why}); nothing was unpacked. Run the command again`,
    );
  try {
    // The request carries the signal: aborting it destroys the response, and the pipeline fails.
    await pipeline(response, counter, createWriteStream(path));
  } catch (error) {
    progress.end();
    if (out.signal?.aborted) throw out.signal.reason as Error;
    throw cut(error instanceof Error ? error.message : String(error));
  }
  progress.end();
  // A connection closed before the announced length fails the pipeline (Node's http client
  // errors with "aborted"); a length-less response that is cut short fails the MD5.
  return hash.digest('hex');
}

function request(url: string, signal: AbortSignal | undefined): Promise<IncomingMessage> {
  const parsed = new URL(url);
  const get = parsed.protocol === 'https:' ? httpsGet : parsed.protocol === 'http:' ? httpGet : null;
  if (get === null) return Promise.reject(downloadFailed(`${url}: only http and https URLs can be fetched`));
  return new Promise((resolvePromise, reject) => {
    const req = get(parsed, { signal }, resolvePromise);
    req.on('error', (error) =>
      // An abort's reason is the INTERRUPTED error interruptOnSignals gives.
      reject(
        signal?.aborted ? (signal.reason as Error) : downloadFailed(`could not download ${url}: ${error.message}`),
      ),
    );
  });
}

/** Progress as bytes of the total: a rewritten line on a TTY, else a line at each tenth. */
function progressLine(
  stream: FetchOutput['progress'],
  total: number,
): { update: (n: number) => void; end: () => void } {
  const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
  const describe = (n: number): string =>
    Number.isFinite(total) && total > 0 ? `${mb(n)} / ${mb(total)} (${Math.floor((100 * n) / total)}%)` : mb(n);
  let lastTenth = -1;
  let lastWrite = 0;
  let wrote = false;
  return {
    update: (n) => {
      if (stream.isTTY) {
        const now = Date.now();
        if (now - lastWrite < 200 && n !== total) return;
        lastWrite = now;
        wrote = true;
        stream.write(`\r  ${describe(n)}   `);
        return;
      }
      const tenth = Number.isFinite(total) && total > 0 ? Math.floor((10 * n) / total) : Math.floor(n / 10e6);
      if (tenth !== lastTenth) {
        lastTenth = tenth;
        stream.write(`  ${describe(n)}\n`);
      }
    },
    end: () => {
      if (wrote) stream.write('\n');
    },
  };
}

/**
 * Unpacks the archive at `archivePath` into the empty directory `into` and checks it holds the
 * dataset in its subdirectory, every file of whole records. Returns that subdirectory.
 */
async function unpack(name: CifarName, archivePath: string, into: string, url: string): Promise<string> {
  const what = `the archive from ${url}`;
  let entries;
  try {
    entries = readTar(await gunzipAsync(await readFile(archivePath)), what);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw downloadFailed(message.startsWith(what) ? message : `${what}: not a gzip'd tar archive (${message})`);
  }
  for (const entry of entries) {
    const target = join(into, entry.path);
    if (relative(into, target).startsWith('..')) continue;
    if (entry.type === 'directory') await mkdir(target, { recursive: true });
    else {
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, entry.data);
    }
  }
  const { subdir } = CIFAR[name];
  const scan = scanCifarDirectory(name, join(into, subdir));
  if (!scan.complete || scan.dir !== join(into, subdir))
    throw downloadFailed(
      `${what} does not hold ${subdir}/ with ${cifarFileNames(name).join(', ')}${scan.complete ? '' : ` (missing ${scan.missing.join(', ')})`}: is it the ${name} binary archive?`,
    );
  for (const file of scan.files) {
    try {
      checkCifarFileSize(name, join(subdir, basename(file)), (await stat(file)).size);
    } catch (error) {
      throw downloadFailed(`${what}: ${(error as Error).message}`);
    }
  }
  return scan.dir;
}
