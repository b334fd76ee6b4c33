// Saving the trained model in the standard TensorFlow.js layers format (model.json +
// weights.bin), loadable with plain tf.loadLayersModel and self-contained: it takes the
// dataset's natural input (pixel / 255 for image files) and standardizes it itself, and
// model.json's userDefinedMetadata says what it takes, what it gives and how it was trained.
//
// The standardization is an explicit first layer, tfjs-layers' Rescaling (x * scale + offset,
// with scale = 1 / std and offset = -mean / std: (x - mean) / std up to float32 rounding). It has
// no weights, only two numbers in model.json, and every tfjs-layers since 4.x deserializes it (a
// Lambda layer would not serialize at all). Folding the standardization into the first layer's
// weights instead would be exact algebra for a dense layer but not for a convolution with zero
// padding, whose border would then stand for raw 0 rather than standardized 0; and weights.bin
// would no longer hold the trained weights, which are compared bit for bit with other runs.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { findPackageRoot } from '../shared/data/index.js';
import type { PixelStats } from '../shared/data/standardize.js';
import type { PreparedRun } from './prepare-run.js';
import type { RunReport } from './report.js';
import type { CoordinatorOptions, RunConfig } from './run-config.js';

const WEIGHTS_FILE = 'weights.bin';

/** The name of the saved model's standardizing first layer. */
const STANDARDIZE_LAYER = 'standardize';

/** What a saved model carries besides the trained layers. */
export interface SavedModelExtras {
  /** Built in as the first layer: the saved model takes raw values, not standardized ones. */
  standardization: PixelStats;
  /** model.json's userDefinedMetadata. */
  metadata: Record<string, object>;
}

/**
 * Writes `model` to `dir` (created if needed) as model.json + weights.bin, behind a layer that
 * standardizes its input, with `metadata` in model.json. weights.bin holds `model`'s weights
 * unchanged. Returns the model.json path.
 */
export async function saveLayersModel(model: tfl.LayersModel, dir: string, extras: SavedModelExtras): Promise<string> {
  await mkdir(dir, { recursive: true });
  const modelPath = join(dir, 'model.json');
  const standalone = withStandardization(model, extras.standardization);
  try {
    standalone.setUserDefinedMetadata(extras.metadata);
    await standalone.save(
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
          userDefinedMetadata: artifacts.userDefinedMetadata,
        };
        // Temp file + rename: a reader never sees half a model.
        await writeFile(join(dir, `${WEIGHTS_FILE}.tmp`), Buffer.from(weightData));
        await rename(join(dir, `${WEIGHTS_FILE}.tmp`), join(dir, WEIGHTS_FILE));
        await writeFile(`${modelPath}.tmp`, JSON.stringify(modelJson));
        await rename(`${modelPath}.tmp`, modelPath);
        return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
      }),
    );
  } finally {
    // Only the count of models using the shared layers drops: `model` keeps its weights.
    standalone.dispose();
  }
  return modelPath;
}

/**
 * `model`'s layers (shared, not copied: no tensor is allocated) behind a Rescaling layer that
 * computes (x - mean) / std. The caller disposes the result before `model`. The layers are applied
 * again in model order, each to the new tensors standing for its first inputs, so a graph with
 * branches (a ResNet's shortcuts) keeps its shape.
 */
function withStandardization(model: tfl.LayersModel, { mean, std }: PixelStats): tfl.LayersModel {
  const input = tfl.input({ shape: model.inputs[0]!.shape.slice(1), name: 'input' });
  const standardize = tfl.layers.rescaling({ scale: 1 / std, offset: -mean / std, name: STANDARDIZE_LAYER });
  const standIn = new Map<tfl.SymbolicTensor, tfl.SymbolicTensor>([
    [model.inputs[0]!, standardize.apply(input) as tfl.SymbolicTensor],
  ]);
  for (const layer of model.layers) {
    if (layer.getClassName() === 'InputLayer') continue;
    const node = layer.inboundNodes[0]!;
    const inputs = node.inputTensors.map((t) => standIn.get(t)!);
    const output = layer.apply(inputs.length === 1 ? inputs[0]! : inputs) as tfl.SymbolicTensor | tfl.SymbolicTensor[];
    const outputs = Array.isArray(output) ? output : [output];
    node.outputTensors.forEach((t, i) => standIn.set(t, outputs[i]!));
  }
  return tfl.model({ inputs: input, outputs: standIn.get(model.outputs[0]!)!, name: model.name });
}

/**
 * What the run's saved model carries: the dataset's standardization, and as metadata what the
 * model takes and gives and the run that trained it.
 */
export async function savedModelExtras(
  options: CoordinatorOptions,
  run: PreparedRun,
  report: RunReport,
): Promise<SavedModelExtras> {
  const { name, source, fingerprint, numClasses, classNames, sampleShape, standardization } = run.dataset;
  const metadata = {
    batchlab: { version: await batchlabVersion(), runId: run.runId },
    dataset: { name, source, fingerprint, numClasses, classNames },
    input: { shape: [null, ...sampleShape], dtype: 'float32', values: standardization.raw },
    standardization: {
      mean: standardization.mean,
      std: standardization.std,
      builtIn: `the first layer, '${STANDARDIZE_LAYER}' (Rescaling), computes (x - mean) / std: do not standardize the input`,
    },
    output: {
      shape: [null, numClasses],
      values: 'logits (no softmax): the argmax is the class (dataset.classNames), softmax gives probabilities',
    },
    evaluation: {
      split: 'test',
      accuracy: report.evalAccuracy,
      loss: report.evalLoss,
      steps: report.steps,
      samples: report.samples,
    },
    runConfig: runConfigOf(options),
    // The options as a config file holds them (null when the run was started in process).
    config: options.config ?? null,
  };
  // As JSON holds it: settings left undefined are dropped (tfjs accepts plain JSON values only).
  return { standardization, metadata: JSON.parse(JSON.stringify(metadata)) as Record<string, object> };
}

/** The run's training settings: what CoordinatorOptions adds to RunConfig stays out (the token is a secret). */
function runConfigOf(options: CoordinatorOptions): RunConfig {
  const {
    host: _h,
    port: _p,
    token: _t,
    tlsCert: _c,
    tlsKey: _k,
    command: _m,
    timingOnly: _o,
    config: _f,
    ...config
  } = options;
  // A field added to CoordinatorOptions beyond RunConfig fails to compile here until it is left out above.
  const _onlyRunConfig: Record<Exclude<keyof typeof config, keyof RunConfig>, never> = {};
  return config;
}

/** The version in batchlab's package.json. */
async function batchlabVersion(): Promise<string> {
  const root = findPackageRoot();
  if (root === undefined) return 'unknown';
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}
