// One micro-batch's forward and backward pass: the gradient *sum* of the summed cross-entropy
// loss, computed in chunks of at most `maxChunk` samples (accumulation) inside tf.tidy.
//
// Two ways to compute a chunk:
// - the dense fast path, for models that are a chain of Dense layers (relu or linear, optionally
//   after Flatten): a hand-written forward/backward whose matMuls all have the one orientation
//   tfjs-backend-wasm runs on XNNPACK (A·B; with transposeA or transposeB it falls back to a naive
//   loop ~10x slower, and that is what the backward of tfjs's own matMul gradient uses), with the
//   loss gradient softmax(logits) - onehot computed directly in JS and every layer's gradient
//   written straight into the flat accumulator;
// - the generic path, tf.variableGrads over model.apply, for every other model.
// The two agree within float32 rounding (summation order); see test/worker/gradient.test.ts.
//
// A model with BatchNormalization layers computes each micro-batch in one pass, whatever
// `maxChunk` says: batch statistics couple the samples, so the micro-batch is the ghost batch
// (shared/batch-norm.ts). Its statistics come from the layers themselves: with momentum 0 and
// moving statistics zeroed before the pass, tfjs's moving-average update 0 − (0 − batch) · 1
// leaves exactly the batch mean and variance the pass normalized with in the moving variables.
// So the worker's copy of the model holds the last micro-batch's statistics, never moving ones.
//
// On webgpu only the generic path runs, and its results are read asynchronously: WebGPU in Node
// cannot read a GPU tensor synchronously (tfjs's readSync needs OffscreenCanvas), and the dense
// fast path reads intermediate results between its ops — its gain is wasm's XNNPACK orientation.

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
// Type-only: a value import would register the 'wasm' backend in processes that never asked for it.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { batchNormLayersOf, batchStatsLength, type BatchNormLayer } from '../shared/batch-norm.js';

/** What a worker reports for one micro-batch (before framing). */
export interface MicroBatchResult {
  /** Sum over samples of d(loss_i)/dw, flat in the parameter layout. */
  gradSum: Float32Array;
  samples: number;
  lossSum: number;
  correct: number;
  /** |gradSum / samples|^2: squared norm of the micro-batch's mean-loss gradient. */
  sqNorm: number;
  /** Models with batch norm: each layer's batch mean then variance (shared/batch-norm.ts layout). */
  batchStats?: Float32Array;
}

/** Model plus the facts needed to turn raw arrays into tensors. */
export interface GradientModel {
  model: tfl.LayersModel;
  sampleShape: number[];
  numClasses: number;
}

/** One chunk's share of the loss sum and correct count (its gradient goes straight into the accumulator). */
interface ChunkStats {
  lossSum: number;
  correct: number;
}

/**
 * Adds (or, for the first chunk, copies) `part` into `acc[offset...]`. Float32 addition in chunk
 * order: every caller gets the same bits for the same chunks.
 */
function accumulate(acc: Float32Array, part: ArrayLike<number>, offset: number, first: boolean): void {
  const n = part.length;
  if (first) {
    acc.set(part, offset);
    return;
  }
  for (let i = 0; i < n; i++) acc[offset + i] = acc[offset + i]! + part[i]!;
}

/**
 * The values of `t` for an immediate read: on wasm a view of the heap (no copy; valid only until
 * the next tensor allocation may grow the heap), elsewhere dataSync.
 */
function peek(t: tf.Tensor): Float32Array {
  if (tf.getBackend() === 'wasm') return (tf.backend() as BackendWasm).typedArrayFromHeap(t) as Float32Array;
  return t.dataSync() as Float32Array;
}

// ---------------------------------------------------------------------------------------------
// Generic path: tf.variableGrads over the model.

/**
 * Forward + backward of samples [start, end) inside tf.tidy: the flat gradient sum [P], the loss
 * sum and the correct count, packed in one tensor [P + 2] (one read: on webgpu each read is a
 * queue submission and a buffer map), left for the caller to read (at once, or asynchronously on
 * webgpu) and dispose. The count is exact in float32 (a chunk is far below 2^24 samples).
 */
