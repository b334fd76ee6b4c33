// One micro-batch's forward and backward pass: the gradient *sum* of the summed cross-entropy
// loss, computed in chunks of at most `maxChunk` samples (accumulation) inside tf.tidy.

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';

/** What a worker reports for one micro-batch (before framing). */
export interface MicroBatchResult {
  /** Sum over samples of d(loss_i)/dw, flat in the parameter layout. */
  gradSum: Float32Array;
  samples: number;
  lossSum: number;
  correct: number;
  /** |gradSum / samples|^2: squared norm of the micro-batch's mean-loss gradient. */
  sqNorm: number;
}

/** Model plus the facts needed to turn raw arrays into tensors. */
export interface GradientModel {
  model: tfl.LayersModel;
  sampleShape: number[];
  numClasses: number;
}

/** One chunk's share: its gradient sum (flat), loss sum and correct count. */
interface ChunkResult {
  gradSum: Float32Array;
  lossSum: number;
  correct: number;
}

/** Forward + backward of samples [start, end) inside tf.tidy; nothing stays behind. */
function computeChunk(gm: GradientModel, images: Float32Array, labels: Int32Array, start: number, end: number): ChunkResult {
  const sampleSize = images.length / labels.length;
  const vars = gm.model.trainableWeights.map((w) => w.read() as tf.Variable);
  let lossSum = 0;
  let correct = 0;
  const flat = tf.tidy(() => {
    const x = tf.tensor(images.subarray(start * sampleSize, end * sampleSize), [end - start, ...gm.sampleShape]); // [c, 28, 28, 1]
    const labelTensor = tf.tensor1d(labels.subarray(start, end), 'int32'); // [c]
    const y = tf.oneHot(labelTensor, gm.numClasses); // [c, classes]
    let logits: tf.Tensor | null = null;
    const { value, grads } = tf.variableGrads(() => {
      // Kept so accuracy reuses this forward pass; disposed just below.
      logits = tf.keep(gm.model.apply(x, { training: true }) as tf.Tensor); // [c, classes]
      return tf.losses.softmaxCrossEntropy(y, logits, undefined, 0, tf.Reduction.SUM) as tf.Scalar;
    }, vars);
    lossSum = value.dataSync()[0]!;
    correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits!, 1), labelTensor), 'int32')).dataSync()[0]!;
    (logits as tf.Tensor | null)?.dispose();
    return tf.concat(vars.map((v) => tf.reshape(grads[v.name]!, [-1]))) as tf.Tensor1D; // [P]
  });
  const gradSum = Float32Array.from(flat.dataSync() as Float32Array);
  flat.dispose();
  return { gradSum, lossSum, correct };
}

/**
 * The chunks of a micro-batch, in order, summed as they come: float32 addition in chunk order,
 * so any consumer of this generator gets the same bits.
 */
function* accumulateChunks(gm: GradientModel, images: Float32Array, labels: Int32Array, maxChunk: number): Generator<void, MicroBatchResult> {
  const n = labels.length;
  let total: ChunkResult | null = null;
  for (let start = 0; start < n; start += maxChunk) {
    if (start > 0) yield;
    const part = computeChunk(gm, images, labels, start, Math.min(n, start + maxChunk));
    if (!total) {
      total = part;
      continue;
    }
    const acc = total.gradSum;
    for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + part.gradSum[i]!;
    total.lossSum += part.lossSum;
    total.correct += part.correct;
  }
  const { gradSum, lossSum, correct } = total!;
  let sq = 0;
  for (let i = 0; i < gradSum.length; i++) sq += gradSum[i]! * gradSum[i]!;
  return { gradSum, samples: n, lossSum, correct, sqNorm: sq / (n * n) };
}

/**
 * Computes the gradient sum, loss sum and correct count of `labels.length` samples whose pixels
 * are `images` (row-major [n, ...sampleShape]), in chunks of at most `maxChunk`. Leaves no tensors behind.
 */
export function computeMicroBatch(gm: GradientModel, images: Float32Array, labels: Int32Array, maxChunk: number): MicroBatchResult {
  const chunks = accumulateChunks(gm, images, labels, maxChunk);
  for (;;) {
    const next = chunks.next();
    if (next.done) return next.value;
  }
}

/**
 * The same computation and the same bits as `computeMicroBatch`, but it yields to the event loop
 * between chunks, so a worker answers heartbeats during a long micro-batch.
 */
export async function computeMicroBatchYielding(gm: GradientModel, images: Float32Array, labels: Int32Array, maxChunk: number): Promise<MicroBatchResult> {
  const chunks = accumulateChunks(gm, images, labels, maxChunk);
  for (;;) {
    const next = chunks.next();
    if (next.done) return next.value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
