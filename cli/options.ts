// Every command-line option: its yargs declaration (help text, env name) and its validation into
// typed values. Bad values fail at once with an OptionError naming option, value and what is accepted.

import type { Options } from 'yargs';
import type { RunConfig } from '../coordinator/run-config.js';
import type { SweepSettings } from './sweep.js';
import { BACKEND_NAMES, type BackendName } from '../shared/backend.js';
import { DATASET_NAMES, isDatasetName, type DatasetName } from '../shared/data/dataset.js';
import { OptionError } from '../shared/errors.js';
import { DECAY_KINDS, LR_SCALING_RULES, WARMUP_KINDS, type LrWindow } from '../shared/lr-schedule.js';
import { DEFAULT_HIDDEN, MODEL_NAMES, type ModelName } from '../shared/models/index.js';
import { OPTIMIZER_NAMES, type OptimizerName } from '../shared/optimizers/index.js';
import { WIRE_DTYPES, type WireDtype } from '../shared/codec.js';
import { BALANCE_MODES, type BalanceMode } from '../coordinator/split.js';
import { CLIENT_MASKS, type ClientMask } from '../shared/transport.js';

/** Default learning rate per optimizer when --lr is not given. */
export const DEFAULT_LR: Record<OptimizerName, number> = { sgd: 0.05, adam: 0.001, adamw: 0.001, lars: 1, lamb: 0.01 };
export const DEFAULT_MICRO_BATCH = 32;
export const DEFAULT_STEPS = 300;

// Values stay strings in yargs so that "12abc" or "1e999" can be refused here, not coerced.
const s = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

