// Scheduling within a step, over in-memory workers (no sockets, no processes): dispatch, the
// gather's re-issue on deadlines, lost workers, non-finite replies and workers joining, and the
// refusal of late and duplicate replies. Every completed step is checked against the weights
// one worker computing every micro-batch gives, byte for byte. Deadlines run on fake timers.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { dispatch } from '../../coordinator/dispatch.js';
import { gather } from '../../coordinator/gather.js';
import { GatherRound } from '../../coordinator/gather-round.js';
import { Membership } from '../../coordinator/membership.js';
import { splitMicroBatches } from '../../coordinator/split.js';
import { StarReducer } from '../../coordinator/star-reducer.js';
import type { TrainerObserver } from '../../coordinator/trainer-observer.js';
import { BatchlabError } from '../../shared/errors.js';
import { cutMicroBatches } from '../../shared/micro-batches.js';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG, type Optimizer } from '../../shared/optimizers/index.js';
import type { MicroBatchSpec } from '../../shared/protocol.js';
import { bytesOf } from '../support/tensors.js';
import { fakeGradient, InMemoryChannel } from '../support/in-memory-channel.js';

const P = 6;
const DEADLINE_MS = 1_000;
const WORKER_WAIT_MS = 30_000;
/** 16 samples in micro-batches of 2: ids 0..7. */
const MICRO_BATCHES = cutMicroBatches(16, 2);

function newReducer(): { reducer: StarReducer; weights: Float32Array } {
  const weights = Float32Array.from({ length: P }, (_, i) => 0.1 * i - 0.2);
  const adam = createOptimizer('adam', DEFAULT_OPTIMIZER_CONFIG, [{ name: 'w', shape: [P] }]);
  return { reducer: new StarReducer(weights, adam), weights };
}

/** The weights after `step` when one process computes every micro-batch. */
function referenceWeights(step: number, specs: readonly MicroBatchSpec[] = MICRO_BATCHES): Buffer {
  const { reducer, weights } = newReducer();
  const reduction = reducer.startStep({ step, microBatches: specs, lr: 0.01 });
  for (const spec of specs) reduction.add(spec.id, spec.end - spec.start, fakeGradient(step, spec, P));
  return Buffer.from(bytesOf(weights));
}

/** Membership with `count` joined in-memory workers (ids 1..count) and a record of what happened. */
function createLab(count: number) {
  const logs: string[] = [];
  const log = (line: string): void => void logs.push(line);
  const membership = new Membership(log);
  const workers = Array.from({ length: count }, (_, i) => new InMemoryChannel(i + 1, membership, P));
  for (const worker of workers) membership.join(worker);
  const rejects: { reason: string; workerId: number }[] = [];
  const reassigns: { reason: string; count: number }[] = [];
  membership.on('rejected', (reason) => rejects.push({ reason, workerId: -1 }));
  const observer: TrainerObserver = {
    onReject: (reason, workerId) => void rejects.push({ reason, workerId }),
    onReassign: (reason, n) => void reassigns.push({ reason, count: n }),
  };
  return { membership, workers, logs, log, rejects, reassigns, observer };
}

type Lab = ReturnType<typeof createLab>;