function chunkTensorsGeneric(
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
  start: number,
  end: number,
): tf.Tensor[] {
  const sampleSize = images.length / labels.length;
  const vars = gm.model.trainableWeights.map((w) => w.read() as tf.Variable);
  const norms = batchNormOf(gm.model);
  const momenta = norms.map((l) => l.momentum);
  try {
    return tf.tidy(() => {
      captureBatchStats(norms);
      const x = tf.tensor(images.subarray(start * sampleSize, end * sampleSize), [end - start, ...gm.sampleShape]); // [c, 28, 28, 1]
      const labelTensor = tf.tensor1d(labels.subarray(start, end), 'int32'); // [c]
      const y = tf.oneHot(labelTensor, gm.numClasses); // [c, classes]
      let logits: tf.Tensor | null = null;
      let result;
      try {
        result = tf.variableGrads(() => {
          // Kept so accuracy reuses this forward pass; disposed just below (or here, when the backward fails).
          logits = tf.keep(gm.model.apply(x, { training: true }) as tf.Tensor); // [c, classes]
          return tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(y, logits, undefined, 0, tf.Reduction.SUM);
        }, vars);
      } catch (error) {
        (logits as tf.Tensor | null)?.dispose();
        throw error;
      }
      const { value, grads } = result;
      const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits!, 1), labelTensor), 'float32'));
      (logits as tf.Tensor | null)?.dispose();
      const parts = [
        ...vars.map((v) => tf.reshape(grads[v.name]!, [-1])),
        tf.reshape(value, [1]),
        tf.reshape(correct, [1]),
        // What the forward pass normalized with (see the top of this file).
        ...norms.flatMap((l) => [tf.reshape(l.movingMean.read(), [-1]), tf.reshape(l.movingVariance.read(), [-1])]),
      ];
      return [tf.concat(parts)]; // [P + 2 + S]: the gradient sum, the loss sum, the correct count, the batch statistics
    });
  } finally {
    norms.forEach((l, i) => setMomentum(l, momenta[i]!));
  }
}

/** The model's batch-norm layers (cached per model). */
const batchNorms = new WeakMap<tfl.LayersModel, BatchNormLayer[]>();

function batchNormOf(model: tfl.LayersModel): BatchNormLayer[] {
  let layers = batchNorms.get(model);
  if (!layers) {
    layers = batchNormLayersOf(model);
    batchNorms.set(model, layers);
  }
  return layers;
}

function setMomentum(l: BatchNormLayer, momentum: number): void {
  (l.layer as unknown as { momentum: number }).momentum = momentum;
}

/**
 * Before a batch-norm model's forward pass (inside a tidy): momentum 0 and moving statistics 0,
 * so the pass leaves its batch statistics, exactly, in the moving variables.
 */
function captureBatchStats(norms: readonly BatchNormLayer[]): void {
  for (const l of norms) {
    setMomentum(l, 0);
    l.movingMean.write(tf.zeros(l.movingMean.shape as number[]));
    l.movingVariance.write(tf.zeros(l.movingVariance.shape as number[]));
  }
}

/** The values of a generic chunk's tensors, in their order: read by whoever drives the chunks. */
type ChunkValues = ArrayLike<number>[];

// ---------------------------------------------------------------------------------------------
// Dense fast path.

/** One Dense layer of a recognised MLP. */
interface DenseStage {
  kernel: tfl.LayerVariable; // [inDim, outDim]
  bias: tfl.LayerVariable | null; // [outDim]
  inDim: number;
  outDim: number;
  relu: boolean;
  /** Offset of the kernel's gradient in the flat vector; the bias's follows it directly. */
  offset: number;
  /** Scratch, grown on demand: this stage's input feature-major, [inDim + 1 (ones), c]. */
  inT: Float32Array;
  /** Scratch: this stage's input row-major [c, inDim] (when the stage below ran transposed). */
  inRows: Float32Array;
  /** Scratch: [Wᵀ | b] plus a row [0 … 0 1], [outDim + 1, inDim + 1], for the transposed forward. */
  weightsT: Float32Array;
  /** Scratch: d(loss)/d(this stage's pre-activation output), [c, outDim], and its transpose. */
  dZ: Float32Array;
  dZT: Float32Array;
}