/** Options of the training run (coordinator and local). */
export const TRAINING_OPTIONS = {
  model: s(`model: ${MODEL_NAMES.join(' | ')}`, { default: 'mlp' }),
  hidden: s('hidden widths (mlp) or conv filters (cnn), comma-separated, e.g. 256,128'),
  dataset: s(`dataset: ${DATASET_NAMES.join(' | ')}`, { default: 'fashion-mnist' }),
  'data-dir': s('directory with the IDX files (default: ./data/<name>, /usr/share/datasets/<name>, then the embedded subset)'),
  'global-batch': s('global batch size B: samples per optimizer step', { default: '128' }),
  'micro-batch': s(`micro-batch size m: the unit of work handed to a worker (default ${DEFAULT_MICRO_BATCH}, at most B)`),
  steps: s(`optimizer steps to run (default ${DEFAULT_STEPS} unless --epochs)`),
  epochs: s('passes over the training set (alternative to --steps)'),
  optimizer: s(`optimizer: ${OPTIMIZER_NAMES.join(' | ')}`, { default: 'adam' }),
  lr: s(`learning rate (default ${Object.entries(DEFAULT_LR).map(([k, v]) => `${k} ${v}`).join(', ')})`),
  'lr-scaling': s(`batch-size scaling rule for the LR relative to --base-batch: ${LR_SCALING_RULES.join(' | ')}`, { default: 'none' }),
  'base-batch': s('B0: the batch --lr was tuned at (default: --global-batch)'),
  'warmup-steps': s('steps of LR warmup (0: none)', { default: '0' }),
  warmup: s(`warmup kind: ${WARMUP_KINDS.join(' | ')} (Goyal et al.)`, { default: 'gradual' }),
  decay: s(`LR decay after warmup: ${DECAY_KINDS.join(' | ')}`, { default: 'constant' }),
  'decay-steps': s('for --decay step: comma-separated steps at which the LR is multiplied by --decay-factor'),
  'decay-factor': s('for --decay step: the multiplier', { default: '0.1' }),
  'lr-window': s('multiply the LR by FACTOR for steps [START, END), as START:END:FACTOR; comma-separate several (temperature experiments)'),
  momentum: s('momentum for sgd and lars', { default: '0.9' }),
  nesterov: { type: 'boolean', describe: 'Nesterov momentum for sgd', default: false } as Options,
  'weight-decay': s('weight decay (coupled for sgd/adam/lars, decoupled for adamw/lamb)', { default: '0' }),
  'target-accuracy': s('stop when the periodic eval accuracy reaches this (0-1); --steps is then the budget'),
  'target-loss': s('stop when the smoothed training loss falls to this; --steps is then the budget'),
  seed: s('run seed: weights, shuffling, synthetic data', { default: '1' }),
  'eval-every': s('evaluate on the test split every N steps (0: only at the end)', { default: '50' }),
  'metrics-port': s('port for /metrics and /healthz (0: any free port; "off": none)', { default: '0' }),
  report: s('write a JSON summary of the run to FILE'),
  'save-model': s('write the trained model to DIR (TensorFlow.js layers format)'),
  trace: s('write a Chrome trace of the run to FILE (chrome://tracing, ui.perfetto.dev)'),
  'targets-file': s('keep a Prometheus file_sd JSON of the coordinator and worker /metrics endpoints in FILE'),
  backend: s(`compute backend: ${BACKEND_NAMES.join(' | ')}`, { default: 'auto' }),
  'min-workers': s('workers to wait for before the first step', { default: '1' }),
  'worker-wait': s('seconds to wait for --min-workers before giving up', { default: '600' }),
  'heartbeat-interval': s('seconds between pings; a worker silent for two intervals is dead', { default: '5' }),
  'step-deadline-floor': s('seconds: the least a step waits before re-issuing late micro-batches', { default: '10' }),
  'step-deadline-cap': s('seconds: the most a step waits before re-issuing late micro-batches (the deadline is 5 × the median recent step time within floor and cap)', { default: '300' }),
  'checkpoint-dir': s('directory for checkpoints (weights, optimizer state, step, noise-scale EMAs)'),
  'checkpoint-every': s('write a checkpoint every N steps (0: only when stopped by a signal)', { default: '100' }),
  resume: { type: 'boolean', describe: 'continue from the checkpoint in --checkpoint-dir', default: false } as Options,
  'wire-dtype': s(`number format of gradients and weights on the wire: ${WIRE_DTYPES.join(' | ')} (f16: half the bytes, rounded to nearest even with a per-frame power-of-two scale; sums stay float64)`, { default: 'f32' }),
  balance: s(`how micro-batches are shared out: ${BALANCE_MODES.join(' | ')} (throughput: in proportion to each worker's measured samples/s, capped by its --max-micro-batches)`, { default: 'throughput' }),
} as const;

export const COORDINATOR_OPTIONS = {
  ...TRAINING_OPTIONS,
  host: s('address to listen on', { default: '0.0.0.0' }),
  port: s('port for workers (WebSocket)', { default: '7070' }),
  token: s('shared secret workers must present (or BATCHLAB_TOKEN)'),
  insecure: { type: 'boolean', describe: 'accept workers without a token (loopback demos only)', default: false } as Options,
  'tls-cert': s('PEM certificate: serve wss:// (with --tls-key)'),
  'tls-key': s('PEM private key for --tls-cert'),
} as const;

export const LOCAL_OPTIONS = {
  ...TRAINING_OPTIONS,
  workers: s('worker processes to start on this machine', { default: '2' }),
  'debug-slowdown': s('slow workers down for load-balancing experiments: factors >= 1 per worker in order, comma-separated, e.g. 1,3'),
} as const;

