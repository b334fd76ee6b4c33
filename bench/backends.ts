// Backend benchmark: a worker's gradient computation alone (computeMicroBatch: forward, backward,
// flat gradient sum) for each model on each backend, one child process per backend so every
// backend starts clean, run one after another so they do not compete for the cores. ResNet-20
// is also timed in PyTorch, one thread, the same way (bench/resnet_peer.py), for a ratio.
//
// Standalone: node dist/bench/backends.js [--quick]

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { selectBackend, type BackendName } from '../shared/backend.js';
import { gatherSamples, loadDataset, type Dataset } from '../shared/data/index.js';
import { buildModel, DEFAULT_HIDDEN, type ModelConfig, type ModelName } from '../shared/models/index.js';
import { EpochSampler } from '../shared/sampler.js';
import { computeMicroBatchYielding, type GradientModel } from '../worker/gradient.js';
import { peerScriptPath, probeTorch } from './peer.js';
import { seededUniform } from './support.js';

export interface BackendPoint {
  backend: string;
  /** webgpu: the adapter it ran on ("adapter llvmpipe …, software fallback" here; the GPU on a GPU node). */
  adapter?: string;
  model: ModelName;
  batch: number;
  samplesPerSecond: number;
  /** ResNet-20 only: these samples/s ÷ PyTorch's at the same batch, measured in the same run. */
  ratioToPytorch?: number;
}

/** ResNet-20 as the bench builds it: CIFAR's 32×32×3 images, 10 classes, stages of 16, 32, 64 filters. */
export const RESNET_BENCH: ModelConfig = { inputShape: [32, 32, 3], numClasses: 10, hidden: [16, 32, 64], depth: 20 };

/** PyTorch's ResNet-20 gradient at one batch size (bench/resnet_peer.py). */
export interface PytorchGradientPoint {
  batch: number;
  samplesPerSecond: number;
  calls: number;
  seconds: number;
}

export type PytorchGradientResult =
  | { available: false; reason: string }
  | {
      available: true;
      python: string;
      torchVersion: string;
      threads: number;
      model: 'resnet';
      depth: number;
      /** Trainable parameters of PyTorch's model: the same as batchlab's when the architectures match. */
      params: number;
      points: PytorchGradientPoint[];
    };

const SELF = fileURLToPath(import.meta.url);

/** Untimed calls before timing: one compiles and packs (XNNPACK weight packing, JIT), a second settles it; 1 when short. */
const warmupCalls = (seconds: number): number => (seconds < 2 ? 1 : 2);

/** The gradient model and a batch source for one spec: Fashion-MNIST, or random CIFAR-shaped data for the ResNet. */
function workload(
  model: ModelName,
  batch: number,
  dataset: () => Promise<Dataset>,
): Promise<{ gm: GradientModel; batchAt: (step: number) => { images: Float32Array; labels: Int32Array } }> {
  if (model === 'resnet') {
    // The shape matters, not the content: one fixed batch of uniform pixels, as PyTorch's side uses.
    const { inputShape, numClasses } = RESNET_BENCH;
    const images = seededUniform(batch * inputShape.reduce((a, b) => a * b, 1), 1).map((v) => (v + 1) / 2);
    const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % numClasses);
    const gm = { model: buildModel('resnet', RESNET_BENCH), sampleShape: inputShape, numClasses };
    return Promise.resolve({ gm, batchAt: () => ({ images, labels }) });
  }
  return dataset().then((data) => {
    const gm = {
      model: buildModel(model, {
        inputShape: data.sampleShape,
        numClasses: data.numClasses,
        hidden: DEFAULT_HIDDEN[model],
      }),
      sampleShape: data.sampleShape,
      numClasses: data.numClasses,
    };
    const sampler = new EpochSampler(data.train.count, 1);
    return {
      gm,
      batchAt: (step: number) => gatherSamples(data.train, data.sampleShape, sampler.indicesFor(step, batch, 0, batch)),
    };
  });
}