/** How to run a recognised MLP, plus JS scratch buffers reused across chunks. */
interface DensePlan {
  stages: DenseStage[];
  numParams: number;
}

/** Per model: its trainable weights when last examined, and the plan for them (null: generic path). */
const plans = new WeakMap<tfl.LayersModel, { weights: tfl.LayerVariable[]; plan: DensePlan | null }>();

function sameWeights(a: readonly tfl.LayerVariable[], b: readonly tfl.LayerVariable[]): boolean {
  return a.length === b.length && a.every((w, i) => w === b[i]);
}

/**
 * Recognises a chain InputLayer → Flatten* → Dense+ (activation relu or linear, rank-2 input,
 * float32, every weight trainable and in model.trainableWeights as [kernel, bias] per layer).
 * Returns null for anything else (convolutions, other layers, branches, frozen layers...).
 */
function makeDensePlan(model: tfl.LayersModel): DensePlan | null {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) return null;
  const layers = model.layers.filter((l) => l.getClassName() !== 'InputLayer');
  if (model.layers.length - layers.length > 1) return null;
  let previous: tfl.layers.Layer = model.inputs[0]!.sourceLayer;
  if (previous.getClassName() !== 'InputLayer') return null;
  const stages: DenseStage[] = [];
  const expected: tfl.LayerVariable[] = [];
  let offset = 0;
  for (const layer of layers) {
    const nodes = layer.inboundNodes;
    if (nodes.length !== 1 || nodes[0]!.inboundLayers.length !== 1 || nodes[0]!.inboundLayers[0] !== previous)
      return null;
    previous = layer;
    const kind = layer.getClassName();
    if (kind === 'Flatten' && stages.length === 0) continue;
    if (kind !== 'Dense') return null;
    const config = layer.getConfig();
    if (config.activation !== 'relu' && config.activation !== 'linear') return null;
    const inputShape = (layer.input as tfl.SymbolicTensor).shape;
    if (inputShape.length !== 2) return null;
    const weights = layer.trainableWeights;
    const useBias = config.useBias !== false;
    if (weights.length !== (useBias ? 2 : 1) || layer.nonTrainableWeights.length !== 0) return null;
    const kernel = weights[0]!;
    const bias = useBias ? weights[1]! : null;
    const [inDim, outDim] = kernel.shape as number[];
    if (kernel.shape.length !== 2 || inDim !== inputShape[1] || kernel.dtype !== 'float32') return null;
    if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outDim || bias.dtype !== 'float32')) return null;
    const empty = new Float32Array(0);
    stages.push({
      kernel,
      bias,
      inDim: inDim!,
      outDim: outDim!,
      relu: config.activation === 'relu',
      offset,
      inT: empty,
      inRows: empty,
      weightsT: empty,
      dZ: empty,
      dZT: empty,
    });
    expected.push(...weights);
    offset += (inDim! + (bias ? 1 : 0)) * outDim!;
  }
  if (stages.length === 0 || model.outputs[0]!.sourceLayer !== previous) return null;
  if (!sameWeights(model.trainableWeights, expected)) return null;
  return { stages, numParams: offset };
}

/**
 * The model's dense plan (cached; re-examined if its trainable weights change, e.g. a layer is
 * frozen), or null when it must take the generic path.
 */
function densePlanOf(model: tfl.LayersModel): DensePlan | null {
  const weights = model.trainableWeights;
  let entry = plans.get(model);
  if (entry === undefined || !sameWeights(entry.weights, weights)) {
    entry = { weights, plan: makeDensePlan(model) };
    plans.set(model, entry);
  }
  return entry.plan;
}

/**
 * Writes the transpose of `rows` rows of `cols` values from `src` (starting at `from`) into
 * `dst`: dst[k * stride + i] = src[from + i * cols + k].
 */