export const SWEEP_OPTIONS = {
  ...TRAINING_OPTIONS,
  'global-batch': s('global batch sizes, comma-separated, e.g. 64,256,1024', { default: '32,512' }),
  'micro-batch': s('micro-batch size for every point (default: B / --micro-batches)'),
  'micro-batches': s('micro-batches per step, K (default: the largest worker count); K >= 2 lets the noise scale be estimated'),
  workers: s('worker counts, comma-separated, e.g. 1,2', { default: '1,2' }),
  'lr-grid': s('learning rates to try at every point, comma-separated; the best (fewest steps to target, else lowest loss) is reported'),
  'eval-every': s('evaluate every N steps (0: only at the end)', { default: '25' }),
  'metrics-port': s('port for /metrics of each run (0: any free port; "off": none)', { default: 'off' }),
  report: s('write the sweep as JSON to FILE, and a CSV beside it'),
  html: s('write a self-contained HTML report with charts to FILE'),
} as const;

export const WORKER_OPTIONS = {
  connect: s('coordinator address, ws://host:port (default from MASTER_ADDR/MASTER_PORT)'),
  token: s('shared secret (or BATCHLAB_TOKEN)'),
  backend: s(`compute backend: ${BACKEND_NAMES.join(' | ')}`, { default: 'auto' }),
  'data-dir': s('directory with the IDX files, if not in the default places'),
  'max-chunk': s('largest number of samples computed at once; bigger micro-batches are accumulated', { default: '1024' }),
  name: s('name shown in the coordinator log (default host:pid)'),
  'connect-timeout': s('seconds to keep trying to reach (or reach again) the coordinator', { default: '60' }),
  ca: s('PEM certificate(s) to trust for wss:// (e.g. the coordinator\'s self-signed certificate)'),
  'metrics-port': s('port for /metrics and /healthz (0: any free port; "off": none)', { default: '0' }),
  'metrics-host': s('address for /metrics and /healthz', { default: '0.0.0.0' }),
  'client-mask': s(`WebSocket client masking: ${CLIENT_MASKS.join(' | ')} (auto: all-zero mask on loopback or wss://, random otherwise; see docs/PERFORMANCE.md)`, { default: 'auto' }),
  'max-micro-batches': s('most micro-batches this worker takes per step (its memory limit; default: no limit)'),
  'debug-slowdown': s('pretend to be FACTOR times slower (sleeps after each micro-batch) to test load balancing', { default: '1' }),
} as const;

export const BENCH_OPTIONS = {
  quick: { type: 'boolean', describe: 'fewer and shorter runs: 1–1.5 minutes instead of about 5', default: false } as Options,
  json: s('also write the results as JSON to FILE'),
  only: s('run only these sections, comma-separated: transport, reduce, scaling, balance, backends, peer'),
} as const;

type Raw = Record<string, unknown>;

/**
 * The option declarations with defaults taken from BATCHLAB_<OPTION> environment variables
 * (`--global-batch` ← BATCHLAB_GLOBAL_BATCH). Unlike yargs' .env(), other BATCHLAB_* variables
 * (Kubernetes injects BATCHLAB_COORDINATOR_SERVICE_HOST for a Service named batchlab-coordinator)
 * are ignored instead of failing as unknown arguments. Command line > environment > default.
 */
export function withEnvironmentDefaults<T extends Record<string, Options>>(options: T, env: NodeJS.ProcessEnv): T {
  const out: Record<string, Options> = {};
  for (const [name, option] of Object.entries(options)) {
    const variable = `BATCHLAB_${name.toUpperCase().replaceAll('-', '_')}`;
    const value = env[variable];
    if (value === undefined) {
      out[name] = option;
    } else if (option.type === 'boolean') {
      const lowered = value.trim().toLowerCase();
      if (!['true', 'false', '1', '0', 'yes', 'no', ''].includes(lowered)) throw new OptionError(name, value, `true or false (from ${variable})`);
      out[name] = { ...option, default: ['true', '1', 'yes'].includes(lowered) };
    } else {
      out[name] = { ...option, default: value };
    }
  }
  return out as T;
}

function text(raw: Raw, option: string): string | undefined {
  const v = raw[option];
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) throw new OptionError(option, v, 'a single value (the option was given more than once)');
  return String(v).trim();
}

