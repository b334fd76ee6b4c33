// The gradient of a batch by plain tf.variableGrads in one piece, on the current backend: the
// reference worker/gradient.ts is tested against, written independently of it.

import * as tf from '@tensorflow/tfjs-core';
import type { GradientModel } from '../../worker/gradient.js';

/**
 * The gradient sum, loss sum and correct count by plain tf.variableGrads over model.apply, in one
 * piece: the generic computation, written independently of worker/gradient.ts, that any faster
 * path must reproduce.
 */
export function referenceGradient(gm: GradientModel, images: Float32Array, labels: Int32Array) {
  const vars = gm.model.trainableWeights.map((w) => w.read() as tf.Variable);
  return tf.tidy(() => {
    const x = tf.tensor(images, [labels.length, ...gm.sampleShape]);
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), gm.numClasses);
    let logits!: tf.Tensor;
    const { value, grads } = tf.variableGrads(() => {
      logits = tf.keep(gm.model.apply(x, { training: true }) as tf.Tensor);
      return tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(y, logits, undefined, 0, tf.Reduction.SUM);
    }, vars);
    const gradSum = tf.concat(vars.map((v) => tf.reshape(grads[v.name]!, [-1]))).dataSync() as Float32Array;
    const predicted = tf.argMax(logits, 1).dataSync();
    logits.dispose();
    return {
      gradSum: Float32Array.from(gradSum),
      lossSum: value.dataSync()[0]!,
      correct: labels.filter((l, i) => predicted[i] === l).length,
    };
  });
}
