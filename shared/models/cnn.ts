// A small convolutional net for 28×28 images: two conv(3×3, relu) + max-pool blocks, then dense logits.

import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelConfig } from './index.js';

/** Builds the CNN; `hidden` sets the conv filter counts (default 8,16). Outputs logits. */
export function buildCnn(config: ModelConfig): tfl.LayersModel {
  const [filters1 = 8, filters2 = 16] = config.hidden;
  return tfl.sequential({
    name: 'cnn',
    layers: [
      tfl.layers.conv2d({
        inputShape: config.inputShape,
        filters: filters1,
        kernelSize: 3,
        activation: 'relu',
        name: 'conv1',
      }), // [b, 26, 26, f1]
      tfl.layers.maxPooling2d({ poolSize: 2, name: 'pool1' }), // [b, 13, 13, f1]
      tfl.layers.conv2d({ filters: filters2, kernelSize: 3, activation: 'relu', name: 'conv2' }), // [b, 11, 11, f2]
      tfl.layers.maxPooling2d({ poolSize: 2, name: 'pool2' }), // [b, 5, 5, f2]
      tfl.layers.flatten({ name: 'flatten' }),
      tfl.layers.dense({ units: config.numClasses, name: 'logits' }),
    ],
  });
}
