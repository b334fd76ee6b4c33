// The star reducer: the coordinator holds the weights and the optimizer, sends the weights to
// each worker whose copy is stale, sums every reply in micro-batch-id order in float64
// (OrderedSum) and applies the update itself. Simple and exact; its link carries N × model
// bytes each way per step, so on a real cluster it saturates first.

import { performance } from 'node:perf_hooks';
import type { Optimizer, OptimizerState } from '../shared/optimizers/index.js';
import { OrderedSum } from '../shared/ordered-sum.js';
import { allFinite } from '../shared/finite.js';
import type { Reducer, StepPlan, StepReduction, StepResult, WorkPayload } from './reducer.js';

export class StarReducer implements Reducer {
  readonly name = 'star';
  readonly paramCount: number;
  private readonly sum: OrderedSum;
  /** The reduction of the step in progress; an abandoned one can no longer touch `sum`. */
  private current: StarStepReduction | null = null;

  /** `weights` are updated in place by `optimizer` after every step. */
  constructor(
    private readonly currentWeights: Float32Array,
    private readonly optimizer: Optimizer,
  ) {
    this.paramCount = currentWeights.length;
    this.sum = new OrderedSum(this.paramCount);
  }

  beginStep(plan: StepPlan): Promise<StepReduction> {
    return Promise.resolve(this.startStep(plan));
  }

  /** `beginStep` without the promise: the star needs nothing fetched first (the reduce benchmark times it bare). */
  startStep(plan: Omit<StepPlan, 'workers'>): StepReduction {
    this.sum.begin(plan.microBatches.map((m) => m.id));
    this.current = new StarStepReduction(plan, this);
    return this.current;
  }

  weights(): Promise<Float32Array> {
    return Promise.resolve(this.currentWeights);
  }

  optimizerState(): Promise<OptimizerState> {
    return Promise.resolve(this.optimizer.state());
  }

  /** For StarStepReduction: folds one reply when `reduction` is still the current step. */
  fold(reduction: StarStepReduction, microBatchId: number, samples: number, body: Float32Array): boolean {
    if (reduction !== this.current) return false;
    this.sum.add(microBatchId, body, samples);
    return this.sum.isComplete;
  }

  /** For StarStepReduction: the mean of the complete step, applied to the weights. */
  finish(lr: number): StepResult {
    const t0 = performance.now();
    const { meanGrad, samples, sqNorm } = this.sum.finish();
    const t1 = performance.now();
    this.optimizer.apply(this.currentWeights, meanGrad, lr);
    const t2 = performance.now();
    this.current = null;
    return { samples, sqNorm, reduceSeconds: (t1 - t0) / 1000, applySeconds: (t2 - t1) / 1000 };
  }

  /** For StarStepReduction: the weights every stale worker receives. */
  get weightsForWorkers(): Float32Array {
    return this.currentWeights;
  }
}

class StarStepReduction implements StepReduction {
  readonly step: number;
  readonly result: Promise<StepResult>;
  private settle!: (result: StepResult) => void;
  private fail!: (error: unknown) => void;

  constructor(
    private readonly plan: Omit<StepPlan, 'workers'>,
    private readonly reducer: StarReducer,
  ) {
    this.step = plan.step;
    this.result = new Promise((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    // An abandoned step's failure has no one waiting for it; the gather of a live step does.
    this.result.catch(() => {});
  }

  payloadFor(weightsStep: number): WorkPayload {
    if (weightsStep === this.step) return { weights: null };
    // The weights do not change within a step: under f16 they are converted once for all workers.
    return { weights: this.reducer.weightsForWorkers, bodyKey: this.step };
  }

  /** Any worker can: the weights travel with the work. */
  canCompute(): boolean {
    return true;
  }

  /** Never asked: the star's `workerLost` keeps every reply it summed. */
  retract(microBatchId: number): void {
    throw new Error(`micro-batch ${microBatchId}: the star reducer cannot take back a reply it summed`);
  }

  /** The star sums as replies arrive: once all are in, the result is already there. */
  restart(): void {}

  /** The star applies in the last `add`, which an abandoned step's gather no longer makes. */
  abandon(): void {}

  /** A reply already in was summed here: only the lost worker's outstanding work is re-issued. */
  workerLost(): boolean {
    return false;
  }

  check(body: Float32Array | null): 'bad_shape' | 'non_finite' | null {
    if (!body || body.length !== this.reducer.paramCount) return 'bad_shape';
    return allFinite(body) ? null : 'non_finite';
  }

  /** A failure to sum or apply (e.g. the optimizer's SHAPE_MISMATCH) rejects `result`: it stops the run. */
  add(microBatchId: number, samples: number, body: Float32Array | null): void {
    try {
      if (!body) throw new Error(`micro-batch ${microBatchId}: the star reducer needs the gradient body`);
      if (this.reducer.fold(this, microBatchId, samples, body)) this.settle(this.reducer.finish(this.plan.lr));
    } catch (error) {
      this.fail(error);
    }
  }
}
