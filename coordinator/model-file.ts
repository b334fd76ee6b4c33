// Models and weights from files: `--model path/model.json` (a TensorFlow.js layers model, e.g.
// from tensorflowjs_converter or model.save, with or without weights) and `--init-from DIR` (the
// weights of a --save-model directory). Read with node:fs and decoded with tf.io.decodeWeights;
// weights are matched to the model's tensors by name and shape, and any mismatch is refused
// naming the tensor. A --save-model output's first layer, 'standardize', is left out: batchlab
// standardizes the data itself.

import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { Dataset } from '../shared/data/dataset.js';
import { BatchlabError } from '../shared/errors.js';
import { modelFromTopology } from '../shared/models/index.js';
import { checkModel, checkTopology, modelError, type LayerJson } from './model-checks.js';
import { STANDARDIZE_LAYER } from './save-model.js';

/** What a model.json holds that batchlab reads. */
interface ModelJson {
  /** The model's config (class_name + config), unwrapped from Keras's `model_config`. */
  topology: Record<string, unknown>;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[] | null;
  metadata: Record<string, unknown> | null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads and parses `path`; `refuse(detail)` makes the error naming the option. */
async function readModelJson(path: string, refuse: (detail: string) => BatchlabError): Promise<ModelJson> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw refuse(e.code ? `cannot read ${path}: ${e.code}` : `${path} is not JSON: ${e.message}`);
  }
  if (!isRecord(json) || !isRecord(json.modelTopology))
    throw refuse(`${path} is not a TensorFlow.js layers model.json (it has no modelTopology)`);
  if (json.format !== undefined && json.format !== 'layers-model')
    throw refuse(
      `${path} is a ${JSON.stringify(json.format)}, not a layers model: only layers models can be trained ` +
        '(convert with tensorflowjs_converter --output_format tfjs_layers_model)',
    );
  const topology = isRecord(json.modelTopology.model_config) ? json.modelTopology.model_config : json.modelTopology;
  const manifest = Array.isArray(json.weightsManifest) ? (json.weightsManifest as ModelJson['weightsManifest']) : null;
  return {
    topology,
    weightsManifest: manifest && manifest.some((group) => group.weights.length > 0) ? manifest : null,
    metadata: isRecord(json.userDefinedMetadata) ? json.userDefinedMetadata : null,
  };
}

/** The weight files of `json` (beside model.json), decoded: name → tensor. The caller disposes them. */
async function readWeightFiles(
  path: string,
  manifest: NonNullable<ModelJson['weightsManifest']>,
  refuse: (detail: string) => BatchlabError,
): Promise<tf.NamedTensorMap> {
  const buffers: Buffer[] = [];
  for (const group of manifest)
    for (const file of group.paths) {
      const at = join(dirname(path), file);
      buffers.push(
        await readFile(at).catch((error: NodeJS.ErrnoException) => {
          throw refuse(`cannot read its weight file ${at}: ${error.code ?? error.message}`);
        }),
      );
    }
  const data = Buffer.concat(buffers);
  const specs = manifest.flatMap((group) => group.weights);
  const expected = specs.reduce((n, s) => n + weightBytes(s), 0);
  if (data.length !== expected)
    throw refuse(`its weight files hold ${data.length} bytes but its weightsManifest describes ${expected}`);
  try {
    return tf.io.decodeWeights(data.buffer.slice(data.byteOffset, data.byteOffset + data.length), specs);
  } catch (error) {
    throw refuse(`cannot decode its weights: ${(error as Error).message}`);
  }
}

/** Bytes one manifest entry takes in the weight files. */
function weightBytes(spec: tf.io.WeightsManifestEntry): number {
  const count = spec.shape.reduce((a, b) => a * b, 1);
  if (spec.quantization)
    return count * (spec.quantization.dtype === 'float16' ? 2 : spec.quantization.dtype === 'uint16' ? 2 : 1);
  return count * (spec.dtype === 'bool' || spec.dtype === 'string' ? 1 : 4);
}

/** True when `metadata` is that of a batchlab --save-model output (it standardizes its input). */
function isBatchlabSave(metadata: Record<string, unknown> | null): boolean {
  return isRecord(metadata?.batchlab) && isRecord(metadata.standardization);
}

/** The model config without its layer 'standardize': every layer it fed is fed by what fed it. */
function withoutStandardize(topology: Record<string, unknown>): Record<string, unknown> {
  const config = topology.config as { layers?: LayerJson[]; output_layers?: unknown };
  const layers = config.layers ?? [];
  const standardize = layers.find((l) => (l.name ?? l.config.name) === STANDARDIZE_LAYER);
  if (!standardize) return topology;
  // [[["input", 0, 0, {}]]]: the one tensor it was applied to.
  const source = (standardize.inbound_nodes as unknown[][][])[0]![0]!;
  const rewire = (node: unknown): unknown =>
    Array.isArray(node) && node[0] === STANDARDIZE_LAYER && typeof node[1] === 'number'
      ? [source[0], source[1], source[2], ...(node.slice(3) as unknown[])]
      : Array.isArray(node)
        ? node.map(rewire)
        : node;
  const kept = layers
    .filter((l) => l !== standardize)
    .map((l) => ({ ...l, inbound_nodes: rewire(l.inbound_nodes) as unknown[] }));
  return { ...topology, config: { ...config, layers: kept, output_layers: rewire(config.output_layers) } };
}

/** A run's model from `--model path`, checked, with the file's weights when it has some. */
export interface ModelFromFile {
  model: tfl.LayersModel;
  /** The model holds the file's weights (else the caller initialises them). */
  weightsLoaded: boolean;
}