export function transposeInto(
  src: ArrayLike<number>,
  from: number,
  rows: number,
  cols: number,
  dst: Float32Array,
  stride: number,
): void {
  // Eight source rows at a time, unrolled: eight read streams, eight contiguous writes
  // (~0.6 ns per value, 2.7x the plain triple loop).
  const full = rows - (rows % 8);
  let i0 = 0;
  for (; i0 < full; i0 += 8) {
    const s0 = from + i0 * cols;
    const s1 = s0 + cols;
    const s2 = s1 + cols;
    const s3 = s2 + cols;
    const s4 = s3 + cols;
    const s5 = s4 + cols;
    const s6 = s5 + cols;
    const s7 = s6 + cols;
    for (let k = 0, d = i0; k < cols; k++, d += stride) {
      dst[d] = src[s0 + k]!;
      dst[d + 1] = src[s1 + k]!;
      dst[d + 2] = src[s2 + k]!;
      dst[d + 3] = src[s3 + k]!;
      dst[d + 4] = src[s4 + k]!;
      dst[d + 5] = src[s5 + k]!;
      dst[d + 6] = src[s6 + k]!;
      dst[d + 7] = src[s7 + k]!;
    }
  }
  for (let i = i0; i < rows; i++) {
    const s = from + i * cols;
    for (let k = 0, d = i; k < cols; k++, d += stride) dst[d] = src[s + k]!;
  }
}

/**
 * Softmax cross-entropy of `logits` [c, classes] against `labels`: returns the loss sum and the
 * number of samples whose arg-max is the label, and writes softmax - onehot into `dLogits`.
 * Labels outside [0, classes) have an all-zero one-hot row (as tf.oneHot): zero loss, gradient softmax.
 */
function softmaxCrossEntropy(
  logits: ArrayLike<number>,
  labels: Int32Array,
  start: number,
  c: number,
  classes: number,
  dLogits: Float32Array,
): ChunkStats {
  let lossSum = 0;
  let correct = 0;
  for (let i = 0; i < c; i++) {
    const row = i * classes;
    let max = -Infinity;
    let argMax = 0;
    for (let j = 0; j < classes; j++) {
      const v = logits[row + j]!;
      if (v > max) {
        max = v;
        argMax = j;
      }
    }
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp(logits[row + j]! - max);
    const logSumExp = max + Math.log(sum);
    const label = labels[start + i]!;
    const valid = label >= 0 && label < classes;
    if (valid) lossSum += logSumExp - logits[row + label]!;
    if (argMax === label) correct++;
    for (let j = 0; j < classes; j++)
      dLogits[row + j] = Math.exp(logits[row + j]! - logSumExp) - (valid && j === label ? 1 : 0);
  }
  return { lossSum, correct };
}

/** `buffer` if it holds `n` values, else a new array of `n` (the scratch only grows). */
function grown(buffer: Float32Array, n: number): Float32Array {
  return buffer.length >= n ? buffer : new Float32Array(n);
}

/**
 * dZ = dH ⊙ step(h) for the stage below, from dHᵀ [width, c] and, when that stage has a relu,
 * its output h: feature-major like dHᵀ (`hFeatureMajor`, possibly with extra rows after) or
 * row-major [c, width]. Writes dZ [c, width] and, when `dZT` is given, dZᵀ [width, c].
 * Multiplying by step(h) rather than selecting keeps tf.step's semantics (NaN times 0 is NaN).
 */
function maskedGradient(
  dHT: ArrayLike<number>,
  h: ArrayLike<number> | null,
  hFeatureMajor: boolean,
  c: number,
  width: number,
  dZ: Float32Array,
  dZT: Float32Array | null,
): void {
  for (let k = 0; k < width; k++) {
    const row = k * c;
    for (let i = 0; i < c; i++) {
      let v = dHT[row + i]!;
      if (h !== null) v *= (hFeatureMajor ? h[row + i]! : h[i * width + k]!) > 0 ? 1 : 0;
      dZ[i * width + k] = v;
      if (dZT) dZT[row + i] = v;
    }
  }
}

