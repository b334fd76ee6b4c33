// The sharded reducer: the workers sum and apply; the coordinator only plans and commits.
//
// Each step's workers own contiguous shards of the parameter vector. Every gradient is cut at
// the shard bounds and each slice goes to its owner (reduce-scatter); owners sum in micro-batch-id
// order in float64 and send the mean shard to everyone (all-gather); every worker then holds the
// same mean gradient and applies the same optimizer to the same weights (replicated state, as
// DDP does), so each holds the next step's exact weights. Bits equal the star's.
//
// Two phases keep a fault exact: workers say `reduced` once they hold every shard, and apply only
// on `commit`, which the coordinator sends when every owner has said so. A worker lost before
// that ends the attempt: the survivors re-plan the shards and re-send the gradients they kept,
// and the lost worker's micro-batches are computed again. The coordinator holds the weights only
// when it needs them (evaluation, checkpoint, a worker that joins): it fetches them from a worker.
// Workers that cannot reach each other make the run fall back to the star reducer.

import { BatchlabError } from '../shared/errors.js';
import type { Optimizer, OptimizerState } from '../shared/optimizers/index.js';
import type { ExchangePlan, PeerSpec, ProbeResultMessage, ReducedMessage, StateMessage } from '../shared/protocol.js';
import { packState, unpackState } from '../shared/state-body.js';
import type { Membership, ReducerReply } from './membership.js';
import type { Reducer, StepPlan, StepReduction, StepResult, WorkPayload } from './reducer.js';
import { StarReducer } from './star-reducer.js';
import type { WorkerChannel } from './worker-channel.js';

export interface ShardedReducerOptions {
  membership: Membership;
  /** The weights and optimizer at `startStep` (initial, or resumed); the optimizer is also the fallback's. */
  weights: Float32Array;
  optimizer: Optimizer;
  startStep: number;
  /** How long a worker may take to open its peer links, and to send its state. */
  probeTimeoutMs: number;
  /** The coordinator serves TLS: peer links must too (wss://), or the run falls back to the star. */
  requirePeerTls: boolean;
  stateTimeoutMs: number;
  log: (line: string) => void;
  /** Called once when the run falls back to the star reducer, with why. */
  onFallback?: (why: string) => void;
}

/** The weights and optimizer state of a step, as the coordinator holds them. */
interface Snapshot {
  step: number;
  weights: Float32Array;
  state: OptimizerState;
  /** weights then state arrays, as a work body. */
  packed: ReturnType<typeof packState>;
}

export class ShardedReducer implements Reducer {
  readonly paramCount: number;
  /** Steps applied so far: the workers in `holders` hold the weights of this step. */
  private committedStep: number;
  private readonly holders = new Set<number>();
  private snapshot: Snapshot | null;
  private current: ShardedStepReduction | null = null;
  /** Workers whose peer links were checked against each other. */
  private readonly verified = new Set<number>();
  private fallback: StarReducer | null = null;
  /** Questions out to workers, by `${workerId} ${expected reply type}`. */
  private readonly waiting = new Map<
    string,
    { resolve: (message: ReducerReply, body: Float32Array | null) => void; reject: (error: Error) => void }
  >();

  constructor(private readonly options: ShardedReducerOptions) {
    this.paramCount = options.weights.length;
    this.committedStep = options.startStep;
    this.snapshot = makeSnapshot(options.startStep, options.weights, options.optimizer.state());
    options.membership.setReducerHandler((worker, message, body) => this.onReply(worker, message, body));
    options.membership.on('lost', (worker) => this.onLost(worker));
  }

  get name(): string {
    return this.fallback ? 'star' : 'sharded';
  }

  async beginStep(plan: StepPlan): Promise<StepReduction> {
    if (this.fallback) return this.fallback.beginStep(plan);
    this.current?.abandon();
    this.current = null;
    const { membership } = this.options;
    const workers = [...plan.workers].sort((a, b) => a - b);
    const stale = workers.filter((id) => membership.schedule.weightsStep(id) !== plan.step);
    if (stale.length > 0 && this.snapshot?.step !== plan.step) this.snapshot = await this.fetch(plan.step);
    const unchecked = workers.filter((id) => !this.verified.has(id));
    if (unchecked.length > 0 && workers.length > 1) {
      const { problems, answered } = await this.probe(workers);
      if (problems) return this.fallBack(plan, problems);
      // A worker checked against all the others is verified only once all of them answered.
      if (answered.length === workers.length) for (const id of workers) this.verified.add(id);
    } else for (const id of workers) this.verified.add(id);
    const peers = workers.map((workerId) => ({ workerId, address: membership.get(workerId)?.info.peerAddress ?? '' }));
    this.current = new ShardedStepReduction(this, plan, peers);
    return this.current;
  }

