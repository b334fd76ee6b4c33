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

if (process.argv[1] === new URL(import.meta.url).pathname) {
  console.log(clusterTable());
}
