// The settings of each command, read from yargs' argv through the option table (cli/option-table.ts),
// with the checks that span several options. Bad values fail at once with an OptionError naming
// option, value and what is accepted.

import type { LocalRunConfig } from '../coordinator/launch-local.js';
import type { CoordinatorConfig, RunConfig } from '../coordinator/run-config.js';
import type { WorkerConfig } from '../worker/worker.js';
import type { SweepSettings } from './sweep.js';
import { OptionError } from '../shared/errors.js';
import { DEFAULT_HIDDEN, isModelName } from '../shared/models/index.js';
import { DEFAULT_RESNET_DEPTH, isResnetDepth, RESNET_DEPTHS } from '../shared/models/resnet.js';
import { declareOptions } from './option-declarations.js';
import {
  BENCH_TABLE,
  COORDINATOR_TABLE,
  DATA_FETCH_TABLE,
  DEFAULT_LR,
  DEFAULT_HOST,
  DEFAULT_MICRO_BATCH,
  DEFAULT_STEPS,
  fillDefaults,
  INSECURE_HOST,
  LOCAL_TABLE,
  readOption,
  SWEEP_TABLE,
  TRAINING_TABLE,
  WORKER_TABLE,
} from './option-table.js';
import { readText, type RawOptions } from './option-values.js';

export { withEnvironmentDefaults } from './option-declarations.js';
export { DEFAULT_LR, DEFAULT_MICRO_BATCH, DEFAULT_STEPS } from './option-table.js';

/** yargs declarations of the training options (coordinator and local). */
export const TRAINING_OPTIONS = declareOptions(TRAINING_TABLE);
/** yargs declarations of `coordinator`. */
export const COORDINATOR_OPTIONS = declareOptions(COORDINATOR_TABLE);
/** yargs declarations of `local`. */
export const LOCAL_OPTIONS = declareOptions(LOCAL_TABLE);
/** yargs declarations of `sweep`. */
export const SWEEP_OPTIONS = declareOptions(SWEEP_TABLE);
/** yargs declarations of `worker`. */
export const WORKER_OPTIONS = declareOptions(WORKER_TABLE);
/** yargs declarations of `bench`. */
export const BENCH_OPTIONS = declareOptions(BENCH_TABLE);
/** yargs declarations of `data fetch`. */
export const DATA_FETCH_OPTIONS = declareOptions(DATA_FETCH_TABLE);

/** The validated options of `data fetch` (the dataset name is its positional argument). */
export function parseDataFetchSettings(raw: RawOptions): { dir?: string; url?: string; md5?: string } {
  const read = <K extends keyof typeof DATA_FETCH_TABLE>(name: K) => readOption(DATA_FETCH_TABLE, raw, name);
  return { ...keepGiven('dir', read('dir')), ...keepGiven('url', read('url')), ...keepGiven('md5', read('md5')) };
}

/** `{ [key]: value }` when value is a non-empty string, else nothing: an empty FILE option means none. */
function keepGiven<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value ? { [key]: value } : {}) as { [P in K]?: string };
}

/** The validated training configuration shared by `coordinator` and `local`. */
export type TrainingSettings = RunConfig;

