// The wire protocol: every message type as one discriminated union, and `validateMessage`, which
// checks every field of a decoded header before anything else uses it. Framing lives in codec.ts.

import { AUGMENT_MODES, type AugmentMode } from './augment.js';
import { ProtocolError } from './errors.js';

/** Bumped on any incompatible change; `hello` and `welcome` carry it and a mismatch is refused. */
export const PROTOCOL_VERSION = 3;

/** Name and shape of one trainable tensor; the flat parameter vector is their concatenation. */
export interface ParamSpec {
  name: string;
  shape: number[];
}

/** A micro-batch: positions [start, end) of the step's sample list. Its id fixes its samples. */
export interface MicroBatchSpec {
  id: number;
  start: number;
  end: number;
}

/** What a worker needs to load the same data as the coordinator, and to check that it did. */
export interface DatasetSpec {
  name: string;
  trainCount: number;
  testCount: number;
  /** SHA-256 of every byte of the data (64 hex digits). */
  fingerprint: string;
  /** Each array's SHA-256, so a worker whose data differs can name the first file that does. */
  files?: DatasetFileSpec[];
  syntheticTrain?: number;
  syntheticTest?: number;
}

/** One array of the dataset (e.g. `train-images-idx3-ubyte`) and the SHA-256 of its decoded bytes. */
export interface DatasetFileSpec {
  name: string;
  sha256: string;
}

/** Worker → coordinator, first message after the upgrade. */
export interface HelloMessage {
  type: 'hello';
  protocolVersion: number;
  workerName: string;
  backend: string;
  device: string;
  /** Most samples it computes at once (`--max-chunk`); 0: `auto`, probed after the welcome (`ready` says the result). */
  maxChunk: number;
  /** Port of the worker's /metrics endpoint, if it serves one (for Prometheus discovery). */
  metricsPort?: number;
  /** Most micro-batches it takes per step (`--max-micro-batches`); absent: no limit. */
  maxMicroBatches?: number;
  /** host:port where its peer server listens for other workers (sharded reducer); absent: none. */
  peerAddress?: string;
}

/** Coordinator → worker: everything needed to compute gradients for this run. */
export interface WelcomeMessage {
  type: 'welcome';
  protocolVersion: number;
  runId: string;
  workerId: number;
  seed: number;
  /** tfjs-layers JSON topology: data, never code. */
  modelTopology: Record<string, unknown>;
  params: ParamSpec[];
  dataset: DatasetSpec;
  /** The coordinator pings this often; a worker that hears nothing for ~2.5 intervals reconnects. */
  heartbeatIntervalMs: number;
  /** How gradient and weight bodies travel (`--wire-dtype`); absent means 'f32'. */
  wireDtype?: 'f32' | 'f16';
  /** How workers augment the training samples they gather (`--augment`); absent means 'none'. */
  augment?: AugmentMode;
  /** With the sharded reducer: the optimizer every worker applies (absent: the star reducer). */
  sharded?: ShardedRunSpec;
  /** The largest micro-batch (samples) a worker will be given: how far `--max-chunk auto` probes. */
  microBatch?: number;
}

/** What a worker needs to reduce and apply updates itself (`--reducer sharded`). */
export interface ShardedRunSpec {
  optimizer: string;
  /** The optimizer's hyperparameters (numbers and booleans only). */
  optimizerConfig: Record<string, number | boolean>;
}

/** A worker taking part in a step's exchange, and where its peer server listens. */
export interface PeerSpec {
  workerId: number;
  address: string;
}

/**
 * One attempt at a step's sharded exchange. `peers` own the shards in order: peer i sums
 * values [bounds[i], bounds[i + 1]) of every micro-batch in `microBatchIds`. A lost peer ends
 * the attempt; the next one (attempt + 1) re-plans over the survivors.
 */
export interface ExchangePlan {
  attempt: number;
  peers: PeerSpec[];
  bounds: number[];
  /** Every micro-batch of the step, whoever computes it: owners sum them in id order. */
  microBatches: MicroBatchSpec[];
  /** Learning rate of this step's update. */
  lr: number;
}