  async weights(): Promise<Float32Array> {
    if (this.fallback) return this.fallback.weights();
    return (await this.latest()).weights;
  }

  async optimizerState(): Promise<OptimizerState> {
    if (this.fallback) return this.fallback.optimizerState();
    return (await this.latest()).state;
  }

  /** For the step reduction: the body of a worker that holds no weights of `step`, if the coordinator has them. */
  snapshotFor(step: number): Snapshot | null {
    return this.snapshot?.step === step ? this.snapshot : null;
  }

  /** For the step reduction: a line for the run's log. */
  log(line: string): void {
    this.options.log(line);
  }

  /** For the step reduction: sends a frame to a worker; false when it is gone. */
  send(workerId: number, message: Parameters<WorkerChannel['send']>[0]): boolean {
    return this.options.membership.get(workerId)?.send(message) ?? false;
  }

  /** For the step reduction: the step is applied on `workers` (commit sent): they hold its successor's weights. */
  committed(step: number, workers: readonly number[]): void {
    this.committedStep = step + 1;
    this.holders.clear();
    for (const id of workers) {
      this.holders.add(id);
      this.options.membership.schedule.markWeights(id, step + 1);
    }
    if (this.snapshot && this.snapshot.step !== step + 1) this.snapshot = null;
    this.current = null;
  }

  /** For the step reduction: whether any live worker (or the coordinator) still holds the weights of the step in progress. */
  stateSurvives(step: number): boolean {
    if (this.snapshot?.step === step) return true;
    return [...this.holders].some((id) => this.options.membership.get(id));
  }

  private async latest(): Promise<Snapshot> {
    if (this.snapshot?.step !== this.committedStep) this.snapshot = await this.fetch(this.committedStep);
    return this.snapshot;
  }

  /** The weights and optimizer state of `step` from a live worker that holds them. */
  private async fetch(step: number): Promise<Snapshot> {
    const { membership } = this.options;
    const failures: string[] = [];
    for (const holder of [...this.holders]) {
      if (!membership.get(holder)) {
        this.holders.delete(holder);
        continue;
      }
      try {
        const { message, body } = await this.ask(
          holder,
          { type: 'state-request', step },
          'state',
          this.options.stateTimeoutMs,
        );
        if (message.type !== 'state' || message.step !== step || !body)
          throw new Error(`worker ${holder} answered with ${message.type} of step ${(message as StateMessage).step}`);
        const { weights, state } = unpackState(body, message.state, this.paramCount);
        return makeSnapshot(step, weights, state);
      } catch (error) {
        const why = `worker ${holder}: ${(error as Error).message}`;
        this.options.log(`could not fetch the weights of step ${step} from ${why}`);
        failures.push(why);
        // Gone, or it sent something unusable; a worker that is only slow stays a holder.
        if (!membership.get(holder) || !(error instanceof NoAnswer)) this.holders.delete(holder);
      }
    }
    throw new BatchlabError(
      'STATE_LOST',
      `no worker could give the weights of step ${step} (sharded reducer)${failures.length ? `: ${failures.join('; ')}` : ': every worker holding them has left'}; resume from the last checkpoint`,
    );
  }

  /**
   * Asks every worker to open links to the others. Returns the failures, described (null: none),
   * and the workers that answered; one that did not (lost, or busy past the timeout) stays unchecked
   * and is asked again before the next step.
   */
  private async probe(workers: readonly number[]): Promise<{ problems: string | null; answered: number[] }> {
    const { membership, probeTimeoutMs } = this.options;
    const peers: PeerSpec[] = [];
    for (const workerId of workers) {
      const address = membership.get(workerId)?.info.peerAddress;
      if (!address) return { problems: `worker ${workerId} has no peer server (an older batchlab?)`, answered: [] };
      if (this.options.requirePeerTls && !address.startsWith('wss://'))
        return {
          problems: `worker ${workerId}'s peer server is plain ws:// while the coordinator serves TLS (give workers --peer-tls-cert and --peer-tls-key)`,
          answered: [],
        };
      peers.push({ workerId, address });
    }
    const answered: number[] = [];
    const results = await Promise.all(
      workers.map(async (workerId) => {
        try {
          const others = peers.filter((p) => p.workerId !== workerId);
          const { message } = await this.ask(
            workerId,
            { type: 'probe', peers: others, timeoutMs: probeTimeoutMs },
            'probe-result',
            probeTimeoutMs + 30_000,
          );
          const unreachable = (message as ProbeResultMessage).unreachable;
          answered.push(workerId);
          return unreachable.map((u) => `worker ${workerId} cannot reach worker ${u.workerId} (${u.why})`);
        } catch {
          // Lost (the step is begun again without it) or busy: not a reason to fall back.
          return [];
        }
      }),
    );
    const problems = results.flat();
    return { problems: problems.length > 0 ? problems.join('; ') : null, answered };
  }

