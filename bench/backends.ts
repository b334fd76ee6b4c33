// Backend benchmark: a worker's gradient computation alone (computeMicroBatch: forward, backward,
// flat gradient sum) for each model on each backend, one child process per (backend, model) so
// every backend starts clean, run one after another so they do not compete for the cores.
//
// Standalone: node dist/bench/backends.js [--quick]

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { selectBackend, type BackendName } from '../shared/backend.js';
import { gatherSamples, loadDataset } from '../shared/data/index.js';
import { buildModel, DEFAULT_HIDDEN, type ModelName } from '../shared/models/index.js';
import { EpochSampler } from '../shared/sampler.js';
import { computeMicroBatch } from '../worker/gradient.js';

export interface BackendPoint {
  backend: string;
  model: ModelName;
  batch: number;
  samplesPerSecond: number;
}

const SELF = fileURLToPath(import.meta.url);

/** In the child: time computeMicroBatch for `seconds` after a warm-up; print one JSON line. */
async function probe(backend: BackendName, model: ModelName, batch: number, seconds: number): Promise<void> {
  const choice = await selectBackend(backend);
  const dataset = await loadDataset({ name: 'fashion-mnist', seed: 1 });
  const gm = { model: buildModel(model, { inputShape: dataset.sampleShape, numClasses: dataset.numClasses, hidden: DEFAULT_HIDDEN[model] }), sampleShape: dataset.sampleShape, numClasses: dataset.numClasses };
  const sampler = new EpochSampler(dataset.train.count, 1);
  const batchAt = (step: number): { images: Float32Array; labels: Int32Array } => gatherSamples(dataset.train, dataset.sampleShape, sampler.indicesFor(step, batch, 0, batch));
  const warmup = 2;
  for (let i = 0; i < warmup; i++) {
    const { images, labels } = batchAt(i);
    computeMicroBatch(gm, images, labels, batch);
  }
  let samples = 0;
  let step = warmup;
  const t0 = performance.now();
  // At least two timed calls, however slow the backend.
  while (performance.now() - t0 < seconds * 1000 || step < warmup + 2) {
    const { images, labels } = batchAt(step++);
    samples += computeMicroBatch(gm, images, labels, batch).samples;
  }
  const elapsed = (performance.now() - t0) / 1000;
  process.stdout.write(`${JSON.stringify({ backend: choice.backend, model, batch, samplesPerSecond: samples / elapsed })}\n`);
}

function runProbe(backend: BackendName, model: ModelName, batch: number, seconds: number): Promise<BackendPoint> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SELF, '--probe', backend, model, String(batch), String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      const line = out.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as BackendPoint);
      else reject(new Error(`backend probe ${backend}/${model} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}

/**
 * wasm and cpu for the MLP (batch 128) and the CNN (batch 64); also the wasm MLP at the
 * per-worker batches of the scaling points (32 and 256), the compute term of the step model.
 */
export async function benchBackends(options: { quick: boolean; log?: (line: string) => void }): Promise<BackendPoint[]> {
  const seconds = options.quick ? 2 : 6;
  const plan: [BackendName, ModelName, number][] = [
    ['wasm', 'mlp', 128],
    ['cpu', 'mlp', 128],
    ['wasm', 'cnn', 64],
    ['cpu', 'cnn', 64],
    ['wasm', 'mlp', 32],
    ['wasm', 'mlp', 256],
  ];
  const points: BackendPoint[] = [];
  for (const [backend, model, batch] of plan) {
    const point = await runProbe(backend, model, batch, seconds);
    points.push(point);
    options.log?.(`backend ${backend} ${model} batch ${batch}: ${point.samplesPerSecond.toFixed(0)} samples/s`);
  }
  return points;
}

if (process.argv[1] === SELF) {
  const at = process.argv.indexOf('--probe');
  if (at >= 0) {
    const [backend, model, batch, seconds] = process.argv.slice(at + 1);
    await probe(backend as BackendName, model as ModelName, Number(batch), Number(seconds));
  } else {
    await benchBackends({ quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
  }
}
