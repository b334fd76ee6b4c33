// The alpha–beta performance model of one synchronous step (docs/PERFORMANCE.md), used to predict
// scaling efficiency from quantities measured separately (compute per sample, message latency,
// link bandwidth, reduce and apply rates) and to compare the star reducer with a sharded one.

export interface StepModelInputs {
  /** Parameters P. */
  params: number;
  /** Bytes per value on the wire: 4 (f32) or 2 (f16). */
  bytesPerValue: number;
  /** Seconds of forward+backward per sample on one worker, at the micro-batch size used. */
  computeSecondsPerSample: (samplesPerWorker: number) => number;
  /** Fixed latency of one message exchange (seconds): dispatch → reply for an empty step. */
  alphaSeconds: number;
  /** Bandwidth of the coordinator's link in each direction (bytes/s); workers' links are not the limit. */
  betaBytesPerSecond: number;
  /** Gradient values the coordinator reduces per second. */
  reduceValuesPerSecond: number;
  /** Parameters the optimizer updates per second. */
  applyParamsPerSecond: number;
}

export interface StepBreakdown {
  compute: number;
  communication: number;
  reduce: number;
  apply: number;
  latency: number;
  total: number;
}

/**
 * Star reducer: the coordinator sends the weights to N workers and receives N gradients, all
 * through its own link, then reduces N × P values and applies P. Workers compute B/N samples each.
 *   T = α + 2·N·S/β + (B/N)·c(B/N) + N·P/r_reduce + P/r_apply,   S = P × bytes per value.
 */
export function starStep(m: StepModelInputs, workers: number, globalBatch: number): StepBreakdown {
  const bytes = m.params * m.bytesPerValue;
  const perWorker = globalBatch / workers;
  const compute = perWorker * m.computeSecondsPerSample(perWorker);
  const communication = (2 * workers * bytes) / m.betaBytesPerSecond;
  const reduce = (workers * m.params) / m.reduceValuesPerSecond;
  const apply = m.params / m.applyParamsPerSecond;
  const latency = m.alphaSeconds;
  return { compute, communication, reduce, apply, latency, total: compute + communication + reduce + apply + latency };
}

/**
 * Sharded reducer (ring reduce-scatter + all-gather among workers, each on its own link; the
 * coordinator only orchestrates): every worker sends and receives 2·(N−1)/N·S in 2·(N−1)
 * latency-bound steps and reduces and applies its 1/N shard.
 */
export function shardedStep(m: StepModelInputs, workers: number, globalBatch: number): StepBreakdown {
  const bytes = m.params * m.bytesPerValue;
  const perWorker = globalBatch / workers;
  const compute = perWorker * m.computeSecondsPerSample(perWorker);
  const communication = workers > 1 ? (2 * (workers - 1) * bytes) / workers / m.betaBytesPerSecond : 0;
  const latency = m.alphaSeconds * Math.max(1, 2 * (workers - 1));
  const reduce = ((workers - 1) * (m.params / workers)) / m.reduceValuesPerSecond;
  const apply = m.params / workers / m.applyParamsPerSecond;
  return { compute, communication, reduce, apply, latency, total: compute + communication + reduce + apply + latency };
}

/** throughput(N, B) / (N × throughput(1, B/N)) = T(1, B/N) / T(N, B), the bench's definition. */
export function predictedEfficiency(
  step: (m: StepModelInputs, n: number, b: number) => StepBreakdown,
  m: StepModelInputs,
  workers: number,
  globalBatch: number,
): number {
  return step(m, 1, globalBatch / workers).total / step(m, workers, globalBatch).total;
}

/** Samples/s of N workers at global batch B. */
export function predictedThroughput(
  step: (m: StepModelInputs, n: number, b: number) => StepBreakdown,
  m: StepModelInputs,
  workers: number,
  globalBatch: number,
): number {
  return globalBatch / step(m, workers, globalBatch).total;
}

/**
 * A cluster the star must serve: 10 Gb/s links, a 25M-parameter model, GPU workers at 400
 * samples/s each (ResNet-50-class training on one V100, fp32), 32 samples per worker; reduce
 * and apply rates as measured on this machine by `batchlab bench` (rounded). The "compute
 * fraction" is compute ÷ step time: the efficiency against a machine with free communication.
 */