  /** Goes on with the star reducer for the rest of the run, from the weights of `plan.step`. */
  private async fallBack(plan: StepPlan, why: string): Promise<StepReduction> {
    const snapshot = this.snapshot?.step === plan.step ? this.snapshot : await this.fetch(plan.step);
    const { optimizer, membership, log } = this.options;
    optimizer.loadState(snapshot.state);
    this.fallback = new StarReducer(snapshot.weights.slice(), optimizer);
    // Every worker gets the star's weights with its next work.
    for (const worker of membership.readyWorkers()) membership.schedule.markWeights(worker.workerId, -1);
    log(`${why}: falling back to the star reducer for the rest of this run`);
    this.options.onFallback?.(why);
    return this.fallback.beginStep(plan);
  }

  /** Sends `message` to `workerId` and waits for its next reducer reply. */
  private ask(
    workerId: number,
    message: Parameters<WorkerChannel['send']>[0],
    expect: 'state' | 'probe-result',
    timeoutMs: number,
  ): Promise<{ message: ReducerReply; body: Float32Array | null }> {
    const key = `${workerId} ${expect}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(key);
        reject(new NoAnswer(`no answer within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      this.waiting.set(key, {
        resolve: (reply, body) => {
          clearTimeout(timer);
          resolve({ message: reply, body });
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      if (!this.send(workerId, message)) {
        this.waiting.get(key)!.reject(new Error('worker gone'));
        this.waiting.delete(key);
      }
    });
  }

  private onReply(worker: WorkerChannel, message: ReducerReply, body: Float32Array | null): void {
    if (message.type === 'reduced') {
      if (!this.current?.onReduced(worker.workerId, message))
        this.options.membership.reject('stale_step', `worker ${worker.workerId}: reduced for step ${message.step}`);
      return;
    }
    // A late answer to an earlier question (after its timeout) finds nobody waiting for its type.
    const key = `${worker.workerId} ${message.type}`;
    const waiting = this.waiting.get(key);
    if (!waiting)
      return this.options.membership.reject('unassigned', `worker ${worker.workerId}: unasked ${message.type}`);
    this.waiting.delete(key);
    waiting.resolve(message, body);
  }

  private onLost(worker: WorkerChannel): void {
    this.holders.delete(worker.workerId);
    this.verified.delete(worker.workerId);
    for (const expect of ['state', 'probe-result'] as const) {
      const key = `${worker.workerId} ${expect}`;
      this.waiting.get(key)?.reject(new Error('worker lost'));
      this.waiting.delete(key);
    }
  }
}

/** A worker did not answer in time (it may only be busy). */
class NoAnswer extends Error {}

function makeSnapshot(step: number, weights: Float32Array, state: OptimizerState): Snapshot {
  return { step, weights, state, packed: packState(weights, state) };
}

/** Contiguous shard bounds: `paramCount` values cut into `parts` nearly equal pieces. */
export function shardBounds(paramCount: number, parts: number): number[] {
  return Array.from({ length: parts + 1 }, (_, i) => Math.round((i * paramCount) / parts));
}

class ShardedStepReduction implements StepReduction {
  readonly step: number;
  readonly result: Promise<StepResult>;
  private settle!: (result: StepResult) => void;
  private fail!: (error: unknown) => void;
  private plan: ExchangePlan;
  private readonly reduced = new Map<number, ReducedMessage>();
  /** Micro-batches whose statistics are in (id → samples): the commit waits for all of them. */
  private readonly added = new Map<number, number>();
  private done = false;