/**
 * Whether stage `l` of `L` runs its forward transposed for a chunk of `c` samples. The wasm
 * backend's XNNPACK matMul repacks its right operand whenever that is a new tensor (~3 ns per
 * value here): the plain forward h·W repacks W, i.e. every step; the transposed forward
 * [Wᵀ | b]·[hᵀ; 1] repacks the (c-column) activations instead and pays a JS transpose of W
 * (~0.6 ns per value). Measured on the 784-256-128-10 MLP, whole step: ~30% less time at
 * c = 16-32, 10-25% at c = 64-96, no difference at c = 128-192, ~3% more at c = 256 (had it run
 * transposed). The last stage always runs plain (its logits are read row-major, and the class
 * count is small). Both orientations give the same gradient within float32 rounding (in
 * practice, with XNNPACK, the same bits).
 */
function transposedForward(s: DenseStage, l: number, L: number, c: number): boolean {
  return l < L - 1 && 2 * c < s.outDim;
}

/**
 * Forward + backward of samples [start, end) through a recognised MLP. Every matMul is A·B with
 * neither operand transposed (the XNNPACK path on wasm, which repacks the right operand whenever
 * it is a new tensor: the big weight matrices are only ever on the left in the backward):
 *   forward     h_l = act(h_{l-1}·W_l + b_l)               (plain: fused bias + relu; or, for
 *               small chunks, transposed: [h_lᵀ; 1] = act([W_lᵀ | b_l; 0 1]·[h_{l-1}ᵀ; 1]))
 *   weights     [dW_l; db_l] = [h_{l-1}ᵀ; 1]·dZ_l → [in+1, out]: kernel grad then bias grad,
 *               exactly the flat layout
 *   inputs      dH_{l-1}ᵀ = W_l·dZ_lᵀ,  dZ_{l-1} = dH_{l-1} ⊙ step(h_{l-1})
 * with dZ_L = softmax(logits) - onehot. Transposes, ones rows and relu masks are done in JS on
 * reused scratch buffers, reading the backend's memory directly on wasm.
 */
