// The list of models batchlab can build by name, and rebuilding one from its JSON topology
// (what the coordinator sends workers: data, never code).

import * as tfl from '@tensorflow/tfjs-layers';
import { buildCnn } from './cnn.js';
import { buildMlp } from './mlp.js';
import { buildResnet, RESNET_WIDTHS } from './resnet.js';

export interface ModelConfig {
  inputShape: number[];
  numClasses: number;
  /** Hidden widths for `mlp`, conv filter counts for `cnn`, stage widths for `resnet`. */
  hidden: number[];
  /** Number of layers of a `resnet` (6n + 2); ignored by the other models. */
  depth?: number;
}

export const MODELS = {
  mlp: buildMlp,
  cnn: buildCnn,
  resnet: buildResnet,
} as const;

export type ModelName = keyof typeof MODELS;
export const MODEL_NAMES = Object.keys(MODELS) as ModelName[];

/** True for a built-in model's name; any other `--model` value is the path of a model.json. */
export function isModelName(model: string): model is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(model);
}

/** Default hidden widths per model, used when `--hidden` is not given. */
export const DEFAULT_HIDDEN: Record<ModelName, number[]> = {
  mlp: [256, 128],
  cnn: [8, 16],
  resnet: RESNET_WIDTHS,
};

/** Builds a named model. */
export function buildModel(name: ModelName, config: ModelConfig): tfl.LayersModel {
  return MODELS[name](config);
}

/** The model's topology as plain JSON (tfjs-layers format), for the `welcome` message. */
export function modelTopology(model: tfl.LayersModel): Record<string, unknown> {
  return model.toJSON(undefined, false) as Record<string, unknown>;
}

/** Rebuilds a model from topology JSON; throws if the JSON is not a tfjs-layers model. */
export async function modelFromTopology(topology: Record<string, unknown>): Promise<tfl.LayersModel> {
  return tfl.models.modelFromJSON({ modelTopology: topology } as never);
}