/** Validates the training options; throws OptionError on the first bad one. */
export function parseTrainingSettings(raw: RawOptions): TrainingSettings {
  const read = <K extends keyof typeof TRAINING_TABLE>(name: K) => readOption(TRAINING_TABLE, raw, name);
  const model = read('model');
  const dataset = read('dataset');
  const globalBatchSize = read('global-batch');
  const microBatch = read('micro-batch') ?? Math.min(DEFAULT_MICRO_BATCH, globalBatchSize);
  if (microBatch > globalBatchSize) {
    throw new OptionError('micro-batch', String(microBatch), `at most --global-batch (${globalBatchSize})`);
  }
  const { hidden, depth } = modelShape(model, read('hidden'), read('depth'));
  const steps = read('steps') ?? null;
  const epochs = read('epochs') ?? null;
  if (steps !== null && epochs !== null) {
    throw new OptionError('epochs', String(epochs), 'either --steps or --epochs, not both');
  }
  const optimizer = read('optimizer');
  const dataDir = read('data-dir');
  const decayBoundaries = read('decay-steps') ?? [];
  const decay = read('decay');
  const checkpointDir = read('checkpoint-dir');
  const resume = read('resume');
  if (resume && !checkpointDir) {
    throw new OptionError('resume', resume, '--checkpoint-dir DIR naming where the checkpoint is');
  }
  const fresh = read('fresh');
  if (fresh && (resume || !checkpointDir))
    throw new OptionError('fresh', true, resume ? 'either --fresh or --resume, not both' : 'a --checkpoint-dir');
  const allowScheduleChange = read('allow-schedule-change');
  const initFrom = read('init-from');
  if (initFrom && resume === true)
    throw new OptionError(
      'init-from',
      initFrom,
      'nothing with --resume, which continues from its checkpoint (with --resume auto, --init-from is used when there is no checkpoint)',
    );
  const hiddenGiven = read('hidden');
  if (hiddenGiven && !isModelName(model))
    throw new OptionError(
      'hidden',
      hiddenGiven.join(','),
      `nothing with a model file (--model ${model}): the file sets the layers`,
    );
  if (allowScheduleChange && !resume) throw new OptionError('allow-schedule-change', true, 'it only with --resume');
  if (read('reducer') === 'sharded' && read('wire-dtype') === 'f16')
    throw new OptionError('wire-dtype', 'f16', 'f32 with --reducer sharded (shards travel as float32)');
  if (decay === 'step' && decayBoundaries.length === 0) {
    throw new OptionError('decay-steps', '', 'at least one step for --decay step, e.g. 1000,2000');
  }
  const stepDeadlineFloorMs = read('step-deadline-floor');
  const stepDeadlineCapMs = read('step-deadline-cap');
  if (stepDeadlineFloorMs > stepDeadlineCapMs) {
    const floor = String(stepDeadlineFloorMs / 1000);
    throw new OptionError('step-deadline-floor', floor, `at most --step-deadline-cap (${stepDeadlineCapMs / 1000})`);
  }
  return {
    model,
    hidden,
    ...(depth === undefined ? {} : { depth }),
    dataset,
    ...(dataDir ? { dataDir } : {}),
    augment: read('augment'),
    globalBatchSize,
    microBatch,
    steps: steps ?? (epochs === null ? DEFAULT_STEPS : null),
    epochs,
    optimizer,
    lr: read('lr') ?? DEFAULT_LR[optimizer],
    lrScaling: read('lr-scaling'),
    baseBatch: read('base-batch') ?? null,
    warmupSteps: read('warmup-steps'),
    warmup: read('warmup'),
    decay,
    decayBoundaries,
    decayFactor: read('decay-factor'),
    lrWindows: read('lr-window'),
    momentum: read('momentum'),
    nesterov: read('nesterov'),
    weightDecay: read('weight-decay'),
    targetAccuracy: read('target-accuracy') ?? null,
    targetLoss: read('target-loss') ?? null,
    seed: read('seed'),
    evalEvery: read('eval-every'),
    metricsPort: read('metrics-port'),
    ...keepGiven('report', read('report')),
    ...keepGiven('events', read('events')),
    ...keepGiven('saveModel', read('save-model')),
    ...keepGiven('trace', read('trace')),
    ...keepGiven('targetsFile', read('targets-file')),
    backend: read('backend'),
    minWorkers: read('min-workers'),
    workerWaitTimeoutMs: read('worker-wait'),
    heartbeatIntervalMs: read('heartbeat-interval'),
    stepDeadlineFloorMs,
    stepDeadlineCapMs,
    evictAfter: read('evict-after'),
    ...(checkpointDir ? { checkpointDir } : {}),
    checkpointEvery: read('checkpoint-every'),
    resume,
    keepCheckpoints: read('keep-checkpoints'),
    fresh,
    allowScheduleChange,
    ...keepGiven('initFrom', initFrom),
    wireDtype: read('wire-dtype'),
    reducer: read('reducer'),
    balance: read('balance'),
  };
}

