// The configuration of one training run, as the coordinator consumes it (the CLI validates
// options into this shape; sweeps and experiments build it directly), and what the code that
// starts a coordinator hands it and hears back.

import type { AugmentMode } from '../shared/augment.js';
import type { BackendName } from '../shared/backend.js';
import type { DatasetName } from '../shared/data/dataset.js';
import type { DecayKind, LrScaling, LrWindow, WarmupKind } from '../shared/lr-schedule.js';
import type { ModelName } from '../shared/models/index.js';
import type { OptimizerName } from '../shared/optimizers/index.js';
import type { WireDtype } from '../shared/codec.js';
import type { ReducerName } from './reducer.js';
import type { RecordedConfig } from './report.js';
import type { BalanceMode } from './split.js';
import type { TrainerObserver } from './trainer-observer.js';

export interface RunConfig {
  /** A built-in model's name, or the path of a TensorFlow.js layers model.json. */
  model: ModelName | (string & {});
  hidden: number[];
  /** Layers of a `resnet` (6n + 2; default 20); absent for the other models. */
  depth?: number;
  dataset: DatasetName;
  dataDir?: string;
  /** How workers augment the training samples (evaluation never does). */
  augment: AugmentMode;
  syntheticTrain?: number;
  syntheticTest?: number;
  globalBatchSize: number;
  microBatch: number;
  /** Exactly one of steps / epochs decides the run length (with a target: the budget). */
  steps: number | null;
  epochs: number | null;
  optimizer: OptimizerName;
  /** η, the learning rate at `baseBatch`. */
  lr: number;
  lrScaling: LrScaling;
  /** B0 for the LR rule and statistical efficiency (null: the global batch). */
  baseBatch: number | null;
  warmupSteps: number;
  warmup: WarmupKind;
  decay: DecayKind;
  decayBoundaries: number[];
  decayFactor: number;
  /** LR multipliers for step windows (temperature experiments). */
  lrWindows: LrWindow[];
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  seed: number;
  evalEvery: number;
  /** Stop when the periodic eval accuracy reaches this. */
  targetAccuracy: number | null;
  /** Stop when the smoothed training loss reaches this. */
  targetLoss: number | null;
  minWorkers: number;
  workerWaitTimeoutMs: number;
  /** Ping every interval; a worker silent for two intervals is dead. */
  heartbeatIntervalMs: number;
  /** Per-step deadline = clamp(5 × median recent step time, floor, cap); late work is re-issued. */
  stepDeadlineFloorMs: number;
  stepDeadlineCapMs: number;
  /** Evict a worker late at the step deadline this many times in a row (0: never). */
  evictAfter: number;
  /** Where checkpoints go (none when undefined). */
  checkpointDir?: string;
  /** Checkpoint every this many steps (0: only on shutdown). */
  checkpointEvery: number;
  /** Continue from the newest checkpoint in checkpointDir: true (one must exist), 'auto' (start fresh when there is none). */
  resume: boolean | 'auto';
  /** Checkpoints kept in checkpointDir (default 2). */
  keepCheckpoints?: number;
  /** Move checkpoints already in checkpointDir aside instead of refusing to start. */
  fresh?: boolean;
  /** On resume, accept (and log and report) LR settings that differ from the checkpoint's. */
  allowScheduleChange?: boolean;
  /** A --save-model directory whose weights a run starting at step 0 begins from. */
  initFrom?: string;
  backend: BackendName;
  /** null: no metrics endpoint. 0: any free port. */
  metricsPort: number | null;
  report?: string;
  /** JSON lines of the configuration, each step and each evaluation, written as they happen. */
  events?: string;
  saveModel?: string;
  /** Chrome-trace timeline file. */
  trace?: string;
  /** Prometheus file_sd JSON of the /metrics endpoints. */
  targetsFile?: string;
  /** Number format of gradient and weight bodies on the wire. */
  wireDtype: WireDtype;
  /** Where gradients are summed and the update applied: on the coordinator, or sharded among the workers. */
  reducer: ReducerName;
  /** How micro-batches are shared among workers. */
  balance: BalanceMode;
}

/** A coordinator's validated configuration (what `batchlab coordinator` options parse into). */
export interface CoordinatorConfig extends RunConfig {
  host: string;
  port: number;
  /** null: no token required (loopback demos only). */
  token: string | null;
  /** PEM files: serve wss:// when both are given. */
  tlsCert?: string;
  tlsKey?: string;
}

export interface CoordinatorOptions extends CoordinatorConfig {
  /** Written into the report's `command` field. */
  command: string;
  /** Written into the report's `config` field: the CLI's options, as a config file holds them. */
  config?: RecordedConfig;
  /**
   * Benchmarks that time steps only: no evaluation at all (not the periodic one, the final one
   * or the train-split one for the generalization gap); the report's accuracies are null.
   */
  timingOnly?: boolean;
}

/** What the coordinator tells the code that started it. */
export interface RunStart {
  port: number;
  metricsUrl: string | null;
  steps: number;
  backend: string;
  dataset: string;
  /**
   * The most samples a worker must compute in one pass: a batch-norm model's micro-batch (its ghost
   * batch, never chunked); null when any `--max-chunk` will do.
   */
  onePass: number | null;
}

export interface CoordinatorHooks {
  log: (line: string) => void;
  /** Called once the WebSocket server listens (port resolved) and the run is planned. */
  onListening?: (start: RunStart) => void;
  observer?: TrainerObserver;
  signal?: AbortSignal;
}
