// Dispatch: sending each worker its micro-batches for a step, with whatever the step's
// reduction says it needs (the star: the weights, when its copy is stale).

import type { MicroBatchSpec } from '../shared/protocol.js';
import type { GatherRound } from './gather-round.js';
import type { Membership } from './membership.js';
import type { StepReduction } from './reducer.js';

/** What dispatch needs of the step in progress. */
export interface DispatchTarget {
  membership: Membership;
  round: GatherRound;
  reduction: StepReduction;
  globalBatchSize: number;
}

/** Sends `plan` (worker id → micro-batches) and records ownership in the round. */
export function dispatch(target: DispatchTarget, plan: ReadonlyMap<number, MicroBatchSpec[]>): void {
  const { membership, round, reduction, globalBatchSize } = target;
  const { step } = round;
  for (const [workerId, specs] of plan) {
    const worker = membership.get(workerId);
    if (!worker) continue;
    round.assign(workerId, specs);
    const { weights, bodyKey, fields } = reduction.payloadFor(membership.schedule.weightsStep(workerId));
    const work = {
      type: 'work',
      step,
      weightsStep: step,
      hasWeights: weights !== null,
      globalBatchSize,
      microBatches: specs,
      ...fields,
    } as const;
    if (!worker.send(work, weights, bodyKey)) continue;
    membership.schedule.markWeights(workerId, step);
    membership.schedule.recordWork(
      workerId,
      step,
      specs.map((m) => m.id),
    );
  }
}
