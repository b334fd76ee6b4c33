// Steps to a target (Shallue et al. 2019): the first step at which the periodic eval accuracy
// reaches --target-accuracy, or the bias-corrected EMA of the training loss falls to --target-loss.

import type { Evaluation } from '../shared/evaluate.js';
import type { StepRecord, TrainerObserver } from './trainer-observer.js';

export interface TrainingTarget {
  accuracy: number | null;
  loss: number | null;
}

/** Smoothing of the training loss for `loss` targets: β = 0.9 (about 10 steps). */
const LOSS_EMA_BETA = 0.9;

export class TargetTracker implements TrainerObserver {
  /** Steps (count, not index) after which the target was first met; null while not met. */
  stepsToTarget: number | null = null;
  private emaLoss = 0;
  private emaSteps = 0;

  constructor(private readonly target: TrainingTarget) {}

  get isSet(): boolean {
    return this.target.accuracy !== null || this.target.loss !== null;
  }

  get reached(): boolean {
    return this.stepsToTarget !== null;
  }

  onStep(record: StepRecord): void {
    if (this.target.loss === null || this.reached) return;
    this.emaSteps++;
    this.emaLoss = LOSS_EMA_BETA * this.emaLoss + (1 - LOSS_EMA_BETA) * record.loss;
    const corrected = this.emaLoss / (1 - LOSS_EMA_BETA ** this.emaSteps);
    if (corrected <= this.target.loss) this.stepsToTarget = record.step + 1;
  }

  onEval(step: number, evaluation: Evaluation): void {
    if (this.target.accuracy === null || this.reached) return;
    if (evaluation.accuracy >= this.target.accuracy) this.stepsToTarget = step + 1;
  }
}