/** --hidden and --depth for `model`: --depth is a resnet's alone (6n + 2), and a resnet takes three stage widths. */
function modelShape(
  model: TrainingSettings['model'],
  hidden: number[] | undefined,
  depth: number | undefined,
): { hidden: number[]; depth?: number } {
  // A model file sets its own layers (--hidden with one is refused below, naming the file).
  if (!isModelName(model)) {
    if (depth !== undefined) throw new OptionError('depth', String(depth), 'it only with --model resnet');
    return { hidden: [] };
  }
  if (model !== 'resnet') {
    if (depth !== undefined) throw new OptionError('depth', String(depth), 'it only with --model resnet');
    return { hidden: hidden ?? DEFAULT_HIDDEN[model] };
  }
  if (depth !== undefined && !isResnetDepth(depth))
    throw new OptionError('depth', String(depth), `6n + 2 with n >= 1, e.g. ${RESNET_DEPTHS.join(', ')}`);
  if (hidden !== undefined && hidden.length !== 3)
    throw new OptionError('hidden', hidden.join(','), 'three stage widths with --model resnet, e.g. 16,32,64');
  return { hidden: hidden ?? DEFAULT_HIDDEN[model], depth: depth ?? DEFAULT_RESNET_DEPTH };
}

/** The validated `coordinator` configuration: training settings plus where workers connect. */
export type CoordinatorSettings = CoordinatorConfig;

/** Validates `coordinator` options: a token is required unless --insecure. */
export function parseCoordinatorSettings(raw: RawOptions): CoordinatorSettings {
  const read = <K extends keyof typeof COORDINATOR_TABLE>(name: K) => readOption(COORDINATOR_TABLE, raw, name);
  const training = parseTrainingSettings(raw);
  const token = read('token');
  const insecure = read('insecure');
  if (!token && !insecure) {
    const accepted = 'a shared secret (or BATCHLAB_TOKEN); pass --insecure to run without one on a trusted loopback';
    throw new OptionError('token', token ?? '', accepted);
  }
  const tlsCert = read('tls-cert');
  const tlsKey = read('tls-key');
  if (Boolean(tlsCert) !== Boolean(tlsKey)) {
    throw new OptionError(tlsCert ? 'tls-key' : 'tls-cert', '', 'both --tls-cert and --tls-key, or neither');
  }
  return {
    ...training,
    // Without a token anyone who reaches the port can join: --insecure stays on loopback unless
    // --host says otherwise.
    host: read('host') ?? (insecure ? INSECURE_HOST : DEFAULT_HOST),
    port: read('port'),
    token: token || null,
    ...(tlsCert ? { tlsCert, tlsKey } : {}),
  };
}

/** --peer-tls-cert and --peer-tls-key come together or not at all. */
function peerTls(cert: string | undefined, key: string | undefined): { peerTlsCert?: string; peerTlsKey?: string } {
  if (Boolean(cert) !== Boolean(key))
    throw new OptionError(
      cert ? 'peer-tls-key' : 'peer-tls-cert',
      '',
      'both --peer-tls-cert and --peer-tls-key, or neither',
    );
  return cert && key ? { peerTlsCert: cert, peerTlsKey: key } : {};
}

/** The validated `local` configuration: training settings plus the worker processes to start. */
export type LocalSettings = LocalRunConfig;

/** Validates `local` options; every started worker is waited for, so --min-workers is at least --workers. */
export function parseLocalSettings(raw: RawOptions): LocalSettings {
  const training = parseTrainingSettings(raw);
  const workers = readOption(LOCAL_TABLE, raw, 'workers');
  const debugSlowdown = readOption(LOCAL_TABLE, raw, 'debug-slowdown');
  return { ...training, workers, minWorkers: Math.max(training.minWorkers, workers), debugSlowdown };
}

