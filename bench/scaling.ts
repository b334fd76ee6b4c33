// Scaling benchmark: real `batchlab local` runs (coordinator in this process, workers as child
// processes over loopback WebSockets) on Fashion-MNIST, timed per step after a warm-up (JIT,
// XNNPACK weight packing and TCP buffer growth settle within a few dozen steps; the DDP peer
// gets the same number of warm-up steps).
// Scaling efficiency follows the definition: throughput(N workers, B) ÷ (N ×
// throughput(1 worker, B/N)), each measured in this same run. Every run uses one micro-batch
// per worker (micro-batch = B/N), as DDP gives each process B/N samples.
//
// The load-balancing point runs 2 workers with the second slowed 3× (`--debug-slowdown 1,3`)
// and 16 micro-batches per step, once with the equal split and once with the throughput split.
//
// Runs are described in the CLI's own option names (what a user would pass to `batchlab local`)
// and turned into a configuration by the caller's `configure` (the CLI's parser), so the bench
// measures exactly what the command would run. `batchlab bench --only scaling,balance` runs it.

import { launchLocal, type LocalRunConfig } from '../coordinator/launch-local.js';
import type { StepRecord } from '../coordinator/trainer-observer.js';
import { measuredScalingEfficiency } from '../shared/efficiency.js';
import type { ModelName } from '../shared/models/index.js';
import type { ReducerName } from '../coordinator/reducer.js';

export interface RunMeasurement {
  model: ModelName;
  reducer: ReducerName;
  globalBatchSize: number;
  workers: number;
  microBatch: number;
  samplesPerSecond: number;
  /** Mean seconds per timed step. */
  stepSeconds: number;
  /** Mean seconds per timed step in each coordinator phase (StepRecord.phases). */
  phaseSeconds: StepRecord['phases'];
  backend: string;
}

export interface ScalingPoint {
  model: ModelName;
  /** Where the 2-worker run summed (1-worker points: star, their own reference). */
  reducer: ReducerName;
  globalBatchSize: number;
  workers: number;
  samplesPerSecond: number;
  /** null for 1 worker (its own reference). */
  scalingEfficiency: number | null;
}

export interface BalancePoint {
  balance: 'equal' | 'throughput';
  slowdown: number[];
  globalBatchSize: number;
  microBatch: number;
  samplesPerSecond: number;
  /** samples/s ÷ the sum of each worker's own capacity (1-worker samples/s at B/2 ÷ its slowdown). */
  efficiencyVsCapacity: number;
}

/** Turns `batchlab local` options (name → text) into a run configuration; throws on a bad one. */
export type ConfigureRun = (options: Record<string, string>) => LocalRunConfig;

export interface RunSpec {
  model: ModelName;
  globalBatchSize: number;
  workers: number;
  microBatch: number;
  warmupSteps: number;
  timedSteps: number;
  backend?: string;
  slowdown?: number[];
  balance?: 'equal' | 'throughput';
  wireDtype?: 'f32' | 'f16';
  dataset?: string;
  reducer?: ReducerName;
}

/** One local run; samples/s over the steps after the warm-up (step time only, not start-up or eval). */
export async function measureRun(
  spec: RunSpec,
  context: Pick<ScalingOptions, 'configure' | 'signal'>,
): Promise<RunMeasurement> {
  const settings = context.configure({
    model: spec.model,
    dataset: spec.dataset ?? 'fashion-mnist',
    'global-batch': String(spec.globalBatchSize),
    'micro-batch': String(spec.microBatch),
    workers: String(spec.workers),
    steps: String(spec.warmupSteps + spec.timedSteps),
    'eval-every': '0',
    'metrics-port': 'off',
    backend: spec.backend ?? 'auto',
    balance: spec.balance ?? 'throughput',
    'wire-dtype': spec.wireDtype ?? 'f32',
    reducer: spec.reducer ?? 'star',
    ...(spec.slowdown ? { 'debug-slowdown': spec.slowdown.join(',') } : {}),
  });
  const steps: StepRecord[] = [];
  // Step times only: the evaluations a run ends with (~0.9 s) would only slow the benchmark.
  const observer = { onStep: (record: StepRecord): void => void steps.push(record) };
  const report = await launchLocal(
    { ...settings, timingOnly: true },
    { command: 'bench', observer, log: () => {}, signal: context.signal },
  );
  const timed = steps.slice(spec.warmupSteps);
  const seconds = timed.reduce((a, r) => a + r.wallSeconds, 0);
  const samples = timed.reduce((a, r) => a + r.stats.samples, 0);
  return {
    model: spec.model,
    reducer: spec.reducer ?? 'star',
    globalBatchSize: spec.globalBatchSize,
    workers: spec.workers,
    microBatch: spec.microBatch,
    samplesPerSecond: samples / seconds,
    stepSeconds: seconds / timed.length,
    phaseSeconds: meanPhases(timed),
    backend: report.backend,
  };
}

/** The mean of each phase over `steps`. */
function meanPhases(steps: readonly StepRecord[]): StepRecord['phases'] {
  const mean = (phase: keyof StepRecord['phases']): number =>
    steps.reduce((a, r) => a + (r.phases[phase] ?? 0), 0) / steps.length;
  const exchange = steps.some((r) => r.phases['reduce-scatter'] !== undefined)
    ? { 'reduce-scatter': mean('reduce-scatter'), 'all-gather': mean('all-gather') }
    : {};
  return {
    dispatch: mean('dispatch'),
    'gather-wait': mean('gather-wait'),
    reduce: mean('reduce'),
    apply: mean('apply'),
    ...exchange,
  };
}

