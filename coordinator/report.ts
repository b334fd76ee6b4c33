// The `--report FILE` summary: one JSON object with the keys the README lists (null where not
// measured), written atomically.

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { CheckpointRecord, ScheduleChange } from './checkpoint.js';
import type { HistoryPoint, WorkerMemoryPeak } from './run-totals.js';

/** Option values as a config file writes them, keyed by option name (`global-batch: 256`). */
export type RecordedValue = string | number | boolean;
/** The options a run resolved to; the options of its command alone sit in a section named after it (`coordinator: {port: 7070}`). */
export type RecordedConfig = Readonly<Record<string, RecordedValue | Readonly<Record<string, RecordedValue>>>>;

/** The run summary; key names are a contract used by tests, sweeps and benchmarks. */
export interface RunReport {
  command: string;
  /** The options the CLI ran with (no token, no output paths); `--config` of this report runs it again. Null in process. */
  config: RecordedConfig | null;
  /** false in the report written at each checkpoint while the run goes on (`steps` says how far it got); true at the end. */
  complete: boolean;
  backend: string;
  /** webgpu: the coordinator's adapter ("adapter … , hardware" or "…, software fallback"); else null. */
  adapter: string | null;
  /** The reducer that ran the last step: `star` or `sharded` (a sharded run that fell back says `star`). */
  reducer: string;
  workers: number;
  globalBatchSize: number;
  microBatchSize: number;
  steps: number;
  samples: number;
  initialLoss: number | null;
  finalLoss: number | null;
  evalAccuracy: number | null;
  evalLoss: number | null;
  /** Accuracy on (up to 10,000 of) the training samples in inference mode, at the end. */
  trainAccuracy: number | null;
  /** trainAccuracy − evalAccuracy. */
  generalizationGap: number | null;
  samplesPerSecond: number | null;
  /** Mean seconds per step by phase: dispatch, compute (mean worker), gather-wait, reduce, apply. */
  phaseSeconds: Record<string, number>;
  /** Live estimate over the run: Σ mean worker compute / Σ step wall time. */
  scalingEfficiency: number | null;
  /** Latest B_simple; null when never estimable (one micro-batch per step). */
  gradientNoiseScale: number | null;
  gradientNoiseScaleReliable: boolean;
  /** --lr (η at the base batch); sweeps put the best LR of their grid here. */
  learningRate: number;
  /** η after the batch-size scaling rule. */
  peakLearningRate: number;
  targetReached: boolean | null;
  stepsToTarget: number | null;
  samplesToTarget: number | null;
  wallSeconds: number;
  model: string;
  dataset: string;
  optimizer: string;
  seed: number;
  /** The --save-model directory whose weights the run started from (--init-from); null when none. */
  initFrom: string | null;
  /** LR settings that differ from the resumed checkpoint's (accepted with --allow-schedule-change); [] when none. */
  scheduleChanges: ScheduleChange[];
  /** This session's checkpoint writes (null without --checkpoint-dir). */
  /** This session's checkpoint writes (each failure was logged; the run went on). */
  checkpoints: Omit<CheckpointRecord, 'lowSpaceWarned'> | null;
  /**
   * The memory a micro-batch needs: the largest per-worker peak of live tensor bytes while
   * computing one (docs/METRICS.md, "Worker memory"); null when no worker reported memory.
   */
  peakMemoryBytes: number | null;
  /** The largest worker process RSS after a micro-batch (Node, the dataset and the heap included). */
  peakRssBytes: number | null;
  /** Each worker's memory over the run, by worker id. */
  workerMemory: WorkerMemoryPeak[];
  /** Loss, LR, noise scale and eval accuracy over training (at most ~400 rows). */
  history: HistoryPoint[];
}

/** Writes `report` as pretty JSON to `path` (temp file + rename). */
export async function writeReport(path: string, report: RunReport): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
}