/** Layout of an optimizer state after the weights in a state body: scalars in the header, arrays in the body. */
export interface StateLayout {
  scalars: Record<string, number>;
  arrays: string[];
}

/** Worker → coordinator: dataset and model are loaded; the fingerprint proves it is the same data. */
export interface ReadyMessage {
  type: 'ready';
  datasetFingerprint: string;
  /** With `--max-chunk auto`: the chunk the worker probed (it replaces hello's 0). */
  maxChunk?: number;
}

/** Coordinator → worker: compute these micro-batches of `step`. Body: weights when `hasWeights`. */
export interface WorkMessage {
  type: 'work';
  step: number;
  /** Step whose weights the worker must compute at (equals `step`). */
  weightsStep: number;
  hasWeights: boolean;
  /** Size of the step's sample list that micro-batch ranges index into. */
  globalBatchSize: number;
  microBatches: MicroBatchSpec[];
  /** Sharded reducer: the step's exchange (the body, when present, is weights then optimizer state). */
  exchange?: ExchangePlan;
  /** Sharded reducer, with weights in the body: where the optimizer state's arrays are. */
  state?: StateLayout;
}

/** Worker → coordinator (sharded): every shard of the step's mean gradient is in; |mean|² over all of it. */
export interface ReducedMessage {
  type: 'reduced';
  step: number;
  attempt: number;
  sqNorm: number;
  /** Milliseconds from the worker's first contribution to its own shard's sum, and from there to the last shard. */
  scatterMs: number;
  gatherMs: number;
}

/** Coordinator → worker (sharded): every peer has the mean gradient; apply the update. */
export interface CommitMessage {
  type: 'commit';
  step: number;
  attempt: number;
}

/** Coordinator → worker (sharded): send your weights and optimizer state (of `step`: the weights the step computes at). */
export interface StateRequestMessage {
  type: 'state-request';
  step: number;
}

/** Worker → coordinator (sharded): body = weights then the arrays `state` names. */
export interface StateMessage {
  type: 'state';
  step: number;
  state: StateLayout;
}

/** Coordinator → worker (sharded): open links to these peers and say which cannot be reached. */
export interface ProbeMessage {
  type: 'probe';
  peers: PeerSpec[];
  timeoutMs: number;
}

/** Worker → coordinator: the peers of the last probe it could not reach, and why. */
export interface ProbeResultMessage {
  type: 'probe-result';
  unreachable: { workerId: number; why: string }[];
}

/** Worker → worker, first frame on a peer link: who is sending. */
export interface PeerHelloMessage {
  type: 'peer-hello';
  protocolVersion: number;
  runId: string;
  workerId: number;
}

/** Worker → shard owner: values [bounds[shard], bounds[shard + 1]) of micro-batch `microBatchId`'s gradient sum. */
export interface SliceMessage {
  type: 'slice';
  step: number;
  attempt: number;
  shard: number;
  microBatchId: number;
}

/** Shard owner → every peer: its shard of the step's mean gradient. */
export interface ShardMessage {
  type: 'shard';
  step: number;
  attempt: number;
  shard: number;
}

/** Worker → coordinator: one micro-batch's result. Body: the gradient *sum* over its samples. */
export interface GradientMessage {
  type: 'gradient';
  step: number;
  microBatchId: number;
  samples: number;
  lossSum: number;
  correct: number;
  computeMs: number;
  /** |g|^2 of this micro-batch's mean-loss gradient, for the gradient noise scale. */
  sqNorm: number;
  /**
   * Models with batch norm: the mean then the variance of every batch-norm layer over this
   * micro-batch, in model order (float32; msgpack bin of little-endian bytes on the wire).
   */
  batchStats?: Float32Array;
  /** The worker's memory while computing this micro-batch and after it (all in bytes but `tensors`). */
  memory?: WorkerMemory;
}

