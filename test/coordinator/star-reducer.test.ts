// The star reducer runs the reducer conformance suite.

import { StarReducer } from '../../coordinator/star-reducer.js';
import { createOptimizer, DEFAULT_OPTIMIZER_CONFIG } from '../../shared/optimizers/index.js';
import { describeReducerConformance } from './reducer-conformance.js';

describeReducerConformance(
  'star',
  (weights, optimizer, params) =>
    new StarReducer(weights, createOptimizer(optimizer, DEFAULT_OPTIMIZER_CONFIG, params)),
);
