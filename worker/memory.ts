// A worker's memory as a measured quantity: the peak of the backend's live tensor bytes while a
// micro-batch is computed (counted at every tensor allocation), the process RSS and, on wasm, the
// heap size; an optional budget (--memory-limit) that refuses an allocation taking the live
// tensor bytes past it; and --max-chunk auto, which probes the largest chunk that fits.
//
// What a backend does when memory runs out (docs/METRICS.md, "Worker memory"):
// - wasm: tfjs-backend-wasm does not check malloc's result; a heap that cannot grow past its
//   4 GiB maximum hands out address 0 and corrupts memory instead of failing. Nothing to catch:
//   auto keeps live tensors under DEFAULT_WASM_BUDGET_BYTES unless --memory-limit says otherwise.
// - cpu: tensor data lives in typed arrays outside the V8 heap; a refused allocation throws a
//   RangeError ("Array buffer allocation failed"), caught below. But Linux overcommits, and the
//   OOM killer may end the process first: auto keeps live tensors under half the free memory.
// - tensorflow (tfjs-node) throws "OOM when allocating tensor", caught below. webgpu reports
//   out-of-memory through error scopes, which tfjs does not open: auto probes only up to the
//   micro-batch there, unless --memory-limit gives the budget.

import { batchNormLayersOf } from '../shared/batch-norm.js';
import { freemem } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { BatchlabError } from '../shared/errors.js';
import { computeMicroBatchYielding, type GradientModel } from './gradient.js';

/** auto's budget of live tensor bytes on wasm without --memory-limit: half the heap's 4 GiB maximum. */
export const DEFAULT_WASM_BUDGET_BYTES = 2 * 1024 ** 3;

/** auto keeps this share of the budget free: the chunk it picks peaked at most 90% of it. */
export const PROBE_MARGIN = 0.1;

/** One measurement of a worker's memory, as the `gradient` header carries it. */
export interface MemorySample {
  /** Highest live tensor bytes (tf.memory().numBytes) while the micro-batch was computed. */
  peakTensorBytes: number;
  /** Live tensor bytes and tensors after it (flat from step to step, unless something leaks). */
  tensorBytes: number;
  tensors: number;
  /** Resident set size of the worker process after it. */
  rssBytes: number;
  /** wasm only: the size of the wasm heap, which grows to the highest demand and never shrinks. */
  wasmHeapBytes?: number;
}

interface EngineInternals {
  state: { numBytes: number; gradientDepth: number; activeTape: { saved?: tf.Tensor[] }[] | null };
  trackTensor(tensor: tf.Tensor, backend: unknown): void;
}

/**
 * Counts the peak of live tensor bytes at every allocation, and enforces `budget` (null: none)
 * while computing: the worker's own bookkeeping (building the model, loading weights) is not refused.
 */
class MemoryMeter {
  peak = 0;
  /** The budget in force now (only while computing). */
  budget: number | null = null;
  /** --memory-limit: the budget while a micro-batch is computed. */
  limit: number | null = null;
  private installedOn: EngineInternals | null = null;

  /** Wraps the engine's tensor bookkeeping (once per engine): the only place every allocation passes. */
  install(): void {
    const engine = tf.engine() as unknown as EngineInternals;
    if (this.installedOn === engine) return;
    this.installedOn = engine;
    const track = engine.trackTensor.bind(engine);
    engine.trackTensor = (tensor, backend) => {
      // Tracked first: inside tf.tidy the tensor is in the scope, so a refusal below frees it.
      track(tensor, backend);
      const bytes = engine.state.numBytes;
      if (bytes > this.peak) this.peak = bytes;
      if (this.budget !== null && bytes > this.budget) {
        const size = tensor.size * 4;
        throw new MemoryExhausted(
          `allocating ${size} bytes took the live tensor bytes to ${bytes}, past the budget of ${this.budget}`,
          this.budget,
        );
      }
    };
  }

  /** Starts a new peak at the bytes live now. */
  resetPeak(): void {
    this.peak = tf.memory().numBytes;
  }
}

const meter = new MemoryMeter();