/**
 * "step 31.8 ms = dispatch 0.8 + gather-wait (reduce overlaps it) 29.5 + finish 0.0 + apply 1.6":
 * where a step's time goes. Replies are checked and folded as they arrive, inside gather-wait;
 * the mean and norm are formed in the final reply's fold, so the step's "reduce" phase is only
 * what the reducer does after that, printed as "finish".
 */
export function describePhases(run: RunMeasurement): string {
  const ms = (seconds: number): string => (seconds * 1000).toFixed(1);
  const p = run.phaseSeconds;
  return `step ${ms(run.stepSeconds)} ms = dispatch ${ms(p.dispatch)} + gather-wait (reduce overlaps it) ${ms(p['gather-wait'])} + finish ${ms(p.reduce)} + apply ${ms(p.apply)}`;
}

export interface ScalingOptions {
  quick: boolean;
  log?: (line: string) => void;
  configure: ConfigureRun;
  /** Aborting stops the run in progress and its worker processes (Ctrl-C). */
  signal?: AbortSignal;
}

/** Efficiency points for MLP and CNN at 1 and 2 workers. */
export async function benchScaling(
  options: ScalingOptions,
): Promise<{ scaling: ScalingPoint[]; runs: RunMeasurement[] }> {
  const log = options.log ?? (() => {});
  const plan: { model: ModelName; batches: number[]; warmup: number; timed: number }[] = options.quick
    ? [
        { model: 'mlp', batches: [64, 512], warmup: 20, timed: 30 },
        { model: 'cnn', batches: [64], warmup: 5, timed: 10 },
      ]
    : [
        { model: 'mlp', batches: [64, 512], warmup: 30, timed: 150 },
        { model: 'cnn', batches: [64, 256], warmup: 10, timed: 30 },
      ];
  const scaling: ScalingPoint[] = [];
  const runs: RunMeasurement[] = [];
  let pair = 0;
  for (const { model, batches, warmup, timed } of plan) {
    for (const b of batches) {
      const half = b / 2;
      const run = (workers: number, reducer: ReducerName): Promise<RunMeasurement> =>
        measureRun(
          {
            model,
            globalBatchSize: workers === 1 ? half : b,
            workers,
            microBatch: half,
            warmupSteps: warmup,
            timedSteps: timed,
            reducer,
          },
          options,
        );
      // Rotate the order across points so drift on a shared machine does not favour one side.
      const order: [number, ReducerName][] = [
        [1, 'star'],
        [2, 'star'],
        [2, 'sharded'],
      ];
      for (let i = 0; i < pair % 3; i++) order.push(order.shift()!);
      pair++;
      const measured = new Map<string, RunMeasurement>();
      for (const [workers, reducer] of order) measured.set(`${workers}-${reducer}`, await run(workers, reducer));
      const one = measured.get('1-star')!;
      runs.push(...measured.values());
      scaling.push({
        model,
        reducer: 'star',
        globalBatchSize: half,
        workers: 1,
        samplesPerSecond: one.samplesPerSecond,
        scalingEfficiency: null,
      });
      for (const reducer of ['star', 'sharded'] as const) {
        const two = measured.get(`2-${reducer}`)!;
        const efficiency = measuredScalingEfficiency(two.samplesPerSecond, 2, one.samplesPerSecond);
        scaling.push({
          model,
          reducer,
          globalBatchSize: b,
          workers: 2,
          samplesPerSecond: two.samplesPerSecond,
          scalingEfficiency: efficiency,
        });
        log(
          `scaling ${model} B=${b} ${reducer}: 1 worker @${half} ${one.samplesPerSecond.toFixed(0)}/s, 2 workers @${b} ${two.samplesPerSecond.toFixed(0)}/s, efficiency ${(efficiency * 100).toFixed(1)}%`,
        );
      }
      for (const r of measured.values())
        log(`  ${r.workers} worker${r.workers > 1 ? 's' : ''} (${r.reducer}): ${describePhases(r)}`);
    }
  }
  return { scaling, runs };
}

/** A 3× slower second worker: equal split vs throughput split, against the workers' capacity. */
export async function benchBalance(options: ScalingOptions): Promise<BalancePoint[]> {
  const log = options.log ?? (() => {});
  const b = 512;
  const micro = 32;
  const slowdown = [1, 3];
  const warmup = options.quick ? 10 : 30;
  const timed = options.quick ? 10 : 60;
  const single = await measureRun(
    { model: 'mlp', globalBatchSize: b / 2, workers: 1, microBatch: micro, warmupSteps: warmup, timedSteps: timed },
    options,
  );
  const capacity = slowdown.reduce((a, f) => a + single.samplesPerSecond / f, 0);
  const points: BalancePoint[] = [];
  for (const balance of ['equal', 'throughput'] as const) {
    const run = await measureRun(
      {
        model: 'mlp',
        globalBatchSize: b,
        workers: 2,
        microBatch: micro,
        warmupSteps: warmup,
        timedSteps: timed,
        slowdown,
        balance,
      },
      options,
    );
    points.push({
      balance,
      slowdown,
      globalBatchSize: b,
      microBatch: micro,
      samplesPerSecond: run.samplesPerSecond,
      efficiencyVsCapacity: run.samplesPerSecond / capacity,
    });
    log(
      `balance ${balance} (slowdown ${slowdown.join(',')}): ${run.samplesPerSecond.toFixed(0)}/s = ${((run.samplesPerSecond / capacity) * 100).toFixed(1)}% of capacity`,
    );
  }
  return points;
}
