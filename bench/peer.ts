// The peer benchmark: the same model, data and global batch sizes trained by PyTorch DDP (gloo,
// CPU, one thread per process) through bench/ddp_peer.py, so batchlab's throughput and scaling
// efficiency can be put beside a standard data-parallel implementation on the same machine.
// PyTorch is optional: when python3 cannot import torch (or the dataset is missing) the result
// says so in plain words instead of throwing.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measuredScalingEfficiency } from '../shared/efficiency.js';
import { scanIdxDirectory } from '../shared/data/idx-dataset.js';
import { datasetSearchPaths, findPackageRoot } from '../shared/data/search-paths.js';

export interface PeerOptions {
  globalBatchSizes: number[];
  workers: number[];
  /** Timed steps per point. */
  steps: number;
  /** Untimed steps before the timed ones, per point. */
  warmupSteps: number;
  /** Directory of the Fashion-MNIST IDX files; default: where batchlab itself looks. */
  dataDir?: string;
  /** Python interpreter; default: $BATCHLAB_PYTHON, else `python3` on PATH, else /usr/bin/python3. */
  python?: string;
  /** Kill the benchmark after this long (default 30 minutes). */
  timeoutMs?: number;
}

export interface PeerPoint {
  globalBatchSize: number;
  workers: number;
  samplesPerSecond: number;
  /**
   * throughput(N, B) / (N × throughput(1, B/N)) from points of this same run (1 for N = 1);
   * null only when the single-process point is missing.
   */
  scalingEfficiency: number | null;
  /** False for single-process points runPeer added only as the baseline of an efficiency. */
  requested: boolean;
  stepsTimed: number;
  seconds: number;
}

export type PeerResult =
  | { available: false; reason: string }
  | { available: true; points: PeerPoint[]; python: string; torchVersion: string; dataDir: string };

/** What the script prints per point (one JSON line each). */
interface ScriptPoint {
  globalBatchSize: number;
  workers: number;
  samplesPerSecond: number;
  stepsTimed: number;
  seconds: number;
}

/**
 * A script of bench/ (default the DDP peer's): next to this module in source, under the package
 * root when compiled (dist/bench/peer.js).
 */
export function peerScriptPath(name = 'ddp_peer.py'): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const root = findPackageRoot(here);
  const candidates = [
    join(here, name),
    ...(root === undefined ? [] : [join(root, 'bench', name)]),
    join(here, '..', '..', 'bench', name),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`bench/${name} not found; looked in: ${candidates.join(', ')}`);
  return found;
}

/** A requested or added point, in the order measured. */
export interface PlannedPoint {
  globalBatchSize: number;
  workers: number;
  requested: boolean;
}

/**
 * The points to measure: every requested (B, N) and, for N > 1, the single-process point
 * (B/N, 1) its efficiency needs, measured just before it (added ones marked requested: false).
 * @throws Error when a size or count is not a positive integer or B is not divisible by N
 */
export function planPoints(globalBatchSizes: readonly number[], workers: readonly number[]): PlannedPoint[] {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (globalBatchSizes.length === 0 || !globalBatchSizes.every(positive))
    throw new Error(`global batch sizes must be positive integers: ${globalBatchSizes.join(',')}`);
  if (workers.length === 0 || !workers.every(positive))
    throw new Error(`worker counts must be positive integers: ${workers.join(',')}`);
  const requested = new Set(globalBatchSizes.flatMap((b) => workers.map((n) => `${b}:${n}`)));
  const plan: PlannedPoint[] = [];
  const seen = new Set<string>();
  const add = (globalBatchSize: number, n: number) => {
    const key = `${globalBatchSize}:${n}`;
    if (seen.has(key)) return;
    seen.add(key);
    plan.push({ globalBatchSize, workers: n, requested: requested.has(key) });
  };
  for (const b of globalBatchSizes) {
    for (const n of workers) {
      if (b % n !== 0) throw new Error(`global batch ${b} is not divisible by ${n} workers`);
      if (n > 1) add(b / n, 1);
      add(b, n);
    }
  }
  return plan;
}

/** Adds scalingEfficiency to each measured point, from the points of the same run. */
export function withEfficiencies<T extends { globalBatchSize: number; workers: number; samplesPerSecond: number }>(
  points: readonly T[],
): (T & { scalingEfficiency: number | null })[] {
  const single = new Map(points.filter((p) => p.workers === 1).map((p) => [p.globalBatchSize, p.samplesPerSecond]));
  return points.map((p) => {
    const base = single.get(p.globalBatchSize / p.workers);
    const e = base === undefined ? NaN : measuredScalingEfficiency(p.samplesPerSecond, p.workers, base);
    return { ...p, scalingEfficiency: Number.isFinite(e) ? e : null };
  });
}

/**
 * The first interpreter that imports torch with gloo support, or why none does. Debian's
 * python3-torch lives in /usr/bin/python3's path, which a `python3` on PATH (pyenv, venv) may not see.
 */