/** An integer in [min, max]. */
export function integer(raw: Raw, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const t = text(raw, option);
  if (t === undefined) return undefined;
  const n = /^[+-]?\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new OptionError(option, t, `an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}`);
  return n;
}

/** A finite number > min (exclusive) or >= min (inclusive), and < max when given. */
export function decimal(raw: Raw, option: string, min: number, inclusive: boolean, max = Infinity): number | undefined {
  const t = text(raw, option);
  if (t === undefined) return undefined;
  const n = t === '' ? NaN : Number(t);
  const ok = Number.isFinite(n) && (inclusive ? n >= min : n > min) && n < max;
  if (!ok) throw new OptionError(option, t, `a number ${inclusive ? '>=' : '>'} ${min}${Number.isFinite(max) ? ` and < ${max}` : ''}`);
  return n;
}

function oneOf<T extends string>(raw: Raw, option: string, names: readonly T[]): T | undefined {
  const t = text(raw, option);
  if (t === undefined) return undefined;
  if (!(names as readonly string[]).includes(t)) throw new OptionError(option, t, `one of ${names.join(', ')}`);
  return t as T;
}

/** Comma-separated positive integers, e.g. 256,128. */
export function integerList(raw: Raw, option: string, max = 65536): number[] | undefined {
  const t = text(raw, option);
  if (t === undefined) return undefined;
  const parts = t.split(',').map((p) => p.trim());
  const values = parts.map(Number);
  if (parts.length === 0 || values.some((v, i) => !/^\d+$/.test(parts[i]!) || !Number.isSafeInteger(v) || v < 1 || v > max)) {
    throw new OptionError(option, t, `comma-separated positive integers up to ${max}, e.g. 256,128`);
  }
  return values;
}

function port(raw: Raw, option: string, allowOff: boolean): number | null | undefined {
  if (allowOff && text(raw, option) === 'off') return null;
  return integer(raw, option, 0, 65535);
}

/** --metrics-port: a port, 0 (any free port, the default) or null for "off". */
function metricsPort(raw: Raw): number | null {
  const value = port(raw, 'metrics-port', true);
  return value === undefined ? 0 : value;
}

/** The validated training configuration shared by `coordinator` and `local`. */
export type TrainingSettings = RunConfig;

function lrWindows(raw: Raw): LrWindow[] {
  const t = text(raw, 'lr-window');
  if (t === undefined) return [];
  return t.split(',').map((part) => {
    const m = /^(\d+):(\d+):([0-9.eE+-]+)$/.exec(part.trim());
    const window = m ? { start: Number(m[1]), end: Number(m[2]), factor: Number(m[3]) } : null;
    if (!window || window.end <= window.start || !(window.factor > 0) || !Number.isFinite(window.factor)) {
      throw new OptionError('lr-window', part, 'START:END:FACTOR with END > START and FACTOR > 0, e.g. 200:400:0.25');
    }
    return window;
  });
}

/** Node timers hold at most 2^31 − 1 ms. */
const MAX_TIMER_SECONDS = 2_147_483;

/** A duration option in seconds, returned in whole milliseconds. */
function seconds(raw: Raw, option: string, fallback: number): number {
  return Math.round((decimal(raw, option, 0, false, MAX_TIMER_SECONDS) ?? fallback) * 1000);
}

