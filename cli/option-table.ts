// The one table of command-line options: each option's name, kind, default, parser and help, and the
// option groups of the commands built from it. yargs declarations, BATCHLAB_<OPTION> handling, the
// parse functions and (checked by a test) README.md's option tables all come from here.

import { AUGMENT_MODES, CROP_PAD } from '../shared/augment.js';
import { BACKEND_NAMES } from '../shared/backend.js';
import { OptionError } from '../shared/errors.js';
import { SYSTEM_DATASETS_DIR } from '../shared/data/search-paths.js';
import { DATASET_NAMES } from '../shared/data/dataset.js';
import { DECAY_KINDS, LR_SCALING_RULES, WARMUP_KINDS } from '../shared/lr-schedule.js';
import { DEFAULT_HIDDEN, MODEL_NAMES } from '../shared/models/index.js';
import { DEFAULT_RESNET_DEPTH, RESNET_DEPTHS } from '../shared/models/resnet.js';
import { OPTIMIZER_NAMES, type OptimizerName } from '../shared/optimizers/index.js';
import { WIRE_DTYPES } from '../shared/codec.js';
import { BALANCE_MODES } from '../coordinator/split.js';
import { REDUCERS } from '../coordinator/reducer.js';
import { CLIENT_MASKS } from '../shared/transport.js';
import { DEFAULT_MAX_CHUNK } from '../shared/micro-batches.js';
import {
  readDecimal,
  readDecimalList,
  readFlag,
  readBytes,
  readInteger,
  readIntegerOrAuto,
  readIntegerList,
  readLrWindows,
  readMilliseconds,
  readModel,
  readOneOf,
  readPort,
  readPortOrOff,
  readResume,
  readSlowdownList,
  readText,
  type RawOptions,
} from './option-values.js';

/** One option. Its name is its key in an {@link OptionTable}. */
export interface OptionSpec<T = unknown> {
  /** 'string': yargs keeps the text, so that `parse` can refuse "12abc" rather than coerce it; 'boolean': a flag. */
  readonly kind: 'string' | 'boolean';
  /** The value when the option is not given, written as on the command line; absent when there is none. */
  readonly default?: string | boolean;
  /** A default that depends on other options, as help and README.md state it (then `default` is absent). */
  readonly defaultText?: string;
  /** One line for `--help`; the default is shown beside it, never written into it. */
  readonly help: string;
  /** The typed value of `raw[name]`: undefined (or an empty list) when not given; throws OptionError when bad. */
  readonly parse: (raw: RawOptions, name: string) => T | undefined;
}

/** A command's options by name, in the order `--help` lists them. */
export type OptionTable = Readonly<Record<string, OptionSpec>>;

/** The type `readOption` gives for an option: what its parser returns, never undefined when it has a default. */
export type OptionValue<S extends OptionSpec> = S extends { readonly default: string | boolean }
  ? Exclude<ReturnType<S['parse']>, undefined>
  : ReturnType<S['parse']>;

/** Default learning rate per optimizer when --lr is not given. */
export const DEFAULT_LR: Record<OptimizerName, number> = { sgd: 0.05, adam: 0.001, adamw: 0.001, lars: 1, lamb: 0.01 };
/** Default micro-batch size, capped at the global batch. */
export const DEFAULT_MICRO_BATCH = 32;
/** Default run length in steps when neither --steps nor --epochs is given. */
export const DEFAULT_STEPS = 300;
/** The most worker processes `local` and `sweep` start on one machine. */
const MAX_LOCAL_WORKERS = 64;

/** "0.05 (sgd), 0.001 (adam, adamw), …": each default LR once, with the optimizers that use it. */
function describeDefaultLr(): string {
  const byValue = new Map<number, string[]>();
  for (const [optimizer, lr] of Object.entries(DEFAULT_LR)) byValue.set(lr, [...(byValue.get(lr) ?? []), optimizer]);
  return [...byValue].map(([lr, optimizers]) => `${lr} (${optimizers.join(', ')})`).join(', ');
}

