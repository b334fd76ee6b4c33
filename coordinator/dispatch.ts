// Dispatch: sending each worker its micro-batches for a step, with the weights when its copy is stale.

import type { MicroBatchSpec } from '../shared/protocol.js';
import type { GatherRound } from './gather-round.js';
import type { Membership } from './membership.js';

/** Sends `plan` (worker id → micro-batches) and records ownership in `round`. */
export function dispatch(membership: Membership, round: GatherRound, plan: Map<number, MicroBatchSpec[]>, weights: Float32Array, globalBatchSize: number): void {
  for (const [workerId, specs] of plan) {
    const worker = membership.workers.get(workerId);
    if (!worker) continue;
    round.assign(workerId, specs);
    const hasWeights = worker.weightsStep !== round.step;
    const sent = membership.send(
      worker,
      { type: 'work', step: round.step, weightsStep: round.step, hasWeights, globalBatchSize, microBatches: specs },
      hasWeights ? weights : null,
      // The weights do not change within a step: under f16 they are converted once for all workers.
      round.step,
    );
    if (sent) worker.weightsStep = round.step;
  }
}
