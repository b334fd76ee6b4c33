// What a model from a file must be for batchlab to train it: every check refuses the run at start
// (BAD_OPTION, exit 2) naming the layer and what to change. Workers rebuild the model from its
// JSON topology and receive only its trainable weights, N workers must compute what one process
// computes, and the loss is the cross-entropy of logits: so no unknown classes, no layers that
// draw random numbers at training time, no frozen weights, no stateful RNNs, no regularizers or
// constraints, one input of the dataset's sample shape and one output of logits, one per class.

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { Dataset } from '../shared/data/dataset.js';
import { BatchlabError } from '../shared/errors.js';

/** A layer's entry in a (pythonic, snake_case) tfjs-layers or Keras topology. */
export interface LayerJson {
  class_name: string;
  name?: string;
  config: Record<string, unknown>;
  inbound_nodes?: unknown[];
}

/** Layer classes that draw random numbers at training time (dropout, noise, random augmentation). */
const RANDOM_LAYERS = new Set([
  'Dropout',
  'SpatialDropout1D',
  'SpatialDropout2D',
  'SpatialDropout3D',
  'GaussianNoise',
  'GaussianDropout',
  'AlphaDropout',
  'RandomFlip',
  'RandomRotation',
  'RandomZoom',
  'RandomTranslation',
  'RandomCrop',
  'RandomContrast',
  'RandomBrightness',
  'RandomWidth',
  'RandomHeight',
]);