/** --config FILE: read by cli/config-file.ts before yargs parses (its values become defaults); here for --help. */
const CONFIG_FILE = {
  kind: 'string',
  help:
    'take options from a YAML or JSON FILE, keys as the flags (global-batch: 256); a --report JSON runs ' +
    'its run again; the command line and BATCHLAB_* variables win',
  parse: (raw, name) => readText(raw, name),
} as const satisfies OptionSpec<string>;

/** Options of a training run: `coordinator`, `local` and (with overrides) `sweep`. */
export const TRAINING_TABLE = {
  config: CONFIG_FILE,
  model: {
    kind: 'string',
    default: 'mlp',
    help: `model: ${MODEL_NAMES.join(' | ')}, or the path of your own TensorFlow.js layers model.json`,
    parse: (raw, name) => readModel(raw, name, MODEL_NAMES),
  },
  hidden: {
    kind: 'string',
    defaultText: Object.entries(DEFAULT_HIDDEN)
      .map(([model, widths]) => `${widths.join(',')} (${model})`)
      .join(', '),
    help: 'hidden widths (mlp), conv filters (cnn) or the three stage widths (resnet), comma-separated, e.g. 256,128',
    parse: (raw, name) => readIntegerList(raw, name),
  },
  depth: {
    kind: 'string',
    defaultText: `${DEFAULT_RESNET_DEPTH} (resnet)`,
    help: `layers of a resnet, 6n + 2: ${RESNET_DEPTHS.join(', ')}, …`,
    parse: (raw, name) => readInteger(raw, name, 8, 6 * 1000 + 2),
  },
  dataset: {
    kind: 'string',
    default: 'fashion-mnist',
    help: `dataset: ${DATASET_NAMES.join(' | ')}`,
    parse: (raw, name) => readOneOf(raw, name, DATASET_NAMES),
  },
  'data-dir': {
    kind: 'string',
    defaultText: 'search',
    help:
      `directory with the dataset's files (IDX, or CIFAR .bin); the search tries ./data/<name>, ${SYSTEM_DATASETS_DIR}/<name>, ` +
      'then the embedded fashion-mnist subset; cifar10/cifar100 files may be in its archive subdirectory',
    parse: (raw, name) => readText(raw, name),
  },
  augment: {
    kind: 'string',
    default: 'none',
    help:
      `augmentation of training samples on the workers: ${AUGMENT_MODES.join(' | ')} (crop-flip: pad ${CROP_PAD} ` +
      'black pixels each side, random crop, random left-right flip; seeded per sample and epoch)',
    parse: (raw, name) => readOneOf(raw, name, AUGMENT_MODES),
  },
  'global-batch': {
    kind: 'string',
    default: '128',
    help: 'global batch size B: samples per optimizer step',
    parse: (raw, name) => readInteger(raw, name, 1, 1_000_000),
  },
  'micro-batch': {
    kind: 'string',
    defaultText: `min(${DEFAULT_MICRO_BATCH}, B)`,
    help: 'micro-batch size m: the unit of work handed to a worker (at most B)',
    parse: (raw, name) => readInteger(raw, name, 1, 1_000_000),
  },
  steps: {
    kind: 'string',
    defaultText: `${DEFAULT_STEPS} unless --epochs`,
    help: 'optimizer steps to run',
    parse: (raw, name) => readInteger(raw, name, 1),
  },
  epochs: {
    kind: 'string',
    help: 'passes over the training set (alternative to --steps)',
    parse: (raw, name) => readDecimal(raw, name, 0, false),
  },
  optimizer: {
    kind: 'string',
    default: 'adam',
    help: `optimizer: ${OPTIMIZER_NAMES.join(' | ')}`,
    parse: (raw, name) => readOneOf(raw, name, OPTIMIZER_NAMES),
  },
  lr: {
    kind: 'string',
    defaultText: describeDefaultLr(),
    help: 'learning rate at --base-batch',
    parse: (raw, name) => readDecimal(raw, name, 0, false, 100),
  },
  'lr-scaling': {
    kind: 'string',
    default: 'none',
    help: `batch-size scaling rule for the LR relative to --base-batch: ${LR_SCALING_RULES.join(' | ')}`,
    parse: (raw, name) => readOneOf(raw, name, LR_SCALING_RULES),
  },
  'base-batch': {
    kind: 'string',
    defaultText: '--global-batch',
    help: 'B0: the batch --lr was tuned at',
    parse: (raw, name) => readInteger(raw, name, 1, 1_000_000),
  },
  'warmup-steps': {
    kind: 'string',
    default: '0',
    help: 'steps of LR warmup (0: none)',
    parse: (raw, name) => readInteger(raw, name, 0),
  },
  warmup: {
    kind: 'string',
    default: 'gradual',
    help: `warmup kind: ${WARMUP_KINDS.join(' | ')} (Goyal et al.)`,
    parse: (raw, name) => readOneOf(raw, name, WARMUP_KINDS),
  },
  decay: {
    kind: 'string',
    default: 'constant',
    help: `LR decay after warmup: ${DECAY_KINDS.join(' | ')}`,
    parse: (raw, name) => readOneOf(raw, name, DECAY_KINDS),
  },
  'decay-steps': {
    kind: 'string',
    help: 'for --decay step: comma-separated steps at which the LR is multiplied by --decay-factor',
    parse: (raw, name) => readIntegerList(raw, name, 1_000_000_000),
  },
  'decay-factor': {
    kind: 'string',
    default: '0.1',
    help: 'for --decay step: the multiplier',
    parse: (raw, name) => readDecimal(raw, name, 0, false, 1.000001),
  },
  'lr-window': {
    kind: 'string',
    help:
      'multiply the LR by FACTOR for steps [START, END), as START:END:FACTOR; ' +
      'comma-separate several (temperature experiments)',
    parse: (raw, name) => readLrWindows(raw, name),
  },
  momentum: {
    kind: 'string',
    default: '0.9',
    help: 'momentum for sgd and lars',
    parse: (raw, name) => readDecimal(raw, name, 0, true, 1),
  },
  nesterov: {
    kind: 'boolean',
    default: false,
    help: 'Nesterov momentum for sgd',
    parse: (raw, name) => readFlag(raw, name),
  },
  'weight-decay': {
    kind: 'string',
    default: '0',
    help: 'weight decay (coupled for sgd/adam/lars, decoupled for adamw/lamb); never of rank-1 tensors (biases, batch-norm scales and offsets)',
    parse: (raw, name) => readDecimal(raw, name, 0, true, 1),
  },
  'target-accuracy': {
    kind: 'string',
    help: 'stop when the periodic eval accuracy reaches this (0-1); --steps is then the budget',
    parse: (raw, name) => readDecimal(raw, name, 0, false, 1.000001),
  },
  'target-loss': {
    kind: 'string',
    help: 'stop when the smoothed training loss falls to this; --steps is then the budget',
    parse: (raw, name) => readDecimal(raw, name, 0, false),
  },
  seed: {
    kind: 'string',
    default: '1',
    help: 'run seed: weights, shuffling, synthetic data, augmentation',
    parse: (raw, name) => readInteger(raw, name, 0, 2 ** 32 - 1),
  },
  'eval-every': {
    kind: 'string',
    default: '50',
    help: 'evaluate on the test split every N steps (0: only at the end)',
    parse: (raw, name) => readInteger(raw, name, 0),
  },
  'metrics-port': {
    kind: 'string',
    default: '0',
    help: 'port for /metrics, /healthz and /readyz (0: any free port; "off": none)',
    parse: (raw, name) => readPortOrOff(raw, name),
  },
  report: {
    kind: 'string',
    help: 'write a JSON summary of the run to FILE',
    parse: (raw, name) => readText(raw, name),
  },
  events: {
    kind: 'string',
    help:
      'write one JSON line per step and per evaluation to FILE as they happen (first line: the configuration; ' +
      'a resumed run appends)',
    parse: (raw, name) => readText(raw, name),
  },
  'save-model': {
    kind: 'string',
    help: 'write the trained model to DIR (TensorFlow.js layers format)',
    parse: (raw, name) => readText(raw, name),
  },
  trace: {
    kind: 'string',
    help: 'write a Chrome trace of the run to FILE (chrome://tracing, ui.perfetto.dev)',
    parse: (raw, name) => readText(raw, name),
  },
  'targets-file': {
    kind: 'string',
    help: 'keep a Prometheus file_sd JSON of the coordinator and worker /metrics endpoints in FILE',
    parse: (raw, name) => readText(raw, name),
  },
  backend: {
    kind: 'string',
    default: 'auto',
    help: `compute backend: ${BACKEND_NAMES.join(' | ')}`,
    parse: (raw, name) => readOneOf(raw, name, BACKEND_NAMES),
  },
  'min-workers': {
    kind: 'string',
    default: '1',
    help: 'live workers needed for a step; with fewer, the coordinator waits',
    parse: (raw, name) => readInteger(raw, name, 1, 10_000),
  },
  'worker-wait': {
    kind: 'string',
    default: '600',
    help: 'seconds to wait for --min-workers before giving up',
    parse: (raw, name) => readMilliseconds(raw, name),
  },
  'heartbeat-interval': {
    kind: 'string',
    default: '5',
    help: 'seconds between pings; a worker silent for two intervals is dead',
    parse: (raw, name) => readMilliseconds(raw, name, 0.5, true, 3600),
  },
  'step-deadline-floor': {
    kind: 'string',
    default: '10',
    help: 'seconds: the least a step waits before re-issuing late micro-batches',
    parse: (raw, name) => readMilliseconds(raw, name),
  },
  'step-deadline-cap': {
    kind: 'string',
    default: '300',
    help:
      'seconds: the most a step waits before re-issuing late micro-batches ' +
      '(the deadline is 5 × the median recent step time within floor and cap)',
    parse: (raw, name) => readMilliseconds(raw, name),
  },
  'evict-after': {
    kind: 'string',
    default: '3',
    help:
      'close the connection of a worker late at the step deadline this many times in a row ' +
      '(0: never; a late worker gets no new work until it has answered)',
    parse: (raw, name) => readInteger(raw, name, 0, 1000),
  },
  'checkpoint-dir': {
    kind: 'string',
    help: 'directory for checkpoints (weights, optimizer state, step, noise-scale EMAs)',
    parse: (raw, name) => readText(raw, name),
  },
  'checkpoint-every': {
    kind: 'string',
    default: '100',
    help: 'write a checkpoint every N steps (0: only when stopped by a signal)',
    parse: (raw, name) => readInteger(raw, name, 0),
  },
  resume: {
    kind: 'string',
    defaultText: 'off',
    help:
      'continue from the newest usable checkpoint in --checkpoint-dir (one must exist); ' +
      '"--resume auto": continue from one if there is one, else start fresh',
    parse: (raw, name) => readResume(raw, name),
  },
  'keep-checkpoints': {
    kind: 'string',
    default: '2',
    help: 'checkpoints kept in --checkpoint-dir; older ones are deleted once a new one is written and read back',
    parse: (raw, name) => readInteger(raw, name, 1, 1000),
  },
  fresh: {
    kind: 'boolean',
    default: false,
    help: 'start a new run in a --checkpoint-dir that holds checkpoints: move them into a dated subdirectory first',
    parse: (raw, name) => readFlag(raw, name),
  },
  'allow-schedule-change': {
    kind: 'boolean',
    default: false,
    help: "with --resume, accept LR settings (lr, scaling, warmup, decay, weight decay, momentum) that differ from the checkpoint's; each is logged and reported",
    parse: (raw, name) => readFlag(raw, name),
  },
  'init-from': {
    kind: 'string',
    help:
      "start a new run (step 0, fresh optimizer) from the weights of a --save-model DIR; the model's tensors " +
      'must match it by name and shape',
    parse: (raw, name) => readText(raw, name),
  },
  'wire-dtype': {
    kind: 'string',
    default: 'f32',
    help:
      `number format of gradients and weights on the wire: ${WIRE_DTYPES.join(' | ')} (f16: half the bytes, ` +
      'rounded to nearest even with a per-frame power-of-two scale; sums stay float64)',
    parse: (raw, name) => readOneOf(raw, name, WIRE_DTYPES),
  },
  reducer: {
    kind: 'string',
    default: 'star',
    help:
      `where gradients are summed and the update applied: ${REDUCERS.join(' | ')} (star: on the coordinator; ` +
      'sharded: an all-reduce among the workers, each summing one shard; same bits either way)',
    parse: (raw, name) => readOneOf(raw, name, REDUCERS),
  },
  balance: {
    kind: 'string',
    default: 'throughput',
    help:
      `how micro-batches are shared out: ${BALANCE_MODES.join(' | ')} (throughput: in proportion to each ` +
      "worker's measured samples/s, capped by its --max-micro-batches)",
    parse: (raw, name) => readOneOf(raw, name, BALANCE_MODES),
  },
} as const satisfies OptionTable;