export function clusterTable(reduceValuesPerSecond = 500e6, applyParamsPerSecond = 150e6): string {
  const lines: string[] = ['workers  wire   star: step ms  compute fraction   sharded: step ms  compute fraction'];
  for (const bytesPerValue of [4, 2]) {
    const m: StepModelInputs = {
      params: 25e6,
      bytesPerValue,
      computeSecondsPerSample: () => 1 / 400,
      alphaSeconds: 100e-6,
      betaBytesPerSecond: 10e9 / 8,
      reduceValuesPerSecond,
      applyParamsPerSecond,
    };
    for (const n of [1, 2, 4, 8, 16, 32]) {
      const b = 32 * n;
      const star = starStep(m, n, b);
      const sharded = shardedStep(m, n, b);
      lines.push(
        `${String(n).padStart(7)}  ${bytesPerValue === 4 ? 'f32 ' : 'f16 '}  ${(star.total * 1000).toFixed(0).padStart(13)}  ${((star.compute / star.total) * 100).toFixed(0).padStart(15)}%   ${(sharded.total * 1000).toFixed(0).padStart(16)}  ${((sharded.compute / sharded.total) * 100).toFixed(0).padStart(15)}%`,
      );
    }
    // Weak scaling (32 samples per worker): the star's link time 2·N·S/β passes compute 32·c at N*.
    lines.push(
      `  star link busier than compute beyond N* = 32·c·β/(2·S) = ${(((32 / 400) * m.betaBytesPerSecond) / (2 * m.params * bytesPerValue)).toFixed(2)} workers`,
    );
  }
  return lines.join('\n');
}

/** One point of the namespace lab: a reducer at N workers, its measured compute and step. */
export interface MeasuredStep {
  workers: number;
  reducer: 'star' | 'sharded';
  microBatch: number;
  /** Mean worker compute per micro-batch in that run (seconds); N workers share two cores. */
  computeSeconds: number;
  /** Median step after the warm-up steps, of the run with the median samples/s (seconds). */
  stepSeconds: number;
}

/**
 * Measured on 2026-12-05 with `scripts/netns-scaling.sh --reducers "star sharded"`: every host
 * in its own network namespace, `tc tbf` at 100 Mbit/s on both directions of every link (the
 * coordinator's and each worker's), MLP, B = 512, micro-batch ceil(B/N) so each worker computes
 * one micro-batch per step, f32 on the wire, 30 steps of which 3 warm-up, median of 3 runs, on
 * the 2-core machine of docs/PERFORMANCE.md (load ~2–3 during the run), with the fixes for the
 * early-frame hang in. The TCP link check gave 97 Mbit/s each way.
 */
export const NETNS_100MBIT = {
  params: 235_146,
  bytesPerValue: 4,
  betaBytesPerSecond: 100e6 / 8,
  linkCheckMbit: 97,
  globalBatch: 512,
  points: [
    { workers: 2, reducer: 'star', microBatch: 256, computeSeconds: 0.02062, stepSeconds: 0.28351 },
    { workers: 2, reducer: 'sharded', microBatch: 256, computeSeconds: 0.02872, stepSeconds: 0.11104 },
    { workers: 3, reducer: 'star', microBatch: 171, computeSeconds: 0.02156, stepSeconds: 0.42545 },
    { workers: 3, reducer: 'sharded', microBatch: 171, computeSeconds: 0.03346, stepSeconds: 0.16726 },
    { workers: 4, reducer: 'star', microBatch: 128, computeSeconds: 0.02122, stepSeconds: 0.53838 },
    { workers: 4, reducer: 'sharded', microBatch: 128, computeSeconds: 0.02566, stepSeconds: 0.17241 },
  ] as readonly MeasuredStep[],
} as const;

/**
 * The model inputs of the namespace lab at a measured compute time: link time plus compute only
 * (α, reduce and apply left out), which makes shardedStep 2·(N−1)/N·S/β + compute and starStep
 * 2·N·S/β + compute.
 */
export function netnsInputs(computeSeconds: number): StepModelInputs {
  return {
    params: NETNS_100MBIT.params,
    bytesPerValue: NETNS_100MBIT.bytesPerValue,
    computeSecondsPerSample: (samplesPerWorker) => computeSeconds / samplesPerWorker,
    alphaSeconds: 0,
    betaBytesPerSecond: NETNS_100MBIT.betaBytesPerSecond,
    reduceValuesPerSecond: Infinity,
    applyParamsPerSecond: Infinity,
  };
}

/** The namespace lab's measured steps beside the model's predictions, and sharded vs star per N. */
export function netnsTable(): string {
  const { points, globalBatch } = NETNS_100MBIT;
  const lines: string[] = ['workers  reducer  compute ms  measured ms  model ms  measured/model  star/sharded'];
  for (const p of points) {
    const step = p.reducer === 'sharded' ? shardedStep : starStep;
    const model = step(netnsInputs(p.computeSeconds), p.workers, globalBatch).total;
    const star = points.find((q) => q.workers === p.workers && q.reducer === 'star');
    const ratio = p.reducer === 'sharded' && star ? (star.stepSeconds / p.stepSeconds).toFixed(2) : '';
    lines.push(
      `${String(p.workers).padStart(7)}  ${p.reducer.padEnd(7)}  ${(p.computeSeconds * 1000).toFixed(1).padStart(10)}  ${(p.stepSeconds * 1000).toFixed(0).padStart(11)}  ${(model * 1000).toFixed(0).padStart(8)}  ${(p.stepSeconds / model).toFixed(2).padStart(14)}  ${ratio.padStart(12)}`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  console.log(clusterTable());
  console.log('\nnamespace lab, 100 Mbit/s on every link (scripts/netns-scaling.sh --reducers "star sharded"):');
  console.log(netnsTable());
}
