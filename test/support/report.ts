// The keys every --report JSON must have (the README's contract), for the tests that read reports.

/** Keys of a run report, null where not measured; sweep points add stepsToTarget and samplesToTarget. */
export const REPORT_KEYS = [
  'command',
  'backend',
  'reducer',
  'workers',
  'globalBatchSize',
  'microBatchSize',
  'steps',
  'samples',
  'initialLoss',
  'finalLoss',
  'evalAccuracy',
  'samplesPerSecond',
  'scalingEfficiency',
  'gradientNoiseScale',
  'learningRate',
  'wallSeconds',
  'peakMemoryBytes',
  'peakRssBytes',
  'workerMemory',
] as const;