/** The port workers connect to when neither --port nor MASTER_PORT says otherwise. */
const COORDINATOR_PORT = {
  kind: 'string',
  default: '7070',
  help: 'port for workers (WebSocket; MASTER_PORT when set; 0: any free port)',
  parse: (raw, name) => readPort(raw, name),
} as const satisfies OptionSpec<number>;

/** Where a coordinator listens without --host: every interface, or only loopback with --insecure. */
export const DEFAULT_HOST = '0.0.0.0';
export const INSECURE_HOST = '127.0.0.1';

/** `coordinator`: the training options and how workers reach it. */
export const COORDINATOR_TABLE = {
  ...TRAINING_TABLE,
  host: {
    kind: 'string',
    defaultText: `${DEFAULT_HOST}, or ${INSECURE_HOST} with --insecure`,
    help: 'address to listen on (workers and metrics)',
    parse: (raw, name) => readText(raw, name),
  },
  port: COORDINATOR_PORT,
  token: {
    kind: 'string',
    help: 'shared secret workers must present; give it as BATCHLAB_TOKEN (a command line shows in ps)',
    parse: (raw, name) => readText(raw, name),
  },
  insecure: {
    kind: 'boolean',
    default: false,
    help: 'accept workers without a token (loopback demos only)',
    parse: (raw, name) => readFlag(raw, name),
  },
  'tls-cert': {
    kind: 'string',
    help: 'PEM certificate: serve wss:// (with --tls-key)',
    parse: (raw, name) => readText(raw, name),
  },
  'tls-key': { kind: 'string', help: 'PEM private key for --tls-cert', parse: (raw, name) => readText(raw, name) },
} as const satisfies OptionTable;

