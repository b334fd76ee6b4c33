// `batchlab bench`: the performance numbers of docs/PERFORMANCE.md, measured side by side in one
// run on this machine (it is shared and noisy, so only ratios taken in the same run are
// compared): transport vs raw TCP, reduce+apply vs an add loop, scaling on 1 and 2 workers for
// the MLP and the CNN, load balancing with a slowed worker, backends, and PyTorch DDP (gloo) on
// the same MLP and data when python3-torch is installed.

import { writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { benchBackends, type BackendPoint, type PytorchGradientResult } from '../bench/backends.js';
import { predictedEfficiency, predictedThroughput, starStep, type StepModelInputs } from '../bench/model.js';
import { runPeer, type PeerResult } from '../bench/peer.js';
import { benchReduce, type ReduceResult } from '../bench/reduce.js';
import { benchBalance, benchScaling, measureRun, type BalancePoint, type ScalingPoint } from '../bench/scaling.js';
import { DEFAULT_MLP_PARAMS, median } from '../bench/support.js';
import { benchTransport, type TransportResult } from '../bench/transport.js';
import type { ReducerName } from '../coordinator/reducer.js';
import { measuredScalingEfficiency } from '../shared/efficiency.js';
import { OptionError } from '../shared/errors.js';
import { readText } from './option-values.js';
import { parseLocalSettings } from './options.js';

export const BENCH_SECTIONS = ['transport', 'reduce', 'scaling', 'balance', 'backends', 'peer'] as const;
export type BenchSection = (typeof BENCH_SECTIONS)[number];

export interface BenchSettings {
  quick: boolean;
  json?: string;
  sections: BenchSection[];
}

/** batchlab (one reducer) and DDP at one B, 2 workers, measured in `pairs` interleaved pairs; the values are medians. */
export interface Comparison {
  globalBatchSize: number;
  reducer: ReducerName;
  pairs: number;
  /** Each pair's efficiencies, in the order measured. */
  batchlabEfficiencies: number[];
  peerEfficiencies: number[];
  batchlabSamplesPerSecond: number;
  batchlabScalingEfficiency: number | null;
  peerSamplesPerSecond: number;
  peerScalingEfficiency: number | null;
  /** batchlab samples/s ÷ DDP samples/s, 2 workers at this B. */
  throughputRatio: number;
}

export interface BenchReport {
  quick: boolean;
  startedAt: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  transport?: TransportResult;
  reduce?: ReduceResult;
  scaling?: ScalingPoint[];
  balance?: BalancePoint[];
  backends?: BackendPoint[];
  /** PyTorch's ResNet-20 gradient (one thread) at the batches of the ResNet backend points, or why not. */
  pytorchGradient?: PytorchGradientResult;
  peer?: PeerResult;
  /** batchlab vs DDP for the MLP with 2 workers, when both were measured. */
  comparison?: Comparison[];
  /** The step model's predictions from this run's transport, reduce and backend numbers, beside the measured scaling. */
  model?: {
    inputs: Omit<StepModelInputs, 'computeSecondsPerSample'> & { computeSecondsPerSample: Record<string, number> };
    points: ModelCheck[];
  };
  wallSeconds: number;
  /** Wall seconds each section took, by section name. */
  sectionSeconds: Partial<Record<BenchSection, number>>;
}

export interface ModelCheck {
  globalBatchSize: number;
  workers: number;
  /** Per-step fixed cost fitted on the 1-worker point at B/N (seconds). */
  fittedAlphaSeconds: number;
  predictedEfficiency: number;
  measuredEfficiency: number | null;
  predictedSamplesPerSecond: number;
  measuredSamplesPerSecond: number;
}

/** Interleaved pairs per B in the comparison with DDP: this machine swings by ±25 points between runs. */
const PAIRS = 5;

/**
 * The sharded reducer and DDP at B with 2 workers, alternating which goes first, `pairs` times;
 * each side's efficiency against its own 1-worker run at B/2 of the same pair. Null when DDP cannot run.
 */
async function pairWithDdp(
  plan: { b: number; pairs: number; steps: number; warmupSteps: number },
  context: Parameters<typeof measureRun>[1],
  log: (line: string) => void,
): Promise<Comparison | null> {
  const { b, pairs, steps, warmupSteps } = plan;
  const ours: { efficiency: number; samplesPerSecond: number }[] = [];
  const theirs: { efficiency: number; samplesPerSecond: number }[] = [];
  const runOurs = async (): Promise<void> => {
    const spec = { model: 'mlp', microBatch: b / 2, warmupSteps, timedSteps: steps, reducer: 'sharded' } as const;
    const one = await measureRun({ ...spec, globalBatchSize: b / 2, workers: 1 }, context);
    const two = await measureRun({ ...spec, globalBatchSize: b, workers: 2 }, context);
    const efficiency = measuredScalingEfficiency(two.samplesPerSecond, 2, one.samplesPerSecond);
    ours.push({ efficiency, samplesPerSecond: two.samplesPerSecond });
  };
  const runTheirs = async (): Promise<boolean> => {
    const result = await runPeer({ globalBatchSizes: [b], workers: [2], steps, warmupSteps });
    const point = result.available ? result.points.find((p) => p.workers === 2) : undefined;
    if (!point || point.scalingEfficiency === null) return false;
    theirs.push({ efficiency: point.scalingEfficiency, samplesPerSecond: point.samplesPerSecond });
    return true;
  };
  for (let i = 0; i < pairs; i++) {
    if (i % 2 === 0) {
      await runOurs();
      if (!(await runTheirs())) return null;
    } else {
      if (!(await runTheirs())) return null;
      await runOurs();
    }
    log(
      `pair ${i + 1}/${pairs} B=${b}: sharded ${(ours.at(-1)!.efficiency * 100).toFixed(1)}%, DDP ${(theirs.at(-1)!.efficiency * 100).toFixed(1)}%`,
    );
  }
  const oursRate = median(ours.map((p) => p.samplesPerSecond));
  const theirRate = median(theirs.map((p) => p.samplesPerSecond));
  return {
    globalBatchSize: b,
    reducer: 'sharded',
    pairs,
    batchlabEfficiencies: ours.map((p) => p.efficiency),
    peerEfficiencies: theirs.map((p) => p.efficiency),
    batchlabSamplesPerSecond: oursRate,
    batchlabScalingEfficiency: median(ours.map((p) => p.efficiency)),
    peerSamplesPerSecond: theirRate,
    peerScalingEfficiency: median(theirs.map((p) => p.efficiency)),
    throughputRatio: oursRate / theirRate,
  };
}

/** Predicts the MLP scaling points from the separately measured terms, when all were measured. */
function checkModel(report: BenchReport): BenchReport['model'] {
  const { transport, reduce, backends, scaling } = report;
  if (!transport || !reduce || !backends || !scaling) return undefined;
  const mlp = backends.filter((p) => p.backend === 'wasm' && p.model === 'mlp');
  if (mlp.length === 0) return undefined;
  const perSample: Record<string, number> = Object.fromEntries(
    mlp.map((p) => [String(p.batch), 1 / p.samplesPerSecond]),
  );
  // c(b): the measured batch nearest to b.
  const c = (b: number): number =>
    1 /
    mlp.reduce((best, p) => (Math.abs(Math.log(p.batch / b)) < Math.abs(Math.log(best.batch / b)) ? p : best))
      .samplesPerSecond;
  const mlpSized = transport.points.reduce((best, p) =>
    Math.abs(p.messageBytes - DEFAULT_MLP_PARAMS * 4) < Math.abs(best.messageBytes - DEFAULT_MLP_PARAMS * 4) ? p : best,
  );
  const adam = reduce.points.find((p) => p.params === DEFAULT_MLP_PARAMS && p.optimizer === 'adam') ?? reduce;
  const inputs: StepModelInputs = {
    params: DEFAULT_MLP_PARAMS,
    bytesPerValue: 4,
    computeSecondsPerSample: c,
    alphaSeconds: transport.wsRoundTripSeconds,
    betaBytesPerSecond: mlpSized.wsBytesPerSecond,
    reduceValuesPerSecond: adam.reduceValuesPerSecond,
    applyParamsPerSecond: adam.applyParamsPerSecond,
  };
  // α, the fixed cost of a step beyond its modelled terms (event loops, weight upload into the
  // model, scheduling on shared cores), is fitted on each 1-worker point; the model then has to
  // predict the 2-worker point from it. The round trip of a small frame is its floor.
  const points: ModelCheck[] = [];
  // The model describes the star: its data path is the coordinator's.
  for (const two of scaling.filter((p) => p.model === 'mlp' && p.workers > 1 && p.reducer === 'star')) {
    const one = scaling.find(
      (p) => p.model === 'mlp' && p.workers === 1 && p.globalBatchSize === two.globalBatchSize / two.workers,
    );
    if (!one) continue;
    const modelled = starStep({ ...inputs, alphaSeconds: 0 }, 1, one.globalBatchSize).total;
    const alphaSeconds = Math.max(inputs.alphaSeconds, one.globalBatchSize / one.samplesPerSecond - modelled);
    const fitted = { ...inputs, alphaSeconds };
    points.push({
      globalBatchSize: two.globalBatchSize,
      workers: two.workers,
      fittedAlphaSeconds: alphaSeconds,
      predictedEfficiency: predictedEfficiency(starStep, fitted, two.workers, two.globalBatchSize),
      measuredEfficiency: two.scalingEfficiency,
      predictedSamplesPerSecond: predictedThroughput(starStep, fitted, two.workers, two.globalBatchSize),
      measuredSamplesPerSecond: two.samplesPerSecond,
    });
  }
  return { inputs: { ...inputs, computeSecondsPerSample: perSample }, points };
}

export function parseBenchSettings(raw: Record<string, unknown>): BenchSettings {
  const only = readText(raw, 'only');
  let sections: BenchSection[] = [...BENCH_SECTIONS];
  if (only !== undefined) {
    const names = only.split(',').map((s) => s.trim());
    const bad = names.find((n) => !(BENCH_SECTIONS as readonly string[]).includes(n));
    if (bad !== undefined || names.length === 0)
      throw new OptionError('only', only, `comma-separated sections from ${BENCH_SECTIONS.join(', ')}`);
    sections = names as BenchSection[];
  }
  const json = readText(raw, 'json');
  if (json === '') throw new OptionError('json', '', 'a file name for the JSON report');
  return { quick: raw.quick === true, sections, ...(json ? { json } : {}) };
}

const pct = (x: number | null | undefined): string =>
  x === null || x === undefined ? '—' : `${(x * 100).toFixed(1)}%`;
const rate = (x: number): string => Math.round(x).toLocaleString('en-US');

/** The human-readable tables printed at the end. */
export function formatBench(report: BenchReport): string {
  const lines: string[] = [];
  const m = report.machine;
  lines.push(
    `batchlab bench${report.quick ? ' --quick' : ''}: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ${report.wallSeconds.toFixed(0)} s`,
  );
  if (report.transport) {
    lines.push(
      '',
      'transport (loopback, one message in flight)   raw TCP     ws (zero mask)  ratio   ws (random mask)  ratio',
    );
    for (const p of report.transport.points) {
      lines.push(
        `  ${(p.messageBytes / 1e6).toFixed(2).padStart(6)} MB messages                      ${(p.rawTcpBytesPerSecond / 1e9).toFixed(2)} GB/s   ${(p.wsBytesPerSecond / 1e9).toFixed(2)} GB/s       ${p.ratio.toFixed(2)}    ${(p.wsRandomMaskBytesPerSecond / 1e9).toFixed(2)} GB/s         ${p.randomMaskRatio.toFixed(2)}`,
      );
    }
    lines.push(`  bufferutil ${report.transport.bufferutil ? 'loaded' : 'absent'}`);
  }
  if (report.reduce) {
    lines.push('', 'reduce + apply (values/s)        ours          add loop      ratio');
    for (const p of report.reduce.points) {
      lines.push(
        `  ${String(p.params).padStart(8)} params × ${p.replies} replies, ${p.optimizer.padEnd(4)}  ${(p.paramsPerSecond / 1e6).toFixed(0).padStart(5)} M/s     ${(p.addLoopParamsPerSecond / 1e6).toFixed(0).padStart(5)} M/s     ${p.vsJsAddLoopRatio.toFixed(2)}`,
      );
    }
  }
  if (report.scaling) {
    lines.push('', 'scaling (Fashion-MNIST, micro-batch B/N)   samples/s   efficiency');
    for (const p of report.scaling)
      lines.push(
        `  ${p.model.padEnd(4)} B=${String(p.globalBatchSize).padEnd(5)} ${p.workers} worker${p.workers > 1 ? 's' : ' '} ${(p.workers > 1 ? p.reducer : '').padEnd(8)}       ${rate(p.samplesPerSecond).padStart(9)}   ${pct(p.scalingEfficiency)}`,
      );
  }
  if (report.balance) {
    lines.push('', 'load balancing (MLP, B=512, micro-batch 32, second worker slowed)   samples/s   of capacity');
    for (const p of report.balance)
      lines.push(
        `  ${p.balance.padEnd(10)} slowdown ${p.slowdown.join(',')}                                    ${rate(p.samplesPerSecond).padStart(9)}   ${pct(p.efficiencyVsCapacity)}`,
      );
  }
  if (report.backends) {
    lines.push('', 'backends (gradient computation only)   samples/s   ÷ PyTorch (1 thread)');
    for (const p of report.backends)
      lines.push(
        `  ${p.backend.padEnd(6)} ${p.model.padEnd(6)} batch ${String(p.batch).padEnd(4)}            ${(p.samplesPerSecond < 100 ? p.samplesPerSecond.toFixed(1) : rate(p.samplesPerSecond)).padStart(9)}   ${p.ratioToPytorch === undefined ? '' : `${p.ratioToPytorch.toFixed(2)}×`.padEnd(18)}${p.adapter ? `   ${p.adapter}` : ''}`.trimEnd(),
      );
    const torch = report.pytorchGradient;
    if (torch?.available)
      for (const p of torch.points)
        lines.push(
          `  PyTorch ${torch.torchVersion}, ${torch.threads} thread, resnet batch ${String(p.batch).padEnd(4)} ${p.samplesPerSecond.toFixed(1).padStart(9)}`,
        );
    else if (torch) lines.push(`  PyTorch resnet: not run: ${torch.reason}`);
    for (const model of ['mlp', 'cnn'] as const) {
      const cpu = report.backends.find((p) => p.model === model && p.backend === 'cpu');
      const wasm = report.backends.find((p) => p.model === model && p.backend === 'wasm' && p.batch === cpu?.batch);
      if (wasm && cpu)
        lines.push(
          `  ${model}: wasm is ${(wasm.samplesPerSecond / cpu.samplesPerSecond).toFixed(1)}× cpu at batch ${cpu.batch}`,
        );
      const webgpu = report.backends.find((p) => p.model === model && p.backend === 'webgpu' && p.batch === cpu?.batch);
      if (wasm && webgpu)
        lines.push(
          `  ${model}: webgpu is ${(webgpu.samplesPerSecond / wasm.samplesPerSecond).toFixed(2)}× wasm at batch ${webgpu.batch} (${webgpu.adapter ?? 'adapter unknown'})`,
        );
    }
  }
  if (report.peer) {
    if (!report.peer.available) lines.push('', `peer (PyTorch DDP): not run: ${report.peer.reason}`);
    else {
      lines.push(
        '',
        `peer: PyTorch ${report.peer.torchVersion} DDP (gloo, 1 thread per process)   samples/s   efficiency`,
      );
      for (const p of report.peer.points)
        lines.push(
          `  mlp  B=${String(p.globalBatchSize).padEnd(5)} ${p.workers} process${p.workers > 1 ? 'es' : '  '}                        ${rate(p.samplesPerSecond).padStart(9)}   ${p.workers > 1 ? pct(p.scalingEfficiency) : '—'}`,
        );
    }
  }
  if (report.comparison?.length) {
    const { reducer, pairs } = report.comparison[0]!;
    lines.push(
      '',
      `batchlab (${reducer}) vs DDP, MLP, 2 workers, medians of ${pairs} interleaved pairs   efficiency (ours / DDP)   samples/s (ours / DDP = ratio)`,
    );
    for (const c of report.comparison) {
      lines.push(
        `  B=${String(c.globalBatchSize).padEnd(5)}                        ${pct(c.batchlabScalingEfficiency)} / ${pct(c.peerScalingEfficiency)}           ${rate(c.batchlabSamplesPerSecond)} / ${rate(c.peerSamplesPerSecond)} = ${c.throughputRatio.toFixed(2)}`,
      );
    }
  }
  if (report.model) {
    const i = report.model.inputs;
    lines.push(
      '',
      `step model (star): small-frame round trip ${(i.alphaSeconds * 1e6).toFixed(0)} µs, β ${(i.betaBytesPerSecond / 1e9).toFixed(2)} GB/s, reduce ${(i.reduceValuesPerSecond / 1e6).toFixed(0)} M values/s, apply ${(i.applyParamsPerSecond / 1e6).toFixed(0)} M params/s, c(b) ${Object.entries(
        i.computeSecondsPerSample,
      )
        .map(([b, c]) => `${b}: ${(c * 1e6).toFixed(0)} µs`)
        .join(', ')}`,
      '  MLP, 2 workers   α fitted on 1 worker   predicted efficiency / measured   predicted samples/s / measured',
    );
    for (const p of report.model.points) {
      lines.push(
        `  B=${String(p.globalBatchSize).padEnd(5)}          ${(p.fittedAlphaSeconds * 1000).toFixed(1).padStart(6)} ms            ${pct(p.predictedEfficiency)} / ${pct(p.measuredEfficiency)}                  ${rate(p.predictedSamplesPerSecond)} / ${rate(p.measuredSamplesPerSecond)}`,
      );
    }
  }
  return lines.join('\n');
}

/** Runs the selected sections in order, logging progress to `log`. */
export async function runBench(
  settings: BenchSettings,
  log: (line: string) => void,
  signal?: AbortSignal,
): Promise<BenchReport> {
  const t0 = performance.now();
  const cpu = cpus();
  const report: BenchReport = {
    quick: settings.quick,
    startedAt: new Date().toISOString(),
    machine: {
      cpus: cpu.length,
      cpuModel: cpu[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.versions.node,
      platform: `${process.platform}-${process.arch}`,
    },
    wallSeconds: 0,
    sectionSeconds: {},
  };
  const quick = settings.quick;
  const indented = (line: string): void => log(`  ${line}`);
  /** Runs `body` if `section` was asked for, announcing it with `title` and timing it. */
  const section = async (name: BenchSection, title: string, body: () => void | Promise<void>): Promise<void> => {
    if (!settings.sections.includes(name)) return;
    log(`${name}: ${title} …`);
    const started = performance.now();
    await body();
    const seconds = (performance.now() - started) / 1000;
    report.sectionSeconds[name] = seconds;
    indented(`(${name}: ${seconds.toFixed(0)} s)`);
  };
  await section('transport', 'raw TCP vs ws on loopback', async () => {
    report.transport = await benchTransport({ quick });
  });
  await section('reduce', 'reduce+apply vs a plain add loop', () => {
    report.reduce = benchReduce({ quick });
  });
  await section('scaling', 'local runs on 1 and 2 workers', async () => {
    report.scaling = (await benchScaling({ quick, log: indented, configure: parseLocalSettings, signal })).scaling;
  });
  await section('balance', 'a slowed worker, equal vs throughput split', async () => {
    report.balance = await benchBalance({ quick, log: indented, configure: parseLocalSettings, signal });
  });
  await section('backends', 'wasm vs cpu vs webgpu, and ResNet-20 beside PyTorch', async () => {
    const { points, pytorch } = await benchBackends({ quick, log: indented });
    report.backends = points;
    report.pytorchGradient = pytorch;
  });
  await section('peer', 'PyTorch DDP (gloo) on the same MLP and data', async () => {
    // The same warm-up and timed steps as the MLP scaling runs (bench/scaling.ts).
    report.peer = await runPeer({
      globalBatchSizes: [64, 512],
      workers: [2],
      steps: quick ? 30 : 150,
      warmupSteps: quick ? 20 : 30,
    });
    if (!report.peer.available) return indented(`not run: ${report.peer.reason}`);
    indented(`the sharded reducer against DDP: ${PAIRS} interleaved pairs at B = 64 and 512`);
    report.comparison = [];
    for (const b of [64, 512]) {
      const pairs = { b, pairs: PAIRS, steps: quick ? 20 : 100, warmupSteps: quick ? 10 : 30 };
      const comparison = await pairWithDdp(pairs, { configure: parseLocalSettings, signal }, indented);
      if (comparison) report.comparison.push(comparison);
    }
  });
  report.model = checkModel(report);
  report.wallSeconds = (performance.now() - t0) / 1000;
  if (settings.json) await writeFile(settings.json, `${JSON.stringify(report, null, 2)}\n`);
  return report;
}
