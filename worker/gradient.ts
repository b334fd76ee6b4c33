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

/**
 * Computes the gradient sum, loss sum and correct count of `labels.length` samples whose pixels
 * are `images` (row-major [n, ...sampleShape]). Leaves no tensors behind.
 */
export function computeMicroBatch(gm: GradientModel, images: Float32Array, labels: Int32Array, maxChunk: number): MicroBatchResult {
  const n = labels.length;
  const sampleSize = images.length / n;
  const vars = gm.model.trainableWeights.map((w) => w.read() as tf.Variable);
  let lossSum = 0;
  let correct = 0;
  const flat = tf.tidy(() => {
    let total: tf.Tensor1D | null = null;
    for (let start = 0; start < n; start += maxChunk) {
      const end = Math.min(n, start + maxChunk);
      const x = tf.tensor(images.subarray(start * sampleSize, end * sampleSize), [end - start, ...gm.sampleShape]); // [c, 28, 28, 1]
      const labelTensor = tf.tensor1d(labels.subarray(start, end), 'int32'); // [c]
      const y = tf.oneHot(labelTensor, gm.numClasses); // [c, classes]
      let logits: tf.Tensor | null = null;
      const { value, grads } = tf.variableGrads(() => {
        // Kept so accuracy reuses this forward pass; disposed just below.
        logits = tf.keep(gm.model.apply(x, { training: true }) as tf.Tensor); // [c, classes]
        return tf.losses.softmaxCrossEntropy(y, logits, undefined, 0, tf.Reduction.SUM) as tf.Scalar;
      }, vars);
      lossSum += value.dataSync()[0]!;
      correct += tf.sum(tf.cast(tf.equal(tf.argMax(logits!, 1), labelTensor), 'int32')).dataSync()[0]!;
      (logits as tf.Tensor | null)?.dispose();
      const chunkFlat = tf.concat(vars.map((v) => tf.reshape(grads[v.name]!, [-1]))) as tf.Tensor1D; // [P]
      total = total ? (tf.add(total, chunkFlat) as tf.Tensor1D) : chunkFlat;
    }
    return total!;
  });
  const gradSum = Float32Array.from(flat.dataSync() as Float32Array);
  flat.dispose();
  let sq = 0;
  for (let i = 0; i < gradSum.length; i++) sq += gradSum[i]! * gradSum[i]!;
  return { gradSum, samples: n, lossSum, correct, sqNorm: sq / (n * n) };
}