/** A worker's memory as a `gradient` reports it; see docs/METRICS.md, "Worker memory". */
export interface WorkerMemory {
  /** Highest live tensor bytes of its backend while computing the micro-batch. */
  peakTensorBytes: number;
  /** Live tensor bytes and tensors after it. */
  tensorBytes: number;
  tensors: number;
  /** Resident set size of the worker process after it. */
  rssBytes: number;
  /** wasm only: the heap's size (it never shrinks). */
  wasmHeapBytes?: number;
}

/** Either direction: a coded error, sent before the connection is closed. */
export interface ErrorMessage {
  type: 'error';
  code: string;
  message: string;
}

/**
 * Coordinator → worker: the run is over; exit. Without `code` the run completed (the worker
 * exits 0); with it, the run failed or was interrupted with that error code, and the worker
 * exits non-zero (the code's exit status), so a Job or batch script records the failure.
 */
export interface ShutdownMessage {
  type: 'shutdown';
  reason: string;
  code?: string;
}

export type Message =
  | HelloMessage
  | WelcomeMessage
  | ReadyMessage
  | WorkMessage
  | GradientMessage
  | ErrorMessage
  | ShutdownMessage
  | ReducedMessage
  | CommitMessage
  | StateRequestMessage
  | StateMessage
  | ProbeMessage
  | ProbeResultMessage
  | PeerHelloMessage
  | SliceMessage
  | ShardMessage;

export type MessageType = Message['type'];

/** Message types that carry a float tensor body, and those that must not. */
export const BODY_RULE: Record<MessageType, 'required' | 'optional' | 'none'> = {
  hello: 'none',
  welcome: 'none',
  ready: 'none',
  work: 'optional',
  // With the sharded reducer the gradient goes to the shard owners; the coordinator gets the statistics.
  gradient: 'optional',
  error: 'none',
  shutdown: 'none',
  reduced: 'none',
  commit: 'none',
  'state-request': 'none',
  state: 'required',
  probe: 'none',
  'probe-result': 'none',
  'peer-hello': 'none',
  slice: 'required',
  shard: 'required',
};

type Obj = Record<string, unknown>;

function fail(type: string, field: string, expected: string, got: unknown): never {
  let shown: string;
  try {
    shown =
      typeof got === 'string'
        ? JSON.stringify(got.slice(0, 60))
        : typeof got === 'number' || typeof got === 'bigint'
          ? String(got)
          : (JSON.stringify(got) ?? String(got));
  } catch {
    shown = Object.prototype.toString.call(got);
  }
  throw new ProtocolError('BAD_MESSAGE', `${type}.${field}: expected ${expected}, got ${String(shown).slice(0, 80)}`);
}

function int(o: Obj, type: string, field: string, min = 0): number {
  const v = o[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) fail(type, field, `an integer >= ${min}`, v);
  return v;
}

function num(o: Obj, type: string, field: string): number {
  const v = o[field];
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(type, field, 'a finite number', v);
  return v;
}

/** A number that may be NaN or ±Infinity: a diverged run's loss is data, refused later as non_finite. */
function anyNumber(o: Obj, type: string, field: string): number {
  const v = o[field];
  if (typeof v !== 'number') fail(type, field, 'a number', v);
  return v;
}

function str(o: Obj, type: string, field: string, maxLength = 256): string {
  const v = o[field];
  if (typeof v !== 'string' || v.length > maxLength)
    fail(type, field, `a string of at most ${maxLength} characters`, v);
  return v;
}

function bool(o: Obj, type: string, field: string): boolean {
  const v = o[field];
  if (typeof v !== 'boolean') fail(type, field, 'a boolean', v);
  return v;
}

function obj(o: Obj, type: string, field: string): Obj {
  const v = o[field];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(type, field, 'an object', v);
  return v as Obj;
}

function arr(o: Obj, type: string, field: string, maxLength: number): unknown[] {
  const v = o[field];
  if (!Array.isArray(v) || v.length > maxLength) fail(type, field, `an array of at most ${maxLength} items`, v);
  return v;
}