/** Validates `sweep` options: lists of batch sizes and worker counts, an optional LR grid. */
export function parseSweepSettings(raw: RawOptions): SweepSettings {
  const read = <K extends keyof typeof SWEEP_TABLE>(name: K) => readOption(SWEEP_TABLE, raw, name);
  const globalBatches = read('global-batch');
  const workerCounts = read('workers');
  const smallest = Math.min(...globalBatches);
  // The shared checks see the smallest batch, so --micro-batch is checked against it; the other
  // training options take sweep's defaults where it has its own.
  const training = parseTrainingSettings({ ...fillDefaults(SWEEP_TABLE, raw), 'global-batch': String(smallest) });
  const microBatch = read('micro-batch') ?? null;
  const microBatchCount = read('micro-batches') ?? null;
  if (microBatch !== null && microBatchCount !== null) {
    const accepted = 'either --micro-batch or --micro-batches, not both';
    throw new OptionError('micro-batches', String(microBatchCount), accepted);
  }
  const grid = read('lr-grid');
  if (grid && raw.lr !== undefined) {
    throw new OptionError('lr-grid', readText(raw, 'lr-grid'), 'either --lr or --lr-grid, not both');
  }
  const html = read('html');
  for (const option of ['checkpoint-dir', 'targets-file', 'trace', 'save-model', 'events'] as const) {
    const given = read(option);
    if (given !== undefined) {
      throw new OptionError(option, given, 'nothing: sweep runs many jobs, which cannot share one file or directory');
    }
  }
  for (const flag of ['resume', 'fresh', 'allow-schedule-change'] as const) {
    const given = read(flag);
    if (given) throw new OptionError(flag, given, 'nothing: sweep does not resume or keep checkpoints');
  }
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

/** The validated `worker` configuration. */
export type WorkerSettings = WorkerConfig;

/** Validates `worker` options; the address may come from MASTER_ADDR/MASTER_PORT as launchers set them. */
export function parseWorkerSettings(raw: RawOptions, env: NodeJS.ProcessEnv): WorkerSettings {
  const read = <K extends keyof typeof WORKER_TABLE>(name: K) => readOption(WORKER_TABLE, raw, name);
  let connect = read('connect');
  if (!connect && env.MASTER_ADDR) {
    const port = env.MASTER_PORT?.trim() ?? COORDINATOR_TABLE.port.default;
    if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535)
      throw new OptionError(
        'connect',
        env.MASTER_PORT,
        'the coordinator port, an integer from 1 to 65535',
        'MASTER_PORT',
      );
    connect = `ws://${env.MASTER_ADDR}:${Number(port)}`;
  }
  if (!connect) {
    throw new OptionError('connect', '', 'the coordinator address ws://host:port (or MASTER_ADDR and MASTER_PORT)');
  }
  let url: URL;
  try {
    url = new URL(connect);
  } catch {
    throw new OptionError('connect', connect, 'a URL like ws://host:7070 or wss://host:7070');
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new OptionError('connect', connect, 'a ws:// or wss:// URL');
  }
  const dataDir = read('data-dir');
  const name = read('name');
  return {
    connect,
    token: read('token') || null,
    backend: read('backend'),
    ...(dataDir ? { dataDir } : {}),
    maxChunk: read('max-chunk'),
    memoryLimit: read('memory-limit') ?? null,
    ...(name ? { name } : {}),
    connectTimeoutMs: read('connect-timeout'),
    metricsPort: read('metrics-port'),
    metricsHost: read('metrics-host'),
    ...keepGiven('ca', read('ca')),
    clientMask: read('client-mask'),
    maxMicroBatches: read('max-micro-batches') ?? null,
    peerPort: read('peer-port'),
    ...peerTls(read('peer-tls-cert'), read('peer-tls-key')),
    ...keepGiven('peerHost', read('peer-host')),
    ...keepGiven('advertiseAddress', read('advertise-address')),
    debugSlowdown: read('debug-slowdown'),
  };
}
