// Saving the trained model in the standard TensorFlow.js layers format (model.json +
// weights.bin), loadable with plain tf.loadLayersModel and self-contained: it takes the
// dataset's natural input (pixel / 255 for image files) and standardizes it itself, and
// model.json's userDefinedMetadata says what it takes, what it gives and how it was trained.
//
// The standardization is an explicit first layer. For one-channel images it is tfjs-layers'
// Rescaling (x * scale + offset, with scale = 1 / std and offset = -mean / std: (x - mean) / std
// up to float32 rounding). It has no weights, only two numbers in model.json, and every
// tfjs-layers since 4.x deserializes it (a Lambda layer would not serialize at all). Rescaling
// takes scalars only, so colour images, standardized per channel, get a DepthwiseConv2D with a
// 1×1 kernel instead: per channel c the same x * (1 / std[c]) + (-mean[c] / std[c]), its kernel
// and bias fixed (not trainable) and so stored last in weights.bin, after the trained weights. A
// standard layer every tfjs-layers (and Keras) loads. Folding the standardization into the first layer's
// weights instead would be exact algebra for a dense layer but not for a convolution with zero
// padding, whose border would then stand for raw 0 rather than standardized 0; and weights.bin
// would no longer hold the trained weights, which are compared bit for bit with other runs.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { findPackageRoot } from '../shared/data/index.js';
import type { ChannelStats } from '../shared/data/standardize.js';
import type { PreparedRun } from './prepare-run.js';
import type { RunReport } from './report.js';
import type { CoordinatorOptions, RunConfig } from './run-config.js';

const WEIGHTS_FILE = 'weights.bin';

/** The name of the saved model's standardizing first layer. */
export const STANDARDIZE_LAYER = 'standardize';

/** What a saved model carries besides the trained layers. */
export interface SavedModelExtras {
  /** Built in as the first layer (per channel, the last axis): the saved model takes raw values, not standardized ones. */
  standardization: ChannelStats;
  /** model.json's userDefinedMetadata. */
  metadata: Record<string, object>;
}

/**
 * Writes `model` to `dir` (created if needed) as model.json + weights.bin, behind a layer that
 * standardizes its input, with `metadata` in model.json. weights.bin holds `model`'s weights
 * unchanged (then, for several channels, the standardizing layer's kernel and bias). Returns the
 * model.json path.
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
 * `model`'s layers (shared, not copied) behind a first layer that computes (x - mean) / std per
 * channel: Rescaling for one channel (no tensor is allocated), else a fixed 1×1 DepthwiseConv2D;
 * wired as `model` wires them (a chain, or a graph with branches like a ResNet's).
 * The caller disposes the result before `model`.
 */
function withStandardization(model: tfl.LayersModel, stats: ChannelStats): tfl.LayersModel {
  const shape = model.inputs[0]!.shape.slice(1) as number[];
  const input = tfl.input({ shape, name: 'input' });
  const standardize = standardizeLayer(shape, stats);
  const x = standardize.apply(input) as tfl.SymbolicTensor;
  if (stats.mean.length > 1) {
    const { mean, std } = stats;
    tf.tidy(() =>
      standardize.setWeights([
        tf.tensor4d(
          std.map((s) => 1 / s),
          [1, 1, std.length, 1],
        ),
        tf.tensor1d(mean.map((m, c) => -m / std[c]!)),
      ]),
    );
  }
  const output = applyGraph(model, x);
  return tfl.model({ inputs: input, outputs: output, name: model.name });
}

/**
 * Applies `model`'s layers to `x` as the model wires them: a Sequential's in turn, a graph's node
 * by node, deepest (nearest the input) first.
 */
function applyGraph(model: tfl.LayersModel, x: tfl.SymbolicTensor): tfl.SymbolicTensor {
  if (model instanceof tfl.Sequential)
    return model.layers.reduce((t, layer) => layer.apply(t) as tfl.SymbolicTensor, x);
  const tensors = new Map<number, tfl.SymbolicTensor>([[model.inputs[0]!.id, x]]);
  const depths = Object.keys(model.nodesByDepth)
    .map(Number)
    .sort((a, b) => b - a);
  for (const depth of depths)
    for (const node of model.nodesByDepth[depth]!) {
      if (node.outboundLayer.getClassName() === 'InputLayer') continue;
      const inputs = node.inputTensors.map((t) => tensors.get(t.id)!);
      const outputs = node.outboundLayer.apply(inputs.length === 1 ? inputs[0]! : inputs, node.callArgs);
      [outputs].flat().forEach((t, i) => tensors.set(node.outputTensors[i]!.id, t as tfl.SymbolicTensor));
    }
  return tensors.get(model.outputs[0]!.id)!;
}

/** The standardizing layer for inputs of `shape` (one sample): Rescaling, or DepthwiseConv2D 1×1 per channel. */
function standardizeLayer(shape: readonly number[], { mean, std }: ChannelStats): tfl.layers.Layer {
  const channels = mean.length;
  if (channels === 1)
    return tfl.layers.rescaling({ scale: 1 / std[0]!, offset: -mean[0]! / std[0]!, name: STANDARDIZE_LAYER });
  if (shape.length !== 3 || shape[2] !== channels)
    throw new Error(
      `a standardization of ${channels} channels needs images [height, width, ${channels}], got [${shape.join(', ')}]`,
    );
  return tfl.layers.depthwiseConv2d({
    kernelSize: 1,
    depthMultiplier: 1,
    useBias: true,
    trainable: false,
    name: STANDARDIZE_LAYER,
  });
}

/** What model.json says of the first layer. */
function describeStandardizeLayer(channels: number): string {
  return channels === 1
    ? `the first layer, '${STANDARDIZE_LAYER}' (Rescaling), computes (x - mean) / std: do not standardize the input`
    : `the first layer, '${STANDARDIZE_LAYER}' (DepthwiseConv2D 1x1, not trainable: kernel 1 / std, bias -mean / std per channel), ` +
        'computes (x - mean) / std per channel (the last axis): do not standardize the input';
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
      builtIn: describeStandardizeLayer(standardization.mean.length),
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
  return {
    standardization: { mean: standardization.mean, std: standardization.std },
    metadata: JSON.parse(JSON.stringify(metadata)) as Record<string, object>,
  };
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