function computeChunkDense(
  plan: DensePlan,
  images: Float32Array,
  labels: Int32Array,
  start: number,
  end: number,
  acc: Float32Array,
  first: boolean,
): ChunkStats {
  const c = end - start;
  const { stages } = plan;
  const L = stages.length;
  const inDim = stages[0]!.inDim;
  const transposed = stages.map((s, l) => transposedForward(s, l, L, c));
  for (let l = 0; l < L; l++) {
    const s = stages[l]!;
    s.inT = grown(s.inT, (s.inDim + 1) * c);
    s.dZ = grown(s.dZ, s.outDim * c);
    s.dZT = grown(s.dZT, s.outDim * c);
    if (l > 0 && transposed[l - 1] && !transposed[l]) s.inRows = grown(s.inRows, s.inDim * c);
    if (transposed[l]) s.weightsT = grown(s.weightsT, (s.outDim + 1) * (s.inDim + 1));
  }
  let stats: ChunkStats = { lossSum: 0, correct: 0 };
  tf.tidy(() => {
    // The input of stage l (the output of stage l-1) in the forms needed so far: row-major
    // [c, inDim], and feature-major with a row of ones [inDim + 1, c] (what dW_l needs).
    const rowMajor: (tf.Tensor2D | null)[] = [tf.tensor2d(images.subarray(start * inDim, end * inDim), [c, inDim])];
    const featureMajor: (tf.Tensor2D | null)[] = [null];
    const featureMajorOf = (l: number): tf.Tensor2D => {
      const s = stages[l]!;
      if (!featureMajor[l]) {
        const inT = s.inT.subarray(0, (s.inDim + 1) * c);
        if (l === 0) transposeInto(images, start * inDim, c, inDim, inT, c);
        else transposeInto(peek(rowMajor[l]!), 0, c, s.inDim, inT, c);
        inT.fill(1, s.inDim * c);
        featureMajor[l] = tf.tensor2d(inT, [s.inDim + 1, c]);
      }
      return featureMajor[l];
    };
    const rowMajorOf = (l: number): tf.Tensor2D => {
      const s = stages[l]!;
      if (!rowMajor[l]) {
        const rows = s.inRows.subarray(0, c * s.inDim);
        transposeInto(peek(featureMajor[l]!), 0, s.inDim, c, rows, s.inDim);
        rowMajor[l] = tf.tensor2d(rows, [c, s.inDim]);
      }
      return rowMajor[l];
    };
    // Forward.
    for (let l = 0; l < L; l++) {
      const s = stages[l]!;
      const activation = s.relu ? 'relu' : 'linear';
      if (transposed[l]) {
        // [Wᵀ | b] with a last row [0 … 0 1], so the output keeps a row of ones (act(1) = 1).
        const cols = s.inDim + 1;
        const v = s.weightsT.subarray(0, (s.outDim + 1) * cols);
        transposeInto(peek(s.kernel.read()), 0, s.inDim, s.outDim, v, cols);
        const b = s.bias ? peek(s.bias.read()) : null;
        for (let j = 0; j < s.outDim; j++) v[j * cols + s.inDim] = b ? b[j]! : 0;
        v.fill(0, s.outDim * cols, s.outDim * cols + s.inDim);
        v[s.outDim * cols + s.inDim] = 1;
        featureMajor[l + 1] = tf.fused.matMul({
          a: tf.tensor2d(v, [s.outDim + 1, cols]),
          b: featureMajorOf(l),
          activation,
        }) as tf.Tensor2D;
        rowMajor[l + 1] = null;
      } else {
        rowMajor[l + 1] = tf.fused.matMul({
          a: rowMajorOf(l),
          b: s.kernel.read(),
          bias: s.bias?.read(),
          activation,
        }) as tf.Tensor2D;
        featureMajor[l + 1] = null;
      }
    }
    // Loss gradient, transposed (logitsᵀ-shaped) so the general masking step can finish it.
    const last = stages[L - 1]!;
    const classes = last.outDim;
    const logits = peek(rowMajor[L]!);
    stats = softmaxCrossEntropy(logits, labels, start, c, classes, last.dZ);
    transposeInto(last.dZ, 0, c, classes, last.dZT, c);
    // A relu on the logits layer (unusual, but valid) masks the loss gradient too.
    if (last.relu) maskedGradient(last.dZT, logits, false, c, classes, last.dZ, last.dZT);
    // Backward.
    for (let l = L - 1; l >= 0; l--) {
      const s = stages[l]!;
      const grad = tf.matMul(featureMajorOf(l), tf.tensor2d(s.dZ.subarray(0, s.outDim * c), [c, s.outDim])); // [inDim + 1, outDim]
      // Its last row is the bias gradient; a layer without bias drops it.
      accumulate(acc, peek(grad).subarray(0, (s.inDim + (s.bias ? 1 : 0)) * s.outDim), s.offset, first);
      if (l > 0) {
        const below = stages[l - 1]!;
        const dHT = tf.matMul(s.kernel.read(), tf.tensor2d(s.dZT.subarray(0, s.outDim * c), [s.outDim, c])); // [inDim, c]
        const h = !below.relu ? null : transposed[l - 1] ? peek(featureMajor[l]!) : peek(rowMajor[l]!);
        maskedGradient(peek(dHT), h, transposed[l - 1]!, c, s.inDim, below.dZ, l > 1 ? below.dZT : null);
      }
    }
  });
  return stats;
}

// ---------------------------------------------------------------------------------------------

/** Σ v², in float64 with four interleaved partial sums (one long dependency chain is ~3x slower). */
function sumOfSquares(v: Float32Array): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n4 = v.length - (v.length % 4);
  for (let i = 0; i < n4; i += 4) {
    s0 += v[i]! * v[i]!;
    s1 += v[i + 1]! * v[i + 1]!;
    s2 += v[i + 2]! * v[i + 2]!;
    s3 += v[i + 3]! * v[i + 3]!;
  }
  for (let i = n4; i < v.length; i++) s0 += v[i]! * v[i]!;
  return s0 + s1 + (s2 + s3);
}

/**
 * The chunks of a micro-batch, in order, summed as they come: float32 addition in chunk order,
 * so any consumer of this generator gets the same bits.
 */
