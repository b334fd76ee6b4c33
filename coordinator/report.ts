// The `--report FILE` summary: one JSON object with the keys DESIGN.md fixes (null where not
// measured), written atomically.

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** The run summary; key names are a contract used by tests, sweeps and benchmarks. */
export interface RunReport {
  command: string;
  backend: string;
  workers: number;
  globalBatchSize: number;
  microBatchSize: number;
  steps: number;
  samples: number;
  initialLoss: number | null;
  finalLoss: number | null;
  evalAccuracy: number | null;
  evalLoss: number | null;
  trainAccuracy: number | null;
  samplesPerSecond: number | null;
  scalingEfficiency: number | null;
  gradientNoiseScale: number | null;
  learningRate: number;
  wallSeconds: number;
  model: string;
  dataset: string;
  optimizer: string;
  seed: number;
}

/** Writes `report` as pretty JSON to `path` (temp file + rename). */
export async function writeReport(path: string, report: RunReport): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
}