/** An allocation that did not fit: the budget's refusal, or a backend's own failure. */
export class MemoryExhausted extends Error {
  /** The budget of live tensor bytes that refused the allocation. */
  readonly budget: number;
  constructor(message: string, budget: number) {
    super(message);
    this.budget = budget;
    this.name = 'MemoryExhausted';
  }
}

/** Whether `error` is a backend's allocation failure (see the header for which ones are reportable). */
export function isAllocationFailure(error: unknown): boolean {
  if (error instanceof MemoryExhausted) return true;
  const message = error instanceof Error ? error.message : String(error);
  return /Array buffer allocation failed|OOM when allocating|out of memory/i.test(message);
}

/**
 * Frees what a failed gradient computation leaves: tf.tidy frees the tensors of its scopes, but
 * the tensors the gradient tape keeps for the backward pass are freed only by a backward pass
 * that completes. Call once the failure has unwound past every gradient (no tape open).
 */
export function releaseAfterFailure(): void {
  const { state } = tf.engine() as unknown as EngineInternals;
  if (state.gradientDepth !== 0 || !state.activeTape) return;
  for (const node of state.activeTape) for (const t of node.saved ?? []) t.dispose();
  state.activeTape = null;
}

/** Starts counting (idempotent) and sets the budget of live tensor bytes while computing (null: none). */
export function startMemoryMeter(limit: number | null): void {
  meter.install();
  meter.limit = limit;
}

/**
 * Runs `compute` with `budget` in force (restored after, even when it throws). A worker computes
 * one thing at a time: while `compute` yields, only heartbeats run, and they allocate no tensors.
 */
async function within<T>(budget: number | null, compute: () => Promise<T>): Promise<T> {
  const previous = meter.budget;
  meter.budget = budget;
  try {
    return await compute();
  } finally {
    meter.budget = previous;
  }
}

/**
 * Runs `compute` and returns its result with the peak of live tensor bytes during it, and the
 * memory after it.
 */
export async function measured<T>(compute: () => Promise<T>): Promise<{ result: T; memory: MemorySample }> {
  meter.resetPeak();
  meter.budget = meter.limit;
  let result: T;
  try {
    result = await compute();
  } finally {
    meter.budget = null;
  }
  const peakTensorBytes = meter.peak;
  return { result, memory: { peakTensorBytes, ...memoryNow() } };
}

/** The peak of live tensor bytes while a synchronous `compute` runs. */
export function peakTensorBytesOf(compute: () => unknown): number {
  meter.install();
  meter.resetPeak();
  compute();
  return meter.peak;
}

/** Live tensors, RSS and (wasm) heap size now. */
export function memoryNow(): Omit<MemorySample, 'peakTensorBytes'> {
  const { numBytes, numTensors } = tf.memory();
  const heap = wasmHeapBytes();
  return {
    tensorBytes: numBytes,
    tensors: numTensors,
    rssBytes: process.memoryUsage.rss(),
    ...(heap === null ? {} : { wasmHeapBytes: heap }),
  };
}

/** The wasm heap's size (the module's memory buffer), or null on another backend. */
export function wasmHeapBytes(): number | null {
  if (tf.getBackend() !== 'wasm') return null;
  const module = (tf.backend() as BackendWasm).wasm as unknown as { HEAPU8?: Uint8Array };
  return module.HEAPU8?.buffer.byteLength ?? null;
}

/** The budget auto probes against: --memory-limit, else the backend's default (see the header); null: none. */
export function probeBudget(backend: string, memoryLimit: number | null): number | null {
  if (memoryLimit !== null) return memoryLimit;
  if (backend === 'wasm') return DEFAULT_WASM_BUDGET_BYTES;
  if (backend === 'cpu') return Math.floor(freemem() / 2);
  return null;
}

/**
 * What computing the first `chunk` samples needs, after `failure` refused it. When the budget was
 * --memory-limit (`emulated`: a smaller device emulated on one with room), the same computation
 * runs without it, to measure its peak. A budget auto chose itself (the backend's default) is the
 * most it risks: on wasm more corrupts the heap, on cpu it may wake the OOM killer, so nothing runs
 * past it. A backend's own failure says only that it failed.
 */