/** Float32 values sent as msgpack bin (their little-endian bytes), copied into their own array. */
function float32s(o: Obj, type: string, field: string, maxLength: number): Float32Array {
  const v = o[field];
  if (!(v instanceof Uint8Array) || v.byteLength % 4 !== 0 || v.byteLength > 4 * maxLength)
    fail(type, field, `float32 values as bytes (a multiple of 4, at most ${maxLength} values)`, v);
  return new Float32Array(new Uint8Array(v).buffer);
}

function validateParams(o: Obj): ParamSpec[] {
  return arr(o, 'welcome', 'params', 10_000).map((p, i) => {
    if (typeof p !== 'object' || p === null) fail('welcome', `params[${i}]`, 'an object', p);
    const po = p as Obj;
    const shape = arr(po, `welcome.params[${i}]`, 'shape', 8);
    return {
      name: str(po, `welcome.params[${i}]`, 'name'),
      shape: shape.map((d, j) => {
        if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1)
          fail('welcome', `params[${i}].shape[${j}]`, 'a positive integer', d);
        return d;
      }),
    };
  });
}

function validateShardedSpec(o: Obj): ShardedRunSpec {
  const spec = obj(o, 'welcome', 'sharded');
  const config = obj(spec, 'welcome.sharded', 'optimizerConfig');
  const optimizerConfig: Record<string, number | boolean> = {};
  for (const [key, value] of Object.entries(config).slice(0, 64)) {
    if (typeof value !== 'number' && typeof value !== 'boolean')
      fail('welcome.sharded.optimizerConfig', key, 'a number or a boolean', value);
    optimizerConfig[key] = value;
  }
  return { optimizer: str(spec, 'welcome.sharded', 'optimizer', 32), optimizerConfig };
}

function validatePeers(o: Obj, where: string): PeerSpec[] {
  return arr(o, where, 'peers', 4096).map((p, i) => {
    if (typeof p !== 'object' || p === null) fail(where, `peers[${i}]`, 'an object', p);
    const po = p as Obj;
    return {
      workerId: int(po, `${where}.peers[${i}]`, 'workerId'),
      address: str(po, `${where}.peers[${i}]`, 'address'),
    };
  });
}

function validateExchange(o: Obj): ExchangePlan {
  const plan = obj(o, 'work', 'exchange');
  const where = 'work.exchange';
  const peers = validatePeers(plan, where);
  const bounds = arr(plan, where, 'bounds', 4097).map((b, i) => {
    if (typeof b !== 'number' || !Number.isSafeInteger(b) || b < 0) fail(where, `bounds[${i}]`, 'an integer >= 0', b);
    if (i > 0 && b < (plan.bounds as number[])[i - 1]!) fail(where, `bounds[${i}]`, 'bounds in ascending order', b);
    return b;
  });
  if (peers.length === 0 || bounds.length !== peers.length + 1)
    fail(where, 'bounds', `${peers.length + 1} bounds for ${peers.length} peers`, bounds.length);
  const microBatches = validateMicroBatches(plan, where);
  return { attempt: int(plan, where, 'attempt'), peers, bounds, microBatches, lr: num(plan, where, 'lr') };
}

function validateStateLayout(o: Obj, type: string): StateLayout {
  const state = obj(o, type, 'state');
  const scalars: Record<string, number> = {};
  for (const [key, value] of Object.entries(obj(state, `${type}.state`, 'scalars')).slice(0, 64)) {
    if (typeof value !== 'number' || !Number.isFinite(value))
      fail(`${type}.state.scalars`, key, 'a finite number', value);
    scalars[key] = value;
  }
  const arrays = arr(state, `${type}.state`, 'arrays', 64).map((name, i) => {
    if (typeof name !== 'string' || name.length > 64) fail(`${type}.state`, `arrays[${i}]`, 'a short string', name);
    return name;
  });
  return { scalars, arrays };
}