export function probeTorch(python?: string): { python: string; version: string } | { reason: string } {
  const override = python ?? process.env.BATCHLAB_PYTHON;
  const candidates = override ? [override] : ['python3', '/usr/bin/python3'];
  const probe =
    'import numpy, torch, torch.distributed as d; assert d.is_available() and d.is_gloo_available(), "torch.distributed has no gloo"; print(torch.__version__)';
  const failures: string[] = [];
  for (const candidate of candidates) {
    const r = spawnSync(candidate, ['-c', probe], { encoding: 'utf8', timeout: 120_000 });
    if (r.error) {
      failures.push(
        `${candidate}: ${(r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message}`,
      );
    } else if (r.status === 0) {
      return { python: candidate, version: r.stdout.trim() };
    } else {
      const last = r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`;
      failures.push(`${candidate}: ${last}`);
    }
  }
  return { reason: `PyTorch is not available (${failures.join('; ')}); install it with apt-get install python3-torch` };
}

/** The first directory holding the Fashion-MNIST IDX files, or why there is none. */
function findDataset(dataDir: string | undefined): { dir: string } | { reason: string } {
  const searched = datasetSearchPaths('fashion-mnist', { dataDir });
  for (const dir of searched) if (scanIdxDirectory(dir).complete) return { dir };
  return {
    reason: `Fashion-MNIST not found (looked in ${searched.join(', ')}); apt-get install dataset-fashion-mnist or pass dataDir`,
  };
}

/** Runs the script and returns its JSON lines; throws with its stderr when it fails. */
function runScript(python: string, args: string[], timeoutMs: number): Promise<ScriptPoint[]> {
  return new Promise((resolve, reject) => {
    // Own process group, so a timeout also stops the spawned DDP workers.
    const child = spawn(python, ['-u', peerScriptPath(), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-8000)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return reject(new Error(`ddp_peer.py did not finish within ${timeoutMs} ms:\n${stderr}`));
      if (code !== 0) return reject(new Error(`ddp_peer.py exited with ${code ?? signal}:\n${stderr}`));
      try {
        resolve(
          stdout
            .split('\n')
            .filter((l) => l.trim().startsWith('{'))
            .map((l) => JSON.parse(l) as ScriptPoint),
        );
      } catch (err) {
        reject(new Error(`ddp_peer.py printed a malformed JSON line (${(err as Error).message}):\n${stdout}`));
      }
    });
  });
}

/**
 * Measures PyTorch DDP throughput at each (global batch, workers) point, plus the
 * single-process points the scaling efficiencies need, in one run of bench/ddp_peer.py.
 * @returns available: false with the reason when PyTorch or the dataset is missing
 * @throws Error on invalid options or when the benchmark itself fails
 */
export async function runPeer(options: PeerOptions): Promise<PeerResult> {
  const plan = planPoints(options.globalBatchSizes, options.workers);
  if (!(Number.isInteger(options.steps) && options.steps >= 1))
    throw new Error(`steps must be a positive integer: ${options.steps}`);
  if (!(Number.isInteger(options.warmupSteps) && options.warmupSteps >= 0))
    throw new Error(`warmupSteps must be a non-negative integer: ${options.warmupSteps}`);
  const data = findDataset(options.dataDir);
  if ('reason' in data) return { available: false, reason: data.reason };
  const torch = probeTorch(options.python);
  if ('reason' in torch) return { available: false, reason: torch.reason };

  const args = [
    '--data-dir',
    data.dir,
    '--points',
    plan.map((p) => `${p.globalBatchSize}:${p.workers}`).join(','),
    '--steps',
    String(options.steps),
    '--warmup-steps',
    String(options.warmupSteps),
    '--json',
  ];
  const lines = await runScript(torch.python, args, options.timeoutMs ?? 30 * 60_000);
  const measured = plan.map((p) => {
    const line = lines.find((l) => l.globalBatchSize === p.globalBatchSize && l.workers === p.workers);
    if (line === undefined || !(line.samplesPerSecond > 0))
      throw new Error(`ddp_peer.py reported no valid result for B=${p.globalBatchSize}, workers=${p.workers}`);
    return {
      globalBatchSize: p.globalBatchSize,
      workers: p.workers,
      samplesPerSecond: line.samplesPerSecond,
      requested: p.requested,
      stepsTimed: line.stepsTimed,
      seconds: line.seconds,
    };
  });
  const points = withEfficiencies(measured).map((p) => ({
    globalBatchSize: p.globalBatchSize,
    workers: p.workers,
    samplesPerSecond: p.samplesPerSecond,
    scalingEfficiency: p.scalingEfficiency,
    requested: p.requested,
    stepsTimed: p.stepsTimed,
    seconds: p.seconds,
  }));
  return { available: true, points, python: torch.python, torchVersion: torch.version, dataDir: data.dir };
}