const LOCAL_WORKERS = {
  kind: 'string',
  default: '2',
  help: 'worker processes to start on this machine',
  parse: (raw, name) => readInteger(raw, name, 1, MAX_LOCAL_WORKERS),
} as const satisfies OptionSpec<number>;

/** `local`: the training options, the worker processes to start, and --min-workers raised to their count. */
export const LOCAL_TABLE = {
  ...TRAINING_TABLE,
  // Every started worker is waited for: parseLocalSettings raises --min-workers to --workers.
  'min-workers': {
    kind: 'string',
    defaultText: '--workers',
    help: 'live workers needed for a step; with fewer, the coordinator waits (never below --workers)',
    parse: TRAINING_TABLE['min-workers'].parse,
  },
  workers: LOCAL_WORKERS,
  'debug-slowdown': {
    kind: 'string',
    help:
      'slow workers down for load-balancing experiments: factors >= 1 per worker in order, ' +
      'comma-separated, e.g. 1,3',
    parse: (raw, name) => readSlowdownList(raw, name, readOption({ workers: LOCAL_WORKERS }, raw, 'workers')),
  },
} as const satisfies OptionTable;

/** `sweep`: the training options, with lists for --global-batch and --workers and defaults suited to many runs. */
export const SWEEP_TABLE = {
  ...TRAINING_TABLE,
  'global-batch': {
    kind: 'string',
    default: '32,512',
    help: 'global batch sizes, comma-separated, e.g. 64,256,1024',
    parse: (raw, name) => readIntegerList(raw, name, 1_000_000),
  },
  'micro-batch': {
    kind: 'string',
    defaultText: 'B / --micro-batches',
    help: 'micro-batch size for every point',
    parse: (raw, name) => readInteger(raw, name, 1, 1_000_000),
  },
  'micro-batches': {
    kind: 'string',
    defaultText: 'the largest of --workers',
    help: 'micro-batches per step, K; K >= 2 lets the noise scale be estimated',
    parse: (raw, name) => readInteger(raw, name, 1, 1_000_000),
  },
  workers: {
    kind: 'string',
    default: '1,2',
    help: 'worker counts, comma-separated, e.g. 1,2',
    parse: (raw, name) => readIntegerList(raw, name, MAX_LOCAL_WORKERS),
  },
  'lr-grid': {
    kind: 'string',
    help:
      'learning rates to try at every point, comma-separated; ' +
      'the best (fewest steps to target, else lowest loss) is reported',
    parse: (raw, name) => readDecimalList(raw, name),
  },
  // Many short runs: evaluate more often, and serve no metrics unless asked.
  'eval-every': { ...TRAINING_TABLE['eval-every'], default: '25' },
  'metrics-port': {
    ...TRAINING_TABLE['metrics-port'],
    default: 'off',
    help: 'port for the sweep\'s /metrics on 127.0.0.1: each point\'s measured efficiency, throughput and steps to target as it completes (0: any free port; "off": none)',
  },
  report: { ...TRAINING_TABLE.report, help: 'write the sweep as JSON to FILE, and a CSV beside it' },
  html: {
    kind: 'string',
    help: 'write a self-contained HTML report with charts to FILE',
    parse: (raw, name) => readText(raw, name),
  },
} as const satisfies OptionTable;