function* accumulateChunks(
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
  maxChunk: number,
  out?: Float32Array,
): Generator<tf.Tensor[] | null, MicroBatchResult, ChunkValues | undefined> {
  const n = labels.length;
  const found = tf.getBackend() === 'webgpu' ? null : densePlanOf(gm.model);
  // Samples or classes of the wrong size go the generic way, which reports the shape error.
  const fits =
    found !== null &&
    images.length === n * found.stages[0]!.inDim &&
    found.stages[found.stages.length - 1]!.outDim === gm.numClasses;
  const plan = fits ? found : null;
  // Batch statistics couple a micro-batch's samples: it is computed in one pass.
  const statsLength = plan ? 0 : batchStatsLength(batchNormOf(gm.model));
  const chunk = statsLength > 0 ? n : maxChunk;
  const numParams = plan
    ? plan.numParams
    : gm.model.trainableWeights.reduce((p, w) => p + tf.util.sizeFromShape(w.shape as number[]), 0);
  // The first chunk overwrites every value, so a reused `out` needs no clearing.
  const gradSum = out && out.length === numParams ? out : new Float32Array(numParams);
  let lossSum = 0;
  let correct = 0;
  let batchStats: Float32Array | undefined;
  for (let start = 0; start < n; start += chunk) {
    if (start > 0) yield null;
    const end = Math.min(n, start + chunk);
    if (plan) {
      const part = computeChunkDense(plan, images, labels, start, end, gradSum, start === 0);
      lossSum += part.lossSum;
      correct += part.correct;
      continue;
    }
    // The driver reads the tensors it is given and sends their values back.
    const tensors = chunkTensorsGeneric(gm, images, labels, start, end);
    try {
      const packed = (yield tensors)![0] as Float32Array;
      accumulate(gradSum, packed.subarray(0, numParams), 0, start === 0);
      lossSum += packed[numParams]!;
      correct += packed[numParams + 1]!;
      if (statsLength > 0) batchStats = packed.slice(numParams + 2, numParams + 2 + statsLength);
    } finally {
      tf.dispose(tensors);
    }
  }
  const sqNorm = sumOfSquares(gradSum) / (n * n);
  return { gradSum, samples: n, lossSum, correct, sqNorm, ...(batchStats ? { batchStats } : {}) };
}

/**
 * Computes the gradient sum, loss sum and correct count of `labels.length` samples whose pixels
 * are `images` (row-major [n, ...sampleShape]), in chunks of at most `maxChunk` (a model with batch
 * norm: in one pass, returning its batch statistics). Leaves no tensors behind.
 * `out`, when it has the model's parameter count, receives the gradient sum (and is returned as
 * `gradSum`) instead of a new array: a worker reuses one, sparing a model-sized allocation and
 * its page faults per micro-batch.
 */
export function computeMicroBatch(
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
  maxChunk: number,
  out?: Float32Array,
): MicroBatchResult {
  const chunks = accumulateChunks(gm, images, labels, maxChunk, out);
  let values: ChunkValues | undefined;
  for (;;) {
    const next = chunks.next(values);
    if (next.done) return next.value;
    try {
      values = next.value ? next.value.map(peek) : undefined;
    } catch (error) {
      // Closing the generator runs its finally, which disposes the chunk's tensors.
      chunks.return(undefined as never);
      throw error;
    }
  }
}

/**
 * The same computation and the same bits as `computeMicroBatch`, but it yields to the event loop
 * between chunks, so a worker answers heartbeats during a long micro-batch.
 */
export async function computeMicroBatchYielding(
  gm: GradientModel,
  images: Float32Array,
  labels: Int32Array,
  maxChunk: number,
  out?: Float32Array,
): Promise<MicroBatchResult> {
  const chunks = accumulateChunks(gm, images, labels, maxChunk, out);
  // WebGPU reads only asynchronously; elsewhere an immediate read is cheaper (wasm: no copy).
  const readAsync = tf.getBackend() === 'webgpu';
  let values: ChunkValues | undefined;
  for (;;) {
    const next = chunks.next(values);
    if (next.done) return next.value;
    if (!next.value) await new Promise((resolve) => setImmediate(resolve));
    const tensors = next.value;
    try {
      values = !tensors ? undefined : readAsync ? await Promise.all(tensors.map((t) => t.data())) : tensors.map(peek);
    } catch (error) {
      chunks.return(undefined as never);
      throw error;
    }
  }
}
