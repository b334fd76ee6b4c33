// Reduce+apply benchmark: the coordinator's per-step work on gradients through the star
// reducer's seam (K replies summed in id order into float64 by OrderedSum, divided by the sample
// count; then the optimizer's one-pass update), against a plain Float32Array add loop over the same K arrays, timed side by side in
// alternating rounds. Both rates count gradient values consumed per second (P × K per step).
//
// Standalone: node dist/bench/reduce.js [--quick]

import { fileURLToPath } from 'node:url';
import { StarReducer } from '../coordinator/star-reducer.js';
import { OrderedSum } from '../shared/ordered-sum.js';
import { createOptimizer, type OptimizerName } from '../shared/optimizers/index.js';
import { DEFAULT_OPTIMIZER_CONFIG } from '../shared/optimizers/optimizer.js';
import { DEFAULT_MLP_PARAMS, median } from './support.js';

export interface ReducePoint {
  params: number;
  replies: number;
  optimizer: OptimizerName;
  /** Gradient values reduced and applied per second (P × K / time of one step's reduce+apply). */
  paramsPerSecond: number;
  /** The plain add loop's values per second on the same arrays. */
  addLoopParamsPerSecond: number;
  vsJsAddLoopRatio: number;
  /** The id-order sum alone (K replies folded, mean and norm): gradient values per second. */
  reduceValuesPerSecond: number;
  /** The optimizer alone: parameters updated per second. */
  applyParamsPerSecond: number;
}

export interface ReduceResult extends ReducePoint {
  points: ReducePoint[];
}

/** dst += src for each src, the loop a user would write without any of batchlab's guarantees. */
function addLoop(dst: Float32Array, sources: readonly Float32Array[]): void {
  dst.fill(0);
  for (const src of sources) for (let i = 0; i < dst.length; i++) dst[i] = dst[i]! + src[i]!;
}

function measure(params: number, replies: number, optimizerName: OptimizerName, rounds: number): ReducePoint {
  const grads = Array.from({ length: replies }, (_, k) =>
    new Float32Array(params).map((_, i) => Math.sin(i * 0.37 + k) * 1e-3),
  );
  const weights = new Float32Array(params).map((_, i) => Math.cos(i) * 0.05);
  const optimizer = createOptimizer(optimizerName, DEFAULT_OPTIMIZER_CONFIG, [{ name: 'w', shape: [params] }]);
  const reducer = new StarReducer(weights, optimizer);
  const sum = new OrderedSum(params);
  const ids = grads.map((_, k) => k);
  const microBatches = ids.map((id) => ({ id, start: id * 32, end: id * 32 + 32 }));
  const dst = new Float32Array(params);
  let step = 0;
  // The last reply's add() sums, forms the mean and applies the update before it returns.
  const reduceApply = (): void => {
    const reduction = reducer.startStep({ step: step++, microBatches, lr: 1e-3 });
    grads.forEach((g, k) => reduction.add(k, 32, g));
  };
  // Warm-up so both loops are optimized before timing.
  for (let i = 0; i < 3; i++) {
    reduceApply();
    addLoop(dst, grads);
  }
  const ours: number[] = [];
  const plain: number[] = [];
  const reduceOnly: number[] = [];
  const applyOnly: number[] = [];
  const meanGrad = new Float32Array(params).fill(1e-4);
  const repeats = Math.max(1, Math.round(2e7 / (params * replies)));
  for (let r = 0; r < rounds; r++) {
    let t0 = performance.now();
    for (let i = 0; i < repeats; i++) reduceApply();
    ours.push((params * replies * repeats) / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    for (let i = 0; i < repeats; i++) addLoop(dst, grads);
    plain.push((params * replies * repeats) / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    for (let i = 0; i < repeats; i++) {
      sum.begin(ids);
      grads.forEach((g, k) => sum.add(k, g, 32));
      sum.finish();
    }
    reduceOnly.push((params * replies * repeats) / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    for (let i = 0; i < repeats; i++) optimizer.apply(weights, meanGrad, 1e-3);
    applyOnly.push((params * repeats) / ((performance.now() - t0) / 1000));
  }
  const paramsPerSecond = median(ours);
  const addLoopParamsPerSecond = median(plain);
  return {
    params,
    replies,
    optimizer: optimizerName,
    paramsPerSecond,
    addLoopParamsPerSecond,
    vsJsAddLoopRatio: paramsPerSecond / addLoopParamsPerSecond,
    reduceValuesPerSecond: median(reduceOnly),
    applyParamsPerSecond: median(applyOnly),
  };
}

/**
 * The headline is the default MLP's size (235,146 parameters) with 2 replies and Adam; more points
 * show a 25M-parameter model, more replies and SGD.
 */
export function benchReduce(options: { quick: boolean }): ReduceResult {
  const rounds = options.quick ? 5 : 9;
  const points: ReducePoint[] = [
    measure(DEFAULT_MLP_PARAMS, 2, 'adam', rounds),
    measure(DEFAULT_MLP_PARAMS, 8, 'adam', rounds),
    measure(DEFAULT_MLP_PARAMS, 2, 'sgd', rounds),
  ];
  if (!options.quick) points.push(measure(25_000_000, 2, 'adam', 3));
  return { ...points[0]!, points };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = benchReduce({ quick: process.argv.includes('--quick') });
  for (const p of result.points) {
    console.log(
      `${p.params} params × ${p.replies} replies, ${p.optimizer}: reduce+apply ${(p.paramsPerSecond / 1e6).toFixed(0)}M/s, add loop ${(p.addLoopParamsPerSecond / 1e6).toFixed(0)}M/s, ratio ${p.vsJsAddLoopRatio.toFixed(3)}`,
    );
  }
}