/** `worker`: where the coordinator is, and how this worker computes and reports. */
export const WORKER_TABLE = {
  config: {
    ...CONFIG_FILE,
    help:
      'take options from a YAML or JSON FILE, keys as the flags (connect: ws://host:7070), with those of a ' +
      'worker: section over them; the command line and BATCHLAB_* variables win',
  },
  connect: {
    kind: 'string',
    defaultText: 'ws://$MASTER_ADDR:$MASTER_PORT',
    help: `coordinator address, ws://host:port or wss://host:port (MASTER_PORT: ${COORDINATOR_PORT.default} if unset)`,
    parse: (raw, name) => readText(raw, name),
  },
  token: {
    kind: 'string',
    help: 'shared secret; give it as BATCHLAB_TOKEN (a command line shows in ps)',
    parse: (raw, name) => readText(raw, name),
  },
  backend: TRAINING_TABLE.backend,
  'data-dir': TRAINING_TABLE['data-dir'],
  'max-chunk': {
    kind: 'string',
    default: String(DEFAULT_MAX_CHUNK),
    help:
      'largest number of samples computed at once; bigger micro-batches are accumulated ' +
      '(auto: the largest that fits in memory, probed at the start of each run; see docs/METRICS.md)',
    parse: (raw, name) => readIntegerOrAuto(raw, name, 1, 1_000_000),
  },
  'memory-limit': {
    kind: 'string',
    defaultText: 'none',
    help:
      'bytes of live tensors this worker allows itself (e.g. 512MiB): an allocation past it fails as on a device ' +
      'that small; --max-chunk auto probes against it',
    parse: (raw, name) => readBytes(raw, name, 1),
  },
  name: {
    kind: 'string',
    defaultText: 'host:pid',
    help: 'name shown in the coordinator log (rank-<RANK> when RANK is set)',
    parse: (raw, name) => readText(raw, name),
  },
  'connect-timeout': {
    kind: 'string',
    default: '60',
    help: 'seconds to keep trying to reach (or reach again) the coordinator',
    parse: (raw, name) => readMilliseconds(raw, name),
  },
  ca: {
    kind: 'string',
    help: "PEM certificate(s) to trust for wss:// (e.g. the coordinator's self-signed certificate)",
    parse: (raw, name) => readText(raw, name),
  },
  'metrics-port': TRAINING_TABLE['metrics-port'],
  'metrics-host': {
    kind: 'string',
    default: '0.0.0.0',
    help: 'address for /metrics, /healthz and /readyz',
    // An empty address means the default one.
    parse: (raw, name) => readText(raw, name) || undefined,
  },
  'client-mask': {
    kind: 'string',
    default: 'auto',
    help:
      `WebSocket client masking: ${CLIENT_MASKS.join(' | ')} ` +
      '(auto: all-zero mask on loopback or wss://, random otherwise; see docs/PERFORMANCE.md)',
    parse: (raw, name) => readOneOf(raw, name, CLIENT_MASKS),
  },
  'max-micro-batches': {
    kind: 'string',
    defaultText: 'no limit',
    help: 'most micro-batches this worker takes per step (its memory limit)',
    parse: (raw, name) => readInteger(raw, name, 1, 1_000_000),
  },
  'peer-port': {
    kind: 'string',
    default: '0',
    help: 'port of the peer server other workers send shards to (sharded reducer; 0: any free port)',
    parse: (raw, name) => readPort(raw, name),
  },
  'peer-host': {
    kind: 'string',
    defaultText: 'the local address of the connection to the coordinator',
    help: 'address the peer server listens on',
    parse: (raw, name) => readText(raw, name) || undefined,
  },
  'peer-tls-cert': {
    kind: 'string',
    help: 'PEM certificate of the peer server: peers then connect with wss:// (needed with a TLS coordinator)',
    parse: (raw, name) => readText(raw, name),
  },
  'peer-tls-key': {
    kind: 'string',
    help: 'PEM private key of --peer-tls-cert',
    parse: (raw, name) => readText(raw, name),
  },
  'advertise-address': {
    kind: 'string',
    defaultText: '--peer-host',
    help: 'address other workers reach this worker at (e.g. the pod IP; the peer port is added)',
    parse: (raw, name) => readText(raw, name) || undefined,
  },
  'debug-slowdown': {
    kind: 'string',
    default: '1',
    help: 'pretend to be FACTOR times slower (sleeps after each micro-batch) to test load balancing',
    parse: (raw, name) => readDecimal(raw, name, 1, true, 1000.000001),
  },
} as const satisfies OptionTable;