/** Validates the training options; throws OptionError on the first bad one. */
export function parseTrainingSettings(raw: Raw): TrainingSettings {
  const model = oneOf(raw, 'model', MODEL_NAMES) ?? 'mlp';
  const dataset = text(raw, 'dataset') ?? 'fashion-mnist';
  if (!isDatasetName(dataset)) throw new OptionError('dataset', dataset, `one of ${DATASET_NAMES.join(', ')}`);
  const globalBatchSize = integer(raw, 'global-batch', 1, 1_000_000) ?? 128;
  const microBatch = integer(raw, 'micro-batch', 1, 1_000_000) ?? Math.min(DEFAULT_MICRO_BATCH, globalBatchSize);
  if (microBatch > globalBatchSize) throw new OptionError('micro-batch', String(microBatch), `at most --global-batch (${globalBatchSize})`);
  const steps = integer(raw, 'steps', 1) ?? null;
  const epochs = decimal(raw, 'epochs', 0, false) ?? null;
  if (steps !== null && epochs !== null) throw new OptionError('epochs', String(epochs), 'either --steps or --epochs, not both');
  const optimizer = oneOf(raw, 'optimizer', OPTIMIZER_NAMES) ?? 'adam';
  const dataDir = text(raw, 'data-dir');
  const decayBoundaries = integerList(raw, 'decay-steps', 1_000_000_000) ?? [];
  const decay = oneOf(raw, 'decay', DECAY_KINDS) ?? 'constant';
  const checkpointDir = text(raw, 'checkpoint-dir');
  if (raw.resume === true && !checkpointDir) throw new OptionError('resume', true, '--checkpoint-dir DIR naming where the checkpoint is');
  if (decay === 'step' && decayBoundaries.length === 0) throw new OptionError('decay-steps', '', 'at least one step for --decay step, e.g. 1000,2000');
  const floorMs = seconds(raw, 'step-deadline-floor', 10);
  const capMs = seconds(raw, 'step-deadline-cap', 300);
  if (floorMs > capMs) throw new OptionError('step-deadline-floor', String(floorMs / 1000), `at most --step-deadline-cap (${capMs / 1000})`);
  return {
    model,
    hidden: integerList(raw, 'hidden') ?? DEFAULT_HIDDEN[model],
    dataset,
    ...(dataDir ? { dataDir } : {}),
    globalBatchSize,
    microBatch,
    steps: steps ?? (epochs === null ? DEFAULT_STEPS : null),
    epochs,
    optimizer,
    lr: decimal(raw, 'lr', 0, false, 100) ?? DEFAULT_LR[optimizer],
    lrScaling: oneOf(raw, 'lr-scaling', LR_SCALING_RULES) ?? 'none',
    baseBatch: integer(raw, 'base-batch', 1, 1_000_000) ?? null,
    warmupSteps: integer(raw, 'warmup-steps', 0) ?? 0,
    warmup: oneOf(raw, 'warmup', WARMUP_KINDS) ?? 'gradual',
    decay,
    decayBoundaries,
    decayFactor: decimal(raw, 'decay-factor', 0, false, 1.000001) ?? 0.1,
    lrWindows: lrWindows(raw),
    momentum: decimal(raw, 'momentum', 0, true, 1) ?? 0.9,
    nesterov: raw.nesterov === true,
    weightDecay: decimal(raw, 'weight-decay', 0, true, 1) ?? 0,
    targetAccuracy: decimal(raw, 'target-accuracy', 0, false, 1.000001) ?? null,
    targetLoss: decimal(raw, 'target-loss', 0, false) ?? null,
    seed: integer(raw, 'seed', 0, 2 ** 32 - 1) ?? 1,
    evalEvery: integer(raw, 'eval-every', 0) ?? 50,
    metricsPort: metricsPort(raw),
    ...(text(raw, 'report') ? { report: text(raw, 'report') } : {}),
    ...(text(raw, 'save-model') ? { saveModel: text(raw, 'save-model') } : {}),
    ...(text(raw, 'trace') ? { trace: text(raw, 'trace') } : {}),
    ...(text(raw, 'targets-file') ? { targetsFile: text(raw, 'targets-file') } : {}),
    backend: oneOf(raw, 'backend', BACKEND_NAMES) ?? 'auto',
    minWorkers: integer(raw, 'min-workers', 1, 10_000) ?? 1,
    workerWaitTimeoutMs: seconds(raw, 'worker-wait', 600),
    heartbeatIntervalMs: Math.round((decimal(raw, 'heartbeat-interval', 0.5, true, 3600) ?? 5) * 1000),
    stepDeadlineFloorMs: seconds(raw, 'step-deadline-floor', 10),
    stepDeadlineCapMs: seconds(raw, 'step-deadline-cap', 300),
    ...(checkpointDir ? { checkpointDir } : {}),
    checkpointEvery: integer(raw, 'checkpoint-every', 0) ?? 100,
    resume: raw.resume === true,
    wireDtype: oneOf(raw, 'wire-dtype', WIRE_DTYPES) ?? 'f32',
    balance: oneOf(raw, 'balance', BALANCE_MODES) ?? 'throughput',
  };
}

