// Saving the trained model in the standard TensorFlow.js layers format (model.json +
// weights.bin), loadable with tf.loadLayersModel; and loading it back without tfjs-node.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

const WEIGHTS_FILE = 'weights.bin';

/** Writes `model` to `dir` (created if needed) as model.json + weights.bin. Returns the model.json path. */
export async function saveLayersModel(model: tfl.LayersModel, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const modelPath = join(dir, 'model.json');
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = artifacts.weightData
        ? tf.io.CompositeArrayBuffer.join(artifacts.weightData)
        : new ArrayBuffer(0);
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: 'batchlab',
        weightsManifest: [{ paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs ?? [] }],
      };
      // Temp file + rename: a reader never sees half a model.
      await writeFile(join(dir, `${WEIGHTS_FILE}.tmp`), Buffer.from(weightData));
      await rename(join(dir, `${WEIGHTS_FILE}.tmp`), join(dir, WEIGHTS_FILE));
      await writeFile(`${modelPath}.tmp`, JSON.stringify(modelJson));
      await rename(`${modelPath}.tmp`, modelPath);
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  return modelPath;
}

/** Loads a model written by `saveLayersModel` (or any single-shard layers model) from `dir`. */
export async function loadLayersModelFromDir(dir: string): Promise<tfl.LayersModel> {
  const json = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as {
    modelTopology: object;
    weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  };
  const manifest = json.weightsManifest;
  const buffers = await Promise.all(manifest.flatMap((group) => group.paths.map((p) => readFile(join(dir, p)))));
  const joined = Buffer.concat(buffers);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  return tfl.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: manifest.flatMap((g) => g.weights),
      weightData,
    }),
  );
}
