// Loading a model that --save-model wrote the way a user of plain TensorFlow.js would: model.json
// and its weight files read here and handed to tfjs-layers' loadLayersModel in memory (no
// file:// handler, no batchlab code).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { expect } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

/** The layers model in `modelDir` (model.json + its weight files), with model.json's metadata. */
export async function loadSavedModel(modelDir: string): Promise<tfl.LayersModel> {
  const json = JSON.parse(readFileSync(join(modelDir, 'model.json'), 'utf8'));
  const groups = json.weightsManifest as { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  const weights = Buffer.concat(groups.flatMap((g) => g.paths.map((p) => readFileSync(join(modelDir, p)))));
  return tfl.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: groups.flatMap((g) => g.weights),
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      userDefinedMetadata: json.userDefinedMetadata,
    }),
  );
}

/** An IDX file's dimensions and its bytes (images: [count, rows, cols]; labels: [count]). */
export function readIdx(path: string): { dims: number[]; data: Uint8Array } {
  const bytes = gunzipSync(readFileSync(path));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  expect(view.getUint16(0), `${path}: magic`).toBe(0);
  expect(bytes[2], `${path}: unsigned-byte data`).toBe(0x08);
  const dims = Array.from({ length: bytes[3]! }, (_, i) => view.getUint32(4 + 4 * i));
  const start = 4 + 4 * dims.length;
  return { dims, data: bytes.subarray(start, start + dims.reduce((a, b) => a * b, 1)) };
}

/** Accuracy of `model` on byte images fed as pixel / 255 in [count, 28, 28, 1]; leaves no tensors. */
export function accuracyOnRawPixels(model: tfl.LayersModel, images: Uint8Array, labels: Uint8Array): number {
  const size = 28 * 28;
  let correct = 0;
  for (let start = 0; start < labels.length; start += 500) {
    const end = Math.min(labels.length, start + 500);
    const pixels = Float32Array.from(images.subarray(start * size, end * size), (p) => p / 255);
    const predicted = tf.tidy(() =>
      tf.argMax(model.predict(tf.tensor4d(pixels, [end - start, 28, 28, 1])) as tf.Tensor, 1).dataSync(),
    );
    for (let i = 0; i < predicted.length; i++) if (predicted[i] === labels[start + i]) correct++;
  }
  return correct / labels.length;
}