/** In the child: for each (model, batch), time computeMicroBatch after a warm-up; print one JSON line each. */
async function probe(backend: BackendName, seconds: number, specs: [ModelName, number][]): Promise<void> {
  const choice = await selectBackend(backend);
  let loaded: Promise<Dataset> | undefined;
  const dataset = (): Promise<Dataset> => (loaded ??= loadDataset({ name: 'fashion-mnist', seed: 1 }));
  for (const [model, batch] of specs) {
    const { gm, batchAt } = await workload(model, batch, dataset);
    // One call compiles and packs (XNNPACK weight packing, JIT); a second settles it. The same
    // count for every backend (1 under --quick), so leftover warm-up cost favours none.
    const warmup = warmupCalls(seconds);
    for (let i = 0; i < warmup; i++) {
      const { images, labels } = batchAt(i);
      await computeMicroBatchYielding(gm, images, labels, batch);
    }
    let samples = 0;
    let step = warmup;
    const t0 = performance.now();
    // At least two timed calls, however slow the backend.
    while (performance.now() - t0 < seconds * 1000 || step < warmup + 2) {
      const { images, labels } = batchAt(step++);
      samples += (await computeMicroBatchYielding(gm, images, labels, batch)).samples;
    }
    const elapsed = (performance.now() - t0) / 1000;
    gm.model.dispose();
    process.stdout.write(
      `${JSON.stringify({ backend: choice.backend, ...(choice.adapter ? { adapter: choice.device } : {}), model, batch, samplesPerSecond: samples / elapsed })}\n`,
    );
  }
}

/** One child process per backend (each starts clean and loads the data once); a point per spec, as it comes. */
function runProbes(
  backend: BackendName,
  seconds: number,
  specs: [ModelName, number][],
  onPoint: (point: BackendPoint) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [SELF, '--probe', backend, String(seconds), ...specs.map(([model, batch]) => `${model}:${batch}`)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    let got = 0;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      let newline;
      while ((newline = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, newline).trim();
        out = out.slice(newline + 1);
        if (line.startsWith('{')) {
          got++;
          onPoint(JSON.parse(line) as BackendPoint);
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      if (code === 0 && got === specs.length) resolve();
      else
        reject(
          new Error(
            `backend probe ${backend} exited with ${code} after ${got} of ${specs.length} points: ${err.trim().split('\n').slice(-3).join(' | ')}`,
          ),
        );
    });
  });
}

/**
 * ResNet-20's batch: 32, and 4 where one call of 32 takes minutes here (cpu; webgpu on a
 * software adapter, under --quick). PyTorch is timed at each batch used.
 */
export const RESNET_BATCH = 32;
export const RESNET_SMALL_BATCH = 4;

/**
 * wasm, cpu and webgpu for the MLP (batch 128), the CNN (batch 64; 16 with --quick, as the cpu
 * backend needs about 3.5 s per CNN call of 64 and takes a warm-up and two timed calls at least)
 * and ResNet-20 (batch 32; 4 on cpu, and on webgpu under --quick); also the wasm MLP at the per-worker batches of the scaling
 * points (32 and 256), the compute term of the step model. Backends run one after another so they
 * do not compete for the cores. webgpu runs on whatever adapter it finds, hardware or software,
 * and each point names it. Then PyTorch, one thread, times ResNet-20 at each of those batches,
 * and each ResNet point gets its ratio to PyTorch's.
 */
