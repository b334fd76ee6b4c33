// The multilayer perceptron: flatten → dense(relu) × hidden widths → dense logits.

import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelConfig } from './index.js';

/** Builds an MLP, e.g. hidden [256, 128] gives 784-256-128-10 on 28×28 inputs. Outputs logits. */
export function buildMlp(config: ModelConfig): tfl.LayersModel {
  const layers: tfl.layers.Layer[] = [tfl.layers.flatten({ inputShape: config.inputShape, name: 'flatten' })];
  config.hidden.forEach((units, i) =>
    layers.push(tfl.layers.dense({ units, activation: 'relu', name: `hidden${i + 1}` })),
  );
  layers.push(tfl.layers.dense({ units: config.numClasses, name: 'logits' }));
  return tfl.sequential({ layers, name: 'mlp' });
}