function validateMemory(o: Obj): WorkerMemory {
  const m = obj(o, 'gradient', 'memory');
  const where = 'gradient.memory';
  const memory: WorkerMemory = {
    peakTensorBytes: int(m, where, 'peakTensorBytes'),
    tensorBytes: int(m, where, 'tensorBytes'),
    tensors: int(m, where, 'tensors'),
    rssBytes: int(m, where, 'rssBytes'),
  };
  if (m.wasmHeapBytes !== undefined) memory.wasmHeapBytes = int(m, where, 'wasmHeapBytes');
  return memory;
}

function validateMicroBatches(o: Obj, type = 'work'): MicroBatchSpec[] {
  return arr(o, type, 'microBatches', 1_000_000).map((m, i) => {
    if (typeof m !== 'object' || m === null) fail(type, `microBatches[${i}]`, 'an object', m);
    const mo = m as Obj;
    const where = `${type}.microBatches[${i}]`;
    const spec = { id: int(mo, where, 'id'), start: int(mo, where, 'start'), end: int(mo, where, 'end', 1) };
    if (spec.end <= spec.start) fail(where, 'end', `> start (${spec.start})`, spec.end);
    return spec;
  });
}

/**
 * Checks every field of a decoded header and returns it typed. Unknown fields are dropped.
 * Throws `ProtocolError` (`BAD_MESSAGE`) naming the field, what was expected and what came.
 */
