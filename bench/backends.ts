// Backend benchmark: a worker's gradient computation alone (computeMicroBatch: forward, backward,
// flat gradient sum) for each model on each backend, one child process per backend so every
// backend starts clean, run one after another so they do not compete for the cores.
//
// Standalone: node dist/bench/backends.js [--quick]

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { selectBackend, type BackendName } from '../shared/backend.js';
import { gatherSamples, loadDataset } from '../shared/data/index.js';
import { buildModel, DEFAULT_HIDDEN, type ModelName } from '../shared/models/index.js';
import { EpochSampler } from '../shared/sampler.js';
import { computeMicroBatchYielding } from '../worker/gradient.js';

export interface BackendPoint {
  backend: string;
  /** webgpu: the adapter it ran on ("adapter llvmpipe …, software fallback" here; the GPU on a GPU node). */
  adapter?: string;
  model: ModelName;
  batch: number;
  samplesPerSecond: number;
}

const SELF = fileURLToPath(import.meta.url);

/** In the child: for each (model, batch), time computeMicroBatch after a warm-up; print one JSON line each. */
async function probe(backend: BackendName, seconds: number, specs: [ModelName, number][]): Promise<void> {
  const choice = await selectBackend(backend);
  const dataset = await loadDataset({ name: 'fashion-mnist', seed: 1 });
  for (const [model, batch] of specs) {
    const gm = {
      model: buildModel(model, {
        inputShape: dataset.sampleShape,
        numClasses: dataset.numClasses,
        hidden: DEFAULT_HIDDEN[model],
      }),
      sampleShape: dataset.sampleShape,
      numClasses: dataset.numClasses,
    };
    const sampler = new EpochSampler(dataset.train.count, 1);
    const batchAt = (step: number): { images: Float32Array; labels: Int32Array } =>
      gatherSamples(dataset.train, dataset.sampleShape, sampler.indicesFor(step, batch, 0, batch));
    // One call compiles and packs (XNNPACK weight packing, JIT); a second settles it. The same
    // count for every backend (1 under --quick), so leftover warm-up cost favours none.
    const warmup = seconds < 2 ? 1 : 2;
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
 * wasm, cpu and webgpu for the MLP (batch 128) and the CNN (batch 64; 16 with --quick, as the cpu
 * backend needs about 3.5 s per CNN call of 64 and takes a warm-up and two timed calls at least);
 * also the wasm MLP at the per-worker batches of the scaling points (32 and 256), the compute term
 * of the step model. Backends run one after another so they do not compete for the cores. webgpu
 * runs on whatever adapter it finds, hardware or software, and each point names it.
 */
export async function benchBackends(options: {
  quick: boolean;
  log?: (line: string) => void;
}): Promise<BackendPoint[]> {
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
      ],
    ],
    [
      'cpu',
      [
        ['mlp', 128],
        ['cnn', cnnBatch],
      ],
    ],
    [
      'webgpu',
      [
        ['mlp', 128],
        ['cnn', cnnBatch],
      ],
    ],
  ];
  const points: BackendPoint[] = [];
  for (const [backend, specs] of plan) {
    const probed = runProbes(backend, seconds, specs, (point) => {
      points.push(point);
      options.log?.(
        `backend ${backend}${point.adapter ? ` (${point.adapter})` : ''} ${point.model} batch ${point.batch}: ${point.samplesPerSecond.toFixed(0)} samples/s`,
      );
    });
    // webgpu needs a Vulkan driver this machine may not have: say so and measure the rest.
    if (backend === 'webgpu')
      await probed.catch((error: Error) => options.log?.(`backend webgpu not measured: ${error.message}`));
    else await probed;
  }
  return points;
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