/**
 * `bench`. Its settings are parsed by parseBenchSettings in cli/bench.ts, beside the section names; these
 * parsers give the raw values only.
 */
export const BENCH_TABLE = {
  quick: {
    kind: 'boolean',
    default: false,
    help: 'fewer and shorter runs: 1–1.5 minutes instead of about 5',
    parse: (raw, name) => readFlag(raw, name),
  },
  json: { kind: 'string', help: 'also write the results as JSON to FILE', parse: (raw, name) => readText(raw, name) },
  only: {
    kind: 'string',
    defaultText: 'all sections',
    help: 'run only these sections, comma-separated: transport, reduce, scaling, balance, backends, peer',
    parse: (raw, name) => readText(raw, name),
  },
} as const satisfies OptionTable;

/** `data fetch`: where the dataset goes, and a mirror of its archive. */
export const DATA_FETCH_TABLE = {
  dir: {
    kind: 'string',
    defaultText: './data/<name>',
    help: "directory to put the dataset in (the archive's subdirectory goes inside); give it to --data-dir",
    parse: (raw, name) => readText(raw, name),
  },
  url: {
    kind: 'string',
    defaultText: 'the official archive',
    help: 'download the archive from this mirror instead (http or https); its MD5 is checked all the same',
    parse: (raw, name) => readText(raw, name),
  },
  md5: {
    kind: 'string',
    defaultText: 'the published one',
    help: 'the MD5 the archive must have (32 hex digits), for a mirror that repacked it',
    parse: (raw, name) => {
      const md5 = readText(raw, name);
      if (md5 !== undefined && !/^[0-9a-fA-F]{32}$/.test(md5)) throw new OptionError(name, md5, '32 hex digits');
      return md5?.toLowerCase();
    },
  },
} as const satisfies OptionTable;

/**
 * The value of option `name` of `table` in `raw`: the given value if the parser finds one, else the
 * option's default run through the same parser, else undefined. Throws OptionError on a bad value.
 */
export function readOption<G extends OptionTable, K extends keyof G & string>(
  table: G,
  raw: RawOptions,
  name: K,
): OptionValue<G[K]> {
  const spec: OptionSpec = table[name]!;
  const given = spec.parse(raw, name);
  if (given !== undefined || spec.default === undefined) return given as OptionValue<G[K]>;
  return spec.parse({ [name]: spec.default }, name) as OptionValue<G[K]>;
}

/** `raw` with every absent option of `table` set to its default, as yargs would have set it. */
export function fillDefaults(table: OptionTable, raw: RawOptions): RawOptions {
  const filled = { ...raw };
  for (const [name, spec] of Object.entries(table)) {
    if (spec.default !== undefined) filled[name] = raw[name] ?? spec.default;
  }
  return filled;
}