export interface CoordinatorSettings extends TrainingSettings {
  host: string;
  port: number;
  token: string | null;
  tlsCert?: string;
  tlsKey?: string;
}

/** Validates `coordinator` options: a token is required unless --insecure. */
export function parseCoordinatorSettings(raw: Raw): CoordinatorSettings {
  const training = parseTrainingSettings(raw);
  const token = text(raw, 'token');
  if (!token && raw.insecure !== true) throw new OptionError('token', token ?? '', 'a shared secret (or BATCHLAB_TOKEN); pass --insecure to run without one on a trusted loopback');
  const tlsCert = text(raw, 'tls-cert');
  const tlsKey = text(raw, 'tls-key');
  if (Boolean(tlsCert) !== Boolean(tlsKey)) throw new OptionError(tlsCert ? 'tls-key' : 'tls-cert', '', 'both --tls-cert and --tls-key, or neither');
  return { ...training, host: text(raw, 'host') ?? '0.0.0.0', port: port(raw, 'port', false) ?? 7070, token: token || null, ...(tlsCert ? { tlsCert, tlsKey } : {}) };
}

export interface LocalSettings extends TrainingSettings {
  workers: number;
  /** Slowdown factor per worker (index 0 = worker 1); missing entries are 1. */
  debugSlowdown: number[];
  /** Benchmarks only (no option): skip every evaluation; see CoordinatorOptions.timingOnly. */
  timingOnly?: boolean;
}

export function parseLocalSettings(raw: Raw): LocalSettings {
  const training = parseTrainingSettings(raw);
  const workers = integer(raw, 'workers', 1, 64) ?? 2;
  const debugSlowdown = slowdownList(raw, workers);
  return { ...training, workers, minWorkers: Math.max(training.minWorkers, workers), debugSlowdown };
}

function slowdownList(raw: Raw, workers: number): number[] {
  const t = text(raw, 'debug-slowdown');
  if (t === undefined || t === '') return [];
  const values = t.split(',').map((p) => (p.trim() === '' ? NaN : Number(p)));
  if (values.length > workers || values.some((v) => !Number.isFinite(v) || v < 1 || v > 1000)) {
    throw new OptionError('debug-slowdown', t, `at most ${workers} comma-separated factors from 1 to 1000 (one per worker), e.g. 1,3`);
  }
  return values;
}

function decimalList(raw: Raw, option: string): number[] | undefined {
  const t = text(raw, option);
  if (t === undefined) return undefined;
  const values = t.split(',').map((p) => (p.trim() === '' ? NaN : Number(p)));
  if (values.some((v) => !Number.isFinite(v) || v <= 0 || v >= 100)) throw new OptionError(option, t, 'comma-separated numbers > 0 and < 100, e.g. 0.01,0.03,0.1');
  return values;
}