/** Splits `step` equally over the lab's live workers, dispatches it and starts gathering. */
function startStep(lab: Lab, step: number) {
  const { reducer, weights } = newReducer();
  const reduction = reducer.startStep({ step, microBatches: MICRO_BATCHES, lr: 0.01 });
  const round = new GatherRound(MICRO_BATCHES, reduction);
  const target = { membership: lab.membership, round, reduction, globalBatchSize: 16 };
  // As the trainer splits: over the ready workers that are not quarantined.
  const live = lab.membership.workingWorkers().map((w) => w.workerId);
  dispatch(target, splitMicroBatches(MICRO_BATCHES, lab.membership.schedule.splitWorkers(live), 'equal'));
  const context = {
    ...target,
    balance: 'equal' as const,
    deadlineMs: DEADLINE_MS,
    workerWaitTimeoutMs: WORKER_WAIT_MS,
    evictAfter: 3,
    observer: lab.observer,
    log: lab.log,
  };
  const done = gather(context);
  let settled = false;
  done.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { done, weights, round, isSettled: () => settled };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('gather over in-memory workers', () => {
  it('completes a step split over two workers with the weights of one worker computing everything', async () => {
    const lab = createLab(2);
    const step = startStep(lab, 0);
    expect(lab.workers[0]!.idsFor(0)).toEqual([0, 1, 2, 3]);
    expect(lab.workers[1]!.idsFor(0)).toEqual([4, 5, 6, 7]);
    lab.workers[1]!.answer();
    lab.workers[0]!.answer();
    const result = await step.done;
    expect(result.samples).toBe(16);
    expect(bytesOf(step.weights).equals(referenceWeights(0))).toBe(true);
    expect(lab.reassigns).toEqual([]);
  });

  it('re-issues micro-batches a worker has not answered by the deadline, and the step ends exact', async () => {
    const lab = createLab(2);
    const [fast, stuck] = lab.workers;
    const step = startStep(lab, 3);
    fast!.answer();
    await vi.advanceTimersByTimeAsync(DEADLINE_MS - 1);
    expect(fast!.outstanding).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(fast!.outstanding.map((o) => o.spec.id)).toEqual([4, 5, 6, 7]);
    expect(lab.reassigns).toEqual([{ reason: 'timeout', count: 4 }]);
    expect(lab.logs.join('\n')).toMatch(
      /step 3: worker 2 \(mem-2\) did not answer micro-batches 4,5,6,7 within 1\.0 s; re-issuing them/,
    );
    fast!.answer();
    await step.done;
    expect(bytesOf(step.weights).equals(referenceWeights(3))).toBe(true);
    // The stuck worker's late reply within the step would be refused, not double-counted.
    expect(stuck!.outstanding).toHaveLength(4);
  });

  it("refuses the slow worker's late replies as unassigned within the step and as stale_step after it", async () => {
    const lab = createLab(2);
    const [fast, slow] = lab.workers;
    const step = startStep(lab, 1);
    fast!.answer();
    await vi.advanceTimersByTimeAsync(DEADLINE_MS);
    slow!.answer(4);
    expect(lab.rejects).toEqual([{ reason: 'unassigned', workerId: 2 }]);
    fast!.answer();
    await step.done;
    slow!.answer(5);
    expect(lab.rejects).toEqual([
      { reason: 'unassigned', workerId: 2 },
      { reason: 'stale_step', workerId: -1 },
    ]);
    expect(bytesOf(step.weights).equals(referenceWeights(1))).toBe(true);
  });

  it('quarantines a worker that misses the deadline: the next step neither gives it work nor waits for it, until it has answered what it owes', async () => {
    const lab = createLab(2);
    const [fast, slow] = lab.workers;
    const lates: number[] = [];
    lab.membership.on('late', (worker, streak) => void lates.push(worker.workerId, streak));
    const first = startStep(lab, 0);
    fast!.answer();
    await vi.advanceTimersByTimeAsync(DEADLINE_MS);
    expect(lates).toEqual([2, 1]);
    expect(lab.membership.schedule.quarantined()).toEqual([2]);
    fast!.answer();
    await first.done;
    // Step 1: all of it to the fast worker, done without any deadline passing.
    const second = startStep(lab, 1);
    expect(fast!.idsFor(1)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(slow!.idsFor(1)).toEqual([]);
    fast!.answer();
    await second.done;
    expect(bytesOf(second.weights).equals(referenceWeights(1))).toBe(true);
    // Its late replies for step 0 come in (refused as stale); with the last one it takes work again.
    slow!.answer(4);
    slow!.answer(5);
    slow!.answer(6);
    expect(lab.membership.schedule.quarantined()).toEqual([2]);
    slow!.answer(7);
    expect(lab.membership.schedule.quarantined()).toEqual([]);
    expect(lab.logs.join('\n')).toMatch(/worker 2 \(mem-2\) answered its late work; it takes work again/);
    const third = startStep(lab, 2);
    expect(slow!.idsFor(2)).toEqual([4, 5, 6, 7]);
    fast!.answer();
    slow!.answer();
    await third.done;
    expect(bytesOf(third.weights).equals(referenceWeights(2))).toBe(true);
    expect(lab.membership.get(2)).toBe(slow);
  });

  it('evicts a worker that stays silent for 3 deadlines in a row, and a step then waits for one worker fewer', async () => {
    const lab = createLab(2);
    const [fast, stuck] = lab.workers;
    const evicted: string[] = [];
    lab.membership.on('evicted', (worker, reason) => void evicted.push(`${worker.workerId}: ${reason}`));
    const step = startStep(lab, 0);
    fast!.answer();
    // The step's deadline marks it late (1); it finishes without it. Each further deadline of
    // silence counts again (2, 3), checked here before each split as the trainer does.
    await vi.advanceTimersByTimeAsync(DEADLINE_MS);
    fast!.answer();
    await step.done;
    await vi.advanceTimersByTimeAsync(DEADLINE_MS - 1);
    lab.membership.checkSilent(DEADLINE_MS, 3);
    expect(lab.membership.get(2)).toBe(stuck);
    expect(lab.membership.requiredWorkers(2)).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    lab.membership.checkSilent(DEADLINE_MS, 3);
    expect(evicted).toEqual([]);
    await vi.advanceTimersByTimeAsync(DEADLINE_MS);
    lab.membership.checkSilent(DEADLINE_MS, 3);
    expect(evicted).toEqual(['2: late 3 times in a row (step deadline 1.0 s)']);
    expect(stuck!.evictReason).toBe('evicted: late 3 times in a row (step deadline 1.0 s)');
    expect(lab.logs.join('\n')).toMatch(/worker 2 \(mem-2\) evicted: late 3 times in a row \(step deadline 1\.0 s\)/);
    expect(lab.membership.get(2)).toBeUndefined();
    expect(lab.membership.requiredWorkers(2)).toBe(1);
    expect(lab.membership.requiredWorkers(1)).toBe(1);
    // The step had finished with the fast worker's replies alone, exact.
    expect(bytesOf(step.weights).equals(referenceWeights(0))).toBe(true);
  });

  it('never evicts with --evict-after 0', () => {
    const lab = createLab(2);
    const [, worker] = lab.workers;
    for (let i = 0; i < 5; i++) lab.membership.markLate(2, DEADLINE_MS, 0);
    expect(worker!.evictReason).toBeNull();
    expect(lab.membership.schedule.quarantined()).toEqual([2]);
  });

  it('refuses a repeated reply as duplicate and counts its micro-batch once', async () => {
    const lab = createLab(2);
    const [a, b] = lab.workers;
    const step = startStep(lab, 2);
    a!.answer(0);
    a!.sendReply(2, MICRO_BATCHES[0]!);
    expect(lab.rejects).toEqual([{ reason: 'duplicate', workerId: 1 }]);
    a!.answer();
    b!.answer();
    const result = await step.done;
    expect(result.samples).toBe(16);
    expect(bytesOf(step.weights).equals(referenceWeights(2))).toBe(true);
  });

  it("re-issues a lost worker's unanswered micro-batches to the others at once, and the step ends exact", async () => {
    const lab = createLab(3);
    const [a, b, c] = lab.workers;
    const step = startStep(lab, 4);
    expect(b!.idsFor(4)).toEqual([2, 3, 4]);
    b!.answer(2);
    b!.disconnect('killed');
    // No deadline has passed: the loss alone moved the work.
    expect(lab.reassigns).toEqual([{ reason: 'worker_lost', count: 2 }]);
    expect([...a!.idsFor(4), ...c!.idsFor(4)].sort()).toEqual([0, 1, 3, 4, 5, 6, 7]);
    a!.answer();
    c!.answer();
    await step.done;
    expect(bytesOf(step.weights).equals(referenceWeights(4))).toBe(true);
    expect(lab.logs.join('\n')).toMatch(/worker 2 \(mem-2\) lost: killed; re-issuing micro-batches 3,4/);
  });

  it('pauses when every worker is lost and hands the work, with the weights, to a worker that joins mid-step', async () => {
    const lab = createLab(1);
    const [only] = lab.workers;
    const step = startStep(lab, 5);
    only!.answer(0);
    only!.disconnect();
    await vi.advanceTimersByTimeAsync(DEADLINE_MS * 3);
    expect(step.isSettled()).toBe(false);
    expect(lab.logs.join('\n')).toMatch(/no live worker for micro-batches 1,2,3,4,5,6,7; paused until one joins/);
    const newcomer = new InMemoryChannel(9, lab.membership, P);
    lab.membership.join(newcomer);
    const [work] = newcomer.works();
    expect(work!.microBatches.map((m) => m.id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(work!.hasWeights).toBe(true);
    expect(newcomer.received[0]!.body).not.toBeNull();
    newcomer.answer();
    await step.done;
    expect(bytesOf(step.weights).equals(referenceWeights(5))).toBe(true);
    expect(lab.reassigns).toEqual([{ reason: 'worker_lost', count: 7 }]);
  });

  it('gives a worker that joins mid-step no work of that step while the others hold it', async () => {
    const lab = createLab(2);
    const step = startStep(lab, 6);
    const newcomer = new InMemoryChannel(3, lab.membership, P);
    lab.membership.join(newcomer);
    lab.workers.forEach((w) => w.answer());
    await step.done;
    expect(newcomer.works()).toEqual([]);
    expect(bytesOf(step.weights).equals(referenceWeights(6))).toBe(true);
  });

  it('stops the run with NO_WORKERS when nobody joins within --worker-wait', async () => {
    const lab = createLab(1);
    const step = startStep(lab, 7);
    lab.workers[0]!.disconnect();
    const failure = expect(step.done).rejects.toThrow(/no worker came back within 30 s/);
    await vi.advanceTimersByTimeAsync(WORKER_WAIT_MS);
    await failure;
  });

  it('recomputes a non-finite reply on another worker, and calls two such replies divergence', async () => {
    const lab = createLab(2);
    const [a, b] = lab.workers;
    const step = startStep(lab, 8);
    a!.answer(0, { lossSum: Number.NaN });
    expect(lab.rejects).toEqual([{ reason: 'non_finite', workerId: 1 }]);
    expect(lab.reassigns).toEqual([{ reason: 'non_finite', count: 1 }]);
    expect(b!.idsFor(8)).toEqual([4, 5, 6, 7, 0]);
    b!.answer(0, { lossSum: Number.NaN });
    const error = await step.done.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BatchlabError);
    expect((error as BatchlabError).code).toBe('NON_FINITE');
  });

  it('stops the step with the error when the update fails, instead of waiting for ever', async () => {
    const lab = createLab(2);
    const failing: Optimizer = {
      name: 'broken',
      apply: () => {
        throw new BatchlabError('SHAPE_MISMATCH', 'the optimizer refuses these shapes');
      },
      state: () => ({}),
      loadState: () => {},
    };
    const reduction = new StarReducer(new Float32Array(P), failing).startStep({
      step: 0,
      microBatches: MICRO_BATCHES,
      lr: 0.01,
    });
    const round = new GatherRound(MICRO_BATCHES, reduction);
    const target = { membership: lab.membership, round, reduction, globalBatchSize: 16 };
    dispatch(target, splitMicroBatches(MICRO_BATCHES, lab.membership.schedule.splitWorkers([1, 2]), 'equal'));
    const done = gather({
      ...target,
      balance: 'equal',
      deadlineMs: DEADLINE_MS,
      workerWaitTimeoutMs: WORKER_WAIT_MS,
      evictAfter: 3,
      observer: lab.observer,
      log: lab.log,
    });
    lab.workers.forEach((w) => w.answer());
    await expect(done).rejects.toThrow(/the optimizer refuses these shapes/);
  });

  it('sends the weights only to a worker whose copy is stale', () => {
    const lab = createLab(2);
    lab.membership.schedule.markWeights(1, 11);
    startStep(lab, 11);
    expect(lab.workers[0]!.works()[0]!.hasWeights).toBe(false);
    expect(lab.workers[0]!.received[0]!.body).toBeNull();
    expect(lab.workers[1]!.works()[0]!.hasWeights).toBe(true);
    expect(lab.workers[1]!.received[0]!.body).toHaveLength(P);
    expect(lab.membership.schedule.weightsStep(2)).toBe(11);
  });
});

describe('Membership', () => {
  it('reports a loss once, only for a joined worker, and none after close', async () => {
    const lab = createLab(2);
    const lost: number[] = [];
    lab.membership.on('lost', (w) => lost.push(w.workerId));
    lab.workers[0]!.disconnect();
    lab.workers[0]!.disconnect();
    await lab.membership.close('run finished');
    lab.workers[1]!.disconnect();
    expect(lost).toEqual([1]);
    expect(lab.workers[1]!.shutdownReason).toBe('run finished');
  });

  it('lists ready workers by ascending id whatever the join order', () => {
    const membership = new Membership(() => {});
    for (const id of [5, 2, 9]) membership.join(new InMemoryChannel(id, membership, P));
    expect(membership.readyWorkers().map((w) => w.workerId)).toEqual([2, 5, 9]);
  });
});
