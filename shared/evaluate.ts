// Evaluation: mean cross-entropy and accuracy of a model over a whole split, in batches.

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { Split } from './data/dataset.js';

export interface Evaluation {
  loss: number;
  accuracy: number;
  samples: number;
}

/**
 * Evaluates `model` (inference mode) on every sample of `split`. Leaves no tensors behind.
 * Asynchronous because WebGPU reads GPU tensors only asynchronously.
 */
export async function evaluateModel(
  model: tfl.LayersModel,
  split: Split,
  sampleShape: number[],
  numClasses: number,
  batchSize = 1000,
): Promise<Evaluation> {
  const sampleSize = sampleShape.reduce((a, b) => a * b, 1);
  let lossSum = 0;
  let correct = 0;
  for (let start = 0; start < split.count; start += batchSize) {
    const end = Math.min(split.count, start + batchSize);
    const sums = tf.tidy(() => {
      const x = tf.tensor(split.images.subarray(start * sampleSize, end * sampleSize), [end - start, ...sampleShape]); // [b, ...sample]
      const labels = tf.tensor1d(Int32Array.from(split.labels.subarray(start, end)), 'int32'); // [b]
      const logits = model.apply(x, { training: false }) as tf.Tensor; // [b, classes]
      const lossT = tf.losses.softmaxCrossEntropy(
        tf.oneHot(labels, numClasses),
        logits,
        undefined,
        0,
        tf.Reduction.SUM,
      );
      const rightT = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32'));
      // One tensor, one read (on webgpu each read is a queue submission and a buffer map).
      return tf.stack([lossT, rightT]);
    });
    try {
      const [loss, right] = await sums.data();
      lossSum += loss!;
      correct += right!;
    } finally {
      sums.dispose();
    }
  }
  return {
    loss: split.count ? lossSum / split.count : NaN,
    accuracy: split.count ? correct / split.count : NaN,
    samples: split.count,
  };
}