/** The refusal of `--model path`. */
export function modelError(path: string, detail: string): BatchlabError {
  return new BatchlabError('BAD_OPTION', `--model ${path}: ${detail}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `layer 'name' (Class)`. */
function describeLayer(layer: LayerJson): string {
  const name = layer.name ?? layer.config.name;
  return `layer '${typeof name === 'string' ? name : '?'}' (${layer.class_name})`;
}

/**
 * Every layer of a topology's model config, depth first: nested models' layers, the layer a
 * wrapper (Bidirectional, TimeDistributed) holds and an RNN's cells included.
 */
export function layersOf(modelConfig: unknown): LayerJson[] {
  const found: LayerJson[] = [];
  const visit = (node: unknown): void => {
    if (!isRecord(node) || typeof node.class_name !== 'string') return;
    const config = isRecord(node.config) ? node.config : {};
    found.push({ ...node, class_name: node.class_name, config });
    // An old Keras Sequential's config is the list of its layers.
    const inner = Array.isArray(node.config) ? node.config : config.layers;
    if (Array.isArray(inner)) inner.forEach(visit);
    visit(config.layer);
    visit(config.cell);
    if (Array.isArray(config.cells)) config.cells.forEach(visit);
  };
  visit(modelConfig);
  return found.slice(1);
}

/** Checks of the topology JSON, before tfjs-layers builds it (a class it does not know would fail there). */
export function checkTopology(path: string, modelConfig: Record<string, unknown>): void {
  const known = tf.serialization.SerializationMap.getMap().classNameMap;
  for (const layer of layersOf(modelConfig)) {
    const what = describeLayer(layer);
    if (RANDOM_LAYERS.has(layer.class_name))
      throw modelError(
        path,
        `${what} draws random numbers at training time, a different draw in each worker: N workers would not ` +
          'compute what one process computes. Remove it',
      );
    if (!(layer.class_name in known))
      throw modelError(
        path,
        `${what}: TensorFlow.js layers has no class ${layer.class_name} (a custom layer?); batchlab rebuilds ` +
          'models from their JSON alone, so only the built-in layer classes can be trained',
      );
    if (layer.config.stateful === true)
      throw modelError(
        path,
        `${what} is stateful: its state would carry over from one micro-batch to the next, which differ between ` +
          'workers. Set stateful to false',
      );
    for (const key of ['dropout', 'recurrent_dropout'])
      if (typeof layer.config[key] === 'number' && layer.config[key] > 0)
        throw modelError(
          path,
          `${what} has ${key} ${layer.config[key]}, random at training time, a different draw in each worker. Set it to 0`,
        );
    for (const [key, value] of Object.entries(layer.config))
      if ((key.endsWith('_regularizer') || key.endsWith('_constraint')) && value !== null && value !== undefined)
        throw modelError(
          path,
          `${what} has a ${key}, which batchlab does not apply (its loss is the cross-entropy alone and its ` +
            'optimizers apply no constraints). Remove it (--weight-decay decays the weights)',
        );
  }
}

/** The layer that computes `model`'s (single) output, looking inside nested models. */
function outputLayer(model: tfl.LayersModel): tfl.layers.Layer {
  let layer = model.outputs[0]!.sourceLayer;
  while (layer instanceof tfl.LayersModel) layer = layer.outputs[0]!.sourceLayer;
  return layer;
}

/** Every layer of `model`, nested models' layers included (after the nested model itself). */
function allLayers(model: tfl.LayersModel): tfl.layers.Layer[] {
  return model.layers.flatMap((layer) => (layer instanceof tfl.LayersModel ? [layer, ...allLayers(layer)] : [layer]));
}

const shapeText = (shape: readonly (number | null)[]): string => `[${shape.map((d) => d ?? 'any').join(', ')}]`;

/** Checks of the built model against the design and against the dataset it is to train on. */
export function checkModel(path: string, model: tfl.LayersModel, dataset: Dataset): void {
  if (model.inputs.length !== 1 || model.outputs.length !== 1)
    throw modelError(
      path,
      `the model has ${model.inputs.length} inputs and ${model.outputs.length} outputs; batchlab feeds one ` +
        'input (the images) and trains one output (the class logits)',
    );
  const input = model.inputs[0]!.shape.slice(1);
  const fits =
    input.length === dataset.sampleShape.length && input.every((d, i) => d === null || d === dataset.sampleShape[i]);
  if (!fits)
    throw modelError(
      path,
      `the model's input is ${shapeText(input)} but ${dataset.name}'s samples are ${shapeText(dataset.sampleShape)}: ` +
        `make the model's input shape ${shapeText(dataset.sampleShape)}`,
    );
  const output = model.outputs[0]!.shape.slice(1);
  if (output.length !== 1 || output[0] !== dataset.numClasses)
    throw modelError(
      path,
      `the model's output is ${shapeText(output)} but ${dataset.name} has ${dataset.numClasses} classes: ` +
        `the last layer must give [${dataset.numClasses}] (one logit per class)`,
    );
  const last = outputLayer(model);
  const activation = (last.getConfig() as { activation?: unknown }).activation;
  if (last.getClassName() === 'Softmax' || activation === 'softmax') {
    const fix =
      last.getClassName() === 'Dense' || last.getClassName().startsWith('Conv')
        ? 'set its activation to linear (Keras: activation=None)'
        : 'remove it';
    throw modelError(
      path,
      `the output layer '${last.name}' (${last.getClassName()}) applies a softmax, but batchlab's loss takes ` +
        `logits and applies the softmax itself: ${fix}. Apply the softmax when you use the trained model`,
    );
  }
  for (const layer of allLayers(model)) {
    if (!layer.trainable && layer.weights.length > 0)
      throw modelError(
        path,
        `layer '${layer.name}' (${layer.getClassName()}) is frozen (trainable: false): workers receive only the ` +
          'trainable weights, so its weights would not reach them. Set trainable to true',
      );
    if (layer instanceof tfl.LayersModel) continue;
    const isNorm = layer.getClassName() === 'BatchNormalization';
    const { center, scale } = layer.getConfig();
    if (isNorm && (center === false || scale === false))
      throw modelError(
        path,
        `layer '${layer.name}' (BatchNormalization) has ${center === false ? 'center' : 'scale'}: false: ` +
          'tfjs-layers cannot train such a layer. Set center and scale to true',
      );
    const fixed = layer.nonTrainableWeights.find((w) => !(isNorm && /\/moving_(mean|variance)$/.test(w.originalName)));
    if (fixed)
      throw modelError(
        path,
        `layer '${layer.name}' (${layer.getClassName()}) has a weight that does not train (${fixed.originalName}): ` +
          'workers receive only the trainable weights',
      );
  }
}