  constructor(
    private readonly reducer: ShardedReducer,
    private readonly stepPlan: StepPlan,
    peers: PeerSpec[],
  ) {
    this.step = stepPlan.step;
    this.plan = planFor(0, peers, reducer.paramCount, stepPlan);
    this.result = new Promise((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    this.result.catch(() => {});
  }

  payloadFor(weightsStep: number): WorkPayload {
    if (weightsStep === this.step) return { weights: null, fields: { exchange: this.plan } };
    const snapshot = this.reducer.snapshotFor(this.step);
    if (!snapshot) throw new BatchlabError('STATE_LOST', `step ${this.step}: no weights for a worker that holds none`);
    return {
      weights: snapshot.packed.body,
      bodyKey: this.step,
      fields: { exchange: this.plan, state: snapshot.packed.layout },
    };
  }

  /**
   * Only the attempt's peers: they hold the step's weights, and a new attempt reaches them (a
   * worker outside the plan would keep gradients that no re-plan asks it to send again).
   */
  canCompute(workerId: number): boolean {
    return this.plan.peers.some((p) => p.workerId === workerId);
  }

  /** The gradient went to the shard owners: a reply carries only its statistics. */
  check(body: Float32Array | null): 'bad_shape' | null {
    return body === null ? null : 'bad_shape';
  }

  add(microBatchId: number, samples: number): void {
    this.added.set(microBatchId, samples);
    this.tryCommit();
  }

  retract(microBatchId: number): void {
    this.added.delete(microBatchId);
  }

  workerLost(workerId: number): boolean {
    if (this.done) return false;
    const survivors = this.plan.peers.filter((p) => p.workerId !== workerId);
    if (survivors.length === this.plan.peers.length) return true;
    if (survivors.length === 0 || !this.reducer.stateSurvives(this.step)) {
      this.done = true;
      this.fail(
        new BatchlabError(
          'STATE_LOST',
          `step ${this.step}: every worker holding the weights has left (sharded reducer); resume from the last checkpoint`,
        ),
      );
      return false;
    }
    this.replan(survivors, `worker ${workerId} owned a shard`);
    return true;
  }

  /** The deadline passed with every reply in: a frame went missing somewhere; redo the exchange. */
  restart(): void {
    if (this.done) return;
    this.replan(this.plan.peers, 'the exchange did not finish within the step deadline');
  }

  /** Starts the next attempt over `peers`: they re-send the gradients they kept under the new plan. */
  private replan(peers: PeerSpec[], why: string): void {
    this.plan = planFor(this.plan.attempt + 1, peers, this.reducer.paramCount, this.stepPlan);
    this.reduced.clear();
    this.reducer.log(
      `step ${this.step}: ${why}; exchange restarted over ${peers.length} workers (attempt ${this.plan.attempt})`,
    );
    for (const peer of peers) {
      this.reducer.send(peer.workerId, {
        type: 'work',
        step: this.step,
        weightsStep: this.step,
        hasWeights: false,
        globalBatchSize: this.stepPlan.microBatches.reduce((n, m) => Math.max(n, m.end), 1),
        microBatches: [],
        exchange: this.plan,
      });
    }
  }

  /** A worker holds every shard of the mean; false when the message is not for this attempt. */
  onReduced(workerId: number, message: ReducedMessage): boolean {
    if (this.done || message.step !== this.step || message.attempt !== this.plan.attempt) return false;
    if (!this.plan.peers.some((p) => p.workerId === workerId)) return false;
    this.reduced.set(workerId, message);
    this.tryCommit();
    return true;
  }

  /**
   * Commits once every owner holds the whole mean *and* every micro-batch's statistics are in: a
   * step is applied only when the gather is complete too, so a run stopped before that point
   * checkpoints the step before it, whose weights the workers still hold.
   */
  private tryCommit(): void {
    if (this.done || this.reduced.size < this.plan.peers.length) return;
    if (this.added.size < this.stepPlan.microBatches.length) return;
    this.done = true;
    const workers = this.plan.peers.map((p) => p.workerId);
    for (const id of workers) this.reducer.send(id, { type: 'commit', step: this.step, attempt: this.plan.attempt });
    this.reducer.committed(this.step, workers);
    const replies = [...this.reduced.values()];
    // The phases of the worker that finished last (one worker's pair, so they fit inside the step).
    const slowest = replies.reduce((a, r) => (r.scatterMs + r.gatherMs > a.scatterMs + a.gatherMs ? r : a));
    this.settle({
      samples: [...this.added.values()].reduce((a, b) => a + b, 0),
      sqNorm: replies[0]!.sqNorm,
      reduceSeconds: 0,
      applySeconds: 0,
      exchangeSeconds: { 'reduce-scatter': slowest.scatterMs / 1000, 'all-gather': slowest.gatherMs / 1000 },
    });
  }

  /** A newer step began: this one's result no longer matters. */
  abandon(): void {
    this.done = true;
  }
}

function planFor(attempt: number, peers: PeerSpec[], paramCount: number, step: StepPlan): ExchangePlan {
  return {
    attempt,
    peers,
    bounds: shardBounds(paramCount, peers.length),
    microBatches: [...step.microBatches],
    lr: step.lr,
  };
}