export async function needs(
  failure: unknown,
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
  chunk: number,
  emulated: boolean,
): Promise<string> {
  if (!(failure instanceof MemoryExhausted))
    return `computing it needs more (${failure instanceof Error ? failure.message : String(failure)})`;
  if (!emulated) return `computing it needs more than ${failure.budget} bytes of tensors (${failure.message})`;
  const sampleSize = images.length / labels.length;
  meter.resetPeak();
  await within(null, () =>
    computeMicroBatchYielding(gm, images.subarray(0, chunk * sampleSize), labels.subarray(0, chunk), chunk),
  );
  const peak = meter.peak;
  return `computing it needs ${peak} bytes of tensors (${failure.message})`;
}

/** What the probe found: the chunk, the peak of each size tried, and why it stopped. */
export interface ProbeResult {
  maxChunk: number;
  tried: { chunk: number; peakTensorBytes: number | null }[];
  stoppedBy: 'micro-batch' | 'allocation-failure' | 'margin';
}

/**
 * --max-chunk auto: computes chunks of 1, 2, 4, ... samples (the first `ceiling` of `images`)
 * until one fails to allocate or the chunk reaches `ceiling` (the largest micro-batch this worker
 * will be given), then picks the largest that peaked within the budget less PROBE_MARGIN (the
 * largest that succeeded, halved, when a backend's own failure ended it and no budget is known).
 * `describe.emulated`: `budget` is --memory-limit (see `needs`).
 * A batch-norm model computes its micro-batch in one pass: only `ceiling` is tried. Throws
 * OUT_OF_MEMORY when nothing fits; leaves no tensors behind. Asynchronous: webgpu reads results
 * only so, and the worker answers heartbeats between chunks.
 */
export async function probeMaxChunk(
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
  ceiling: number,
  budget: number | null,
  describe: { backend: string; memory: string; emulated: boolean },
): Promise<ProbeResult> {
  const sampleSize = images.length / labels.length;
  const sizes: number[] = [];
  // A model with batch norm computes each micro-batch in one pass (the ghost batch).
  if (batchNormLayersOf(gm.model).length > 0) sizes.push(ceiling);
  else
    for (let c = 1; ; c *= 2) {
      sizes.push(Math.min(c, ceiling));
      if (c >= ceiling) break;
    }
  const tried: ProbeResult['tried'] = [];
  meter.install();
  let failure: unknown = null;
  for (const chunk of sizes) {
    meter.resetPeak();
    try {
      await within(budget, () =>
        computeMicroBatchYielding(gm, images.subarray(0, chunk * sampleSize), labels.subarray(0, chunk), chunk),
      );
    } catch (error) {
      releaseAfterFailure();
      if (!isAllocationFailure(error)) throw error;
      tried.push({ chunk, peakTensorBytes: null });
      failure = error;
      break;
    }
    tried.push({ chunk, peakTensorBytes: meter.peak });
  }
  const fitted = tried.filter((t) => t.peakTensorBytes !== null);
  if (fitted.length === 0) {
    const chunk = sizes[0]!;
    const what = chunk === 1 ? 'one sample' : `one micro-batch of ${chunk} samples (batch norm: one pass)`;
    throw new BatchlabError(
      'OUT_OF_MEMORY',
      `backend ${describe.backend} with ${describe.memory} cannot hold ${what}: ${await needs(failure, gm, images, labels, chunk, describe.emulated)}`,
    );
  }
  const withinMargin =
    budget === null ? fitted : fitted.filter((t) => t.peakTensorBytes! <= (1 - PROBE_MARGIN) * budget);
  let pick = (withinMargin.length ? withinMargin : fitted)[withinMargin.length ? withinMargin.length - 1 : 0]!.chunk;
  if (failure !== null && budget === null) pick = Math.max(1, Math.floor(pick / 2));
  const stoppedBy =
    failure !== null ? 'allocation-failure' : withinMargin.length < fitted.length ? 'margin' : 'micro-batch';
  return { maxChunk: pick, tried, stoppedBy };
}