export function validateMessage(raw: unknown): Message {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('message', 'header', 'an object', raw);
  const o = raw as Obj;
  const type = o.type;
  switch (type) {
    case 'hello': {
      const hello: HelloMessage = {
        type,
        protocolVersion: int(o, type, 'protocolVersion'),
        workerName: str(o, type, 'workerName'),
        backend: str(o, type, 'backend', 64),
        device: str(o, type, 'device'),
        maxChunk: int(o, type, 'maxChunk', 0),
      };
      if (o.metricsPort !== undefined) hello.metricsPort = int(o, type, 'metricsPort', 1);
      if (o.maxMicroBatches !== undefined) hello.maxMicroBatches = int(o, type, 'maxMicroBatches', 1);
      if (o.peerAddress !== undefined) hello.peerAddress = str(o, type, 'peerAddress');
      return hello;
    }
    case 'welcome': {
      const ds = obj(o, type, 'dataset');
      const where = 'welcome.dataset';
      const dataset: DatasetSpec = {
        name: str(ds, where, 'name', 64),
        trainCount: int(ds, where, 'trainCount', 1),
        testCount: int(ds, where, 'testCount', 0),
        fingerprint: str(ds, where, 'fingerprint', 64),
      };
      if (ds.files !== undefined) {
        dataset.files = arr(ds, where, 'files', 16).map((f, i) => {
          if (typeof f !== 'object' || f === null || Array.isArray(f)) fail(where, `files[${i}]`, 'an object', f);
          return {
            name: str(f as Obj, `${where}.files[${i}]`, 'name', 64),
            sha256: str(f as Obj, `${where}.files[${i}]`, 'sha256', 64),
          };
        });
      }
      if (ds.syntheticTrain !== undefined) dataset.syntheticTrain = int(ds, where, 'syntheticTrain', 1);
      if (ds.syntheticTest !== undefined) dataset.syntheticTest = int(ds, where, 'syntheticTest', 1);
      const welcome: WelcomeMessage = {
        type,
        protocolVersion: int(o, type, 'protocolVersion'),
        runId: str(o, type, 'runId', 64),
        workerId: int(o, type, 'workerId'),
        seed: int(o, type, 'seed'),
        modelTopology: obj(o, type, 'modelTopology'),
        params: validateParams(o),
        dataset,
        heartbeatIntervalMs: int(o, type, 'heartbeatIntervalMs', 1),
      };
      if (o.wireDtype !== undefined) {
        if (o.wireDtype !== 'f32' && o.wireDtype !== 'f16') fail(type, 'wireDtype', '"f32" or "f16"', o.wireDtype);
        welcome.wireDtype = o.wireDtype;
      }
      if (o.augment !== undefined) {
        if (!(AUGMENT_MODES as readonly unknown[]).includes(o.augment))
          fail(type, 'augment', AUGMENT_MODES.map((m) => `"${m}"`).join(' or '), o.augment);
        welcome.augment = o.augment as AugmentMode;
      }
      if (o.sharded !== undefined) welcome.sharded = validateShardedSpec(o);
      if (o.microBatch !== undefined) welcome.microBatch = int(o, type, 'microBatch', 1);
      return welcome;
    }
    case 'ready':
      return {
        type,
        datasetFingerprint: str(o, type, 'datasetFingerprint', 64),
        ...(o.maxChunk === undefined ? {} : { maxChunk: int(o, type, 'maxChunk', 1) }),
      };
    case 'work': {
      const work: WorkMessage = {
        type,
        step: int(o, type, 'step'),
        weightsStep: int(o, type, 'weightsStep'),
        hasWeights: bool(o, type, 'hasWeights'),
        globalBatchSize: int(o, type, 'globalBatchSize', 1),
        microBatches: validateMicroBatches(o),
      };
      if (o.exchange !== undefined) work.exchange = validateExchange(o);
      if (o.state !== undefined) work.state = validateStateLayout(o, type);
      return work;
    }
    case 'gradient': {
      const gradient: GradientMessage = {
        type,
        step: int(o, type, 'step'),
        microBatchId: int(o, type, 'microBatchId'),
        samples: int(o, type, 'samples', 1),
        lossSum: anyNumber(o, type, 'lossSum'),
        correct: int(o, type, 'correct'),
        computeMs: num(o, type, 'computeMs'),
        sqNorm: anyNumber(o, type, 'sqNorm'),
      };
      if (o.memory !== undefined) gradient.memory = validateMemory(o);
      if (o.batchStats !== undefined) gradient.batchStats = float32s(o, type, 'batchStats', 1 << 22);
      return gradient;
    }
    case 'error':
      return { type, code: str(o, type, 'code', 64), message: str(o, type, 'message', 4096) };
    case 'shutdown':
      return {
        type,
        reason: str(o, type, 'reason', 1024),
        ...(o.code === undefined ? {} : { code: str(o, type, 'code', 64) }),
      };
    case 'reduced':
      return {
        type,
        step: int(o, type, 'step'),
        attempt: int(o, type, 'attempt'),
        sqNorm: anyNumber(o, type, 'sqNorm'),
        scatterMs: num(o, type, 'scatterMs'),
        gatherMs: num(o, type, 'gatherMs'),
      };
    case 'commit':
      return { type, step: int(o, type, 'step'), attempt: int(o, type, 'attempt') };
    case 'state-request':
      return { type, step: int(o, type, 'step') };
    case 'state':
      return { type, step: int(o, type, 'step'), state: validateStateLayout(o, type) };
    case 'probe':
      return { type, peers: validatePeers(o, type), timeoutMs: int(o, type, 'timeoutMs', 1) };
    case 'probe-result':
      return {
        type,
        unreachable: arr(o, type, 'unreachable', 4096).map((u, i) => {
          if (typeof u !== 'object' || u === null) fail(type, `unreachable[${i}]`, 'an object', u);
          const uo = u as Obj;
          return {
            workerId: int(uo, `${type}.unreachable[${i}]`, 'workerId'),
            why: str(uo, `${type}.unreachable[${i}]`, 'why', 1024),
          };
        }),
      };
    case 'peer-hello':
      return {
        type,
        protocolVersion: int(o, type, 'protocolVersion'),
        runId: str(o, type, 'runId', 64),
        workerId: int(o, type, 'workerId'),
      };
    case 'slice':
      return {
        type,
        step: int(o, type, 'step'),
        attempt: int(o, type, 'attempt'),
        shard: int(o, type, 'shard'),
        microBatchId: int(o, type, 'microBatchId'),
      };
    case 'shard':
      return { type, step: int(o, type, 'step'), attempt: int(o, type, 'attempt'), shard: int(o, type, 'shard') };
    default:
      return fail('message', 'type', `one of ${Object.keys(BODY_RULE).join(', ')}`, type);
  }
}