/** Loads, checks and (when the file has weights) fills the model of `--model path` for `dataset`. */
export async function loadModelFile(
  path: string,
  dataset: Dataset,
  log: (line: string) => void,
): Promise<ModelFromFile> {
  const refuse = (detail: string): BatchlabError => modelError(path, detail);
  const json = await readModelJson(path, refuse);
  let topology = json.topology;
  if (isBatchlabSave(json.metadata)) {
    topology = withoutStandardize(topology);
    log(
      `--model ${path}: a --save-model output; its '${STANDARDIZE_LAYER}' layer is left out (batchlab standardizes the data)`,
    );
  }
  checkTopology(path, topology);
  let model: tfl.LayersModel;
  try {
    model = await modelFromTopology(topology);
  } catch (error) {
    throw refuse(`TensorFlow.js layers cannot build it: ${(error as Error).message.split('\n')[0]}`);
  }
  try {
    checkModel(path, model, dataset);
    if (!json.weightsManifest) return { model, weightsLoaded: false };
    const named = await readWeightFiles(path, json.weightsManifest, refuse);
    try {
      assignByName(model, named, `--model ${path}`, path);
    } finally {
      tf.dispose(Object.values(named));
    }
    if (json.metadata) warnIfOtherData(`--model ${path}`, json.metadata, dataset, log);
    log(`--model ${path}: weights loaded from its weight files`);
    return { model, weightsLoaded: true };
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/**
 * Sets every weight of `model` (trainable and not) from `named`, matched by name as
 * tf.loadLayersModel matches them (a name with an extra scope, `a/b/kernel`, also matches
 * `a/kernel`). Refuses, naming the first tensor in the model's order, a tensor missing from
 * `named` or of another shape, then a tensor of `named` the model lacks (the standardize layer's
 * excepted).
 */
function assignByName(model: tfl.LayersModel, named: tf.NamedTensorMap, option: string, file: string): void {
  const shape = (s: readonly (number | null)[]): string => `[${s.join(', ')}]`;
  const names = new Set(model.weights.map((w) => w.originalName));
  const byName = new Map<string, tf.Tensor>();
  for (const [name, tensor] of Object.entries(named)) {
    const tokens = name.split('/');
    const short = [...tokens.slice(0, -2), tokens[tokens.length - 1]].join('/');
    byName.set(names.has(name) || !names.has(short) ? name : short, tensor);
  }
  for (const w of model.weights) {
    const t = byName.get(w.originalName);
    if (!t)
      throw new BatchlabError(
        'BAD_OPTION',
        `${option}: the model's tensor ${w.originalName} ${shape(w.shape)} is not in ${file}`,
      );
    if (shape(t.shape) !== shape(w.shape))
      throw new BatchlabError(
        'BAD_OPTION',
        `${option}: the model's tensor ${w.originalName} is ${shape(w.shape)} but ${file} has it ${shape(t.shape)}`,
      );
  }
  for (const [name, t] of byName)
    if (!names.has(name) && !name.startsWith(`${STANDARDIZE_LAYER}/`))
      throw new BatchlabError(
        'BAD_OPTION',
        `${option}: ${file} has a tensor ${name} ${shape(t.shape)} the model lacks`,
      );
  for (const w of model.weights) w.write(byName.get(w.originalName)!);
}

/** Warns when the weights in a saved model were trained on other data (or standardized otherwise) than this run's. */
function warnIfOtherData(
  what: string,
  metadata: Record<string, unknown>,
  dataset: Dataset,
  log: (line: string) => void,
): void {
  const saved = metadata.dataset as { name?: string; fingerprint?: string } | undefined;
  const stats = metadata.standardization as { mean?: number | number[]; std?: number | number[] } | undefined;
  if (!saved || !stats) return;
  const { mean, std } = dataset.standardization;
  if (saved.fingerprint !== dataset.fingerprint)
    log(
      `warning: ${what}: its weights were trained on other data (${saved.name}, fingerprint ${saved.fingerprint?.slice(0, 12)}…) ` +
        `than this run's (${dataset.name}, ${dataset.fingerprint.slice(0, 12)}…)`,
    );
  // Models saved before standardization was per channel hold scalars.
  const list = (v: number | number[] | undefined): string => [v ?? []].flat().join(',');
  if (list(stats.mean) !== list(mean) || list(stats.std) !== list(std))
    log(
      `warning: ${what}: its weights saw inputs standardized with mean ${list(stats.mean)} and std ${list(stats.std)}; ` +
        `this run standardizes with mean ${list(mean)} and std ${list(std)}`,
    );
}

/**
 * `--init-from DIR`: sets `model`'s weights (trainable and not) to those of the --save-model
 * output in DIR, matched by name and shape. Warns when they were trained on other data.
 */
export async function initFromSaved(
  dir: string,
  model: tfl.LayersModel,
  dataset: Dataset,
  log: (line: string) => void,
): Promise<void> {
  const path = join(dir, 'model.json');
  const refuse = (detail: string): BatchlabError => new BatchlabError('BAD_OPTION', `--init-from ${dir}: ${detail}`);
  const json = await readModelJson(path, refuse);
  if (!json.weightsManifest) throw refuse(`${path} has no weights (no weightsManifest)`);
  const named = await readWeightFiles(path, json.weightsManifest, refuse);
  try {
    assignByName(model, named, `--init-from ${dir}`, path);
  } finally {
    tf.dispose(Object.values(named));
  }
  if (json.metadata) warnIfOtherData(`--init-from ${dir}`, json.metadata, dataset, log);
}