/** Validates `sweep` options: lists of batch sizes and worker counts, an optional LR grid. */
export function parseSweepSettings(raw: Raw): SweepSettings {
  const globalBatches = integerList(raw, 'global-batch', 1_000_000) ?? [32, 512];
  const workerCounts = integerList(raw, 'workers', 64) ?? [1, 2];
  const smallest = Math.min(...globalBatches);
  // The shared checks see the smallest batch, so --micro-batch is checked against it.
  const training = parseTrainingSettings({ ...raw, 'global-batch': String(smallest), 'metrics-port': raw['metrics-port'] ?? 'off' });
  const microBatch = integer(raw, 'micro-batch', 1, 1_000_000) ?? null;
  const microBatchCount = integer(raw, 'micro-batches', 1, 1_000_000) ?? null;
  if (microBatch !== null && microBatchCount !== null) throw new OptionError('micro-batches', String(microBatchCount), 'either --micro-batch or --micro-batches, not both');
  const grid = decimalList(raw, 'lr-grid');
  if (grid && raw.lr !== undefined) throw new OptionError('lr-grid', text(raw, 'lr-grid'), 'either --lr or --lr-grid, not both');
  const html = text(raw, 'html');
  for (const option of ['checkpoint-dir', 'targets-file', 'trace', 'save-model'] as const) {
    if (text(raw, option) !== undefined) throw new OptionError(option, text(raw, option), 'nothing: sweep runs many jobs, which cannot share one file or directory');
  }
  if (raw.resume === true) throw new OptionError('resume', true, 'nothing: sweep does not resume');
  const { globalBatchSize: _b, microBatch: _m, lr, report, saveModel: _s, trace: _t, ...rest } = training;
  return {
    ...rest,
    globalBatches,
    workerCounts,
    microBatch,
    microBatchCount,
    lrGrid: grid ?? [lr],
    ...(report ? { report } : {}),
    ...(html ? { html } : {}),
  };
}

export interface WorkerSettings {
  connect: string;
  token: string | null;
  backend: BackendName;
  dataDir?: string;
  maxChunk: number;
  name?: string;
  connectTimeoutMs: number;
  metricsPort: number | null;
  metricsHost: string;
  /** PEM file of certificates to trust for wss://. */
  ca?: string;
  clientMask: ClientMask;
  maxMicroBatches: number | null;
  debugSlowdown: number;
}

/** Validates `worker` options; the address may come from MASTER_ADDR/MASTER_PORT as launchers set them. */
export function parseWorkerSettings(raw: Raw, env: NodeJS.ProcessEnv): WorkerSettings {
  let connect = text(raw, 'connect');
  if (!connect && env.MASTER_ADDR) connect = `ws://${env.MASTER_ADDR}:${env.MASTER_PORT ?? '7070'}`;
  if (!connect) throw new OptionError('connect', '', 'the coordinator address ws://host:port (or MASTER_ADDR and MASTER_PORT)');
  let url: URL;
  try {
    url = new URL(connect);
  } catch {
    throw new OptionError('connect', connect, 'a URL like ws://host:7070 or wss://host:7070');
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new OptionError('connect', connect, 'a ws:// or wss:// URL');
  const dataDir = text(raw, 'data-dir');
  const name = text(raw, 'name');
  return {
    connect,
    token: text(raw, 'token') || null,
    backend: oneOf(raw, 'backend', BACKEND_NAMES) ?? 'auto',
    ...(dataDir ? { dataDir } : {}),
    maxChunk: integer(raw, 'max-chunk', 1, 1_000_000) ?? 1024,
    ...(name ? { name } : {}),
    connectTimeoutMs: seconds(raw, 'connect-timeout', 60),
    metricsPort: metricsPort(raw),
    metricsHost: text(raw, 'metrics-host') || '0.0.0.0',
    ...(text(raw, 'ca') ? { ca: text(raw, 'ca') } : {}),
    clientMask: oneOf(raw, 'client-mask', CLIENT_MASKS) ?? 'auto',
    maxMicroBatches: integer(raw, 'max-micro-batches', 1, 1_000_000) ?? null,
    debugSlowdown: decimal(raw, 'debug-slowdown', 1, true, 1000.000001) ?? 1,
  };
}