export async function benchBackends(options: {
  quick: boolean;
  log?: (line: string) => void;
}): Promise<{ points: BackendPoint[]; pytorch: PytorchGradientResult }> {
  const seconds = options.quick ? 0.75 : 6;
  const cnnBatch = options.quick ? 16 : 64;
  const plan: [BackendName, [ModelName, number][]][] = [
    [
      'wasm',
      [
        ['mlp', 128],
        ['cnn', cnnBatch],
        ['mlp', 32],
        ['mlp', 256],
        ['resnet', RESNET_BATCH],
      ],
    ],
    [
      'cpu',
      [
        ['mlp', 128],
        ['cnn', cnnBatch],
        ['resnet', RESNET_SMALL_BATCH],
      ],
    ],
    [
      'webgpu',
      [
        ['mlp', 128],
        ['cnn', cnnBatch],
        ['resnet', options.quick ? RESNET_SMALL_BATCH : RESNET_BATCH],
      ],
    ],
  ];
  const points: BackendPoint[] = [];
  for (const [backend, specs] of plan) {
    const probed = runProbes(backend, seconds, specs, (point) => {
      points.push(point);
      options.log?.(
        `backend ${backend}${point.adapter ? ` (${point.adapter})` : ''} ${point.model} batch ${point.batch}: ${point.samplesPerSecond.toFixed(point.samplesPerSecond < 100 ? 1 : 0)} samples/s`,
      );
    });
    // webgpu needs a Vulkan driver this machine may not have: say so and measure the rest.
    if (backend === 'webgpu')
      await probed.catch((error: Error) => options.log?.(`backend webgpu not measured: ${error.message}`));
    else await probed;
  }
  const resnet = points.filter((p) => p.model === 'resnet');
  const batches = [...new Set(resnet.map((p) => p.batch))].sort((a, b) => a - b);
  const pytorch = await benchPytorchResnet({ batches, seconds, warmup: warmupCalls(seconds) });
  if (!pytorch.available) options.log?.(`PyTorch ResNet-20 not measured: ${pytorch.reason}`);
  else {
    for (const p of pytorch.points)
      options.log?.(
        `PyTorch ${pytorch.torchVersion} (1 thread) resnet batch ${p.batch}: ${p.samplesPerSecond.toFixed(1)} samples/s`,
      );
    for (const point of resnet) {
      const theirs = pytorch.points.find((p) => p.batch === point.batch);
      if (theirs) point.ratioToPytorch = point.samplesPerSecond / theirs.samplesPerSecond;
    }
  }
  return { points, pytorch };
}

/**
 * PyTorch's ResNet-20 gradient, one thread, at each batch size, through bench/resnet_peer.py with
 * the probes' warm-up and least time. When no interpreter imports torch, the result says why.
 */
export async function benchPytorchResnet(options: {
  batches: number[];
  seconds: number;
  warmup: number;
  python?: string;
  timeoutMs?: number;
}): Promise<PytorchGradientResult> {
  if (options.batches.length === 0) return { available: false, reason: 'no ResNet point was measured' };
  const torch = probeTorch(options.python);
  if ('reason' in torch) return { available: false, reason: torch.reason };
  const args = [
    '-u',
    peerScriptPath('resnet_peer.py'),
    '--batch',
    options.batches.join(','),
    '--depth',
    String(RESNET_BENCH.depth),
    '--seconds',
    String(options.seconds),
    '--warmup',
    String(options.warmup),
    '--json',
  ];
  const lines = await new Promise<string[]>((resolve, reject) => {
    const child = spawn(torch.python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 10 * 60_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`resnet_peer.py exited with ${code ?? signal}: ${err.trim()}`));
      else resolve(out.split('\n').filter((l) => l.trim().startsWith('{')));
    });
  });
  const rows = lines.map(
    (l) =>
      JSON.parse(l) as PytorchGradientPoint & { torchVersion: string; threads: number; depth: number; params: number },
  );
  const points = options.batches.map((batch) => {
    const row = rows.find((r) => r.batch === batch);
    if (row === undefined || !(row.samplesPerSecond > 0))
      throw new Error(`resnet_peer.py reported no valid result for batch ${batch}`);
    return { batch, samplesPerSecond: row.samplesPerSecond, calls: row.calls, seconds: row.seconds };
  });
  return {
    available: true,
    python: torch.python,
    torchVersion: torch.version,
    threads: rows[0]!.threads,
    model: 'resnet',
    depth: rows[0]!.depth,
    params: rows[0]!.params,
    points,
  };
}

if (process.argv[1] === SELF) {
  const at = process.argv.indexOf('--probe');
  if (at >= 0) {
    const [backend, seconds, ...specs] = process.argv.slice(at + 1);
    await probe(
      backend as BackendName,
      Number(seconds),
      specs.map((spec) => {
        const [model, batch] = spec.split(':');
        return [model as ModelName, Number(batch)];
      }),
    );
  } else {
    await benchBackends({ quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
  }
}
