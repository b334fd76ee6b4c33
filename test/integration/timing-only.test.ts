// Timing-only runs (what `batchlab bench` uses): the same training, real workers over loopback,
// but no evaluation at all — not the periodic one, the final one or the train-split one — and a
// report whose accuracies say so with null. The same run without the flag evaluates.

import { describe, expect, it } from 'vitest';
import { parseLocalSettings } from '../../cli/options.js';
import { launchLocal } from '../../coordinator/launch-local.js';
import type { RunReport } from '../../coordinator/report.js';
import type { TrainerObserver } from '../../coordinator/trainer-observer.js';
import { CLI, SUBSET_DIR } from '../support/cli.js';

/** Counts steps and records the steps evaluated after. */
class EvalCounter implements TrainerObserver {
  readonly evals: number[] = [];
  steps = 0;
  onStep(): void {
    this.steps++;
  }
  onEval(step: number): void {
    this.evals.push(step);
  }
}

const settings = parseLocalSettings({
  model: 'mlp',
  dataset: 'fashion-mnist',
  'data-dir': SUBSET_DIR,
  'global-batch': '32',
  'micro-batch': '16',
  workers: '2',
  steps: '3',
  'eval-every': '1',
  'metrics-port': 'off',
  backend: 'auto',
});

/** The coordinator in this process (what `batchlab local` runs), two real worker processes. */
async function run(timingOnly: boolean, observer: EvalCounter): Promise<RunReport> {
  const lines: string[] = [];
  try {
    return await launchLocal(
      { ...settings, timingOnly },
      { command: 'test', observer, log: (line) => lines.push(line), cliPath: CLI },
    );
  } catch (error) {
    throw new Error(`${String(error)}\nrun output:\n${lines.join('\n')}`, { cause: error });
  }
}

describe('timing-only runs', () => {
  it('train every step but never evaluate, and report null accuracies; without it, every eval runs', async () => {
    const timed = new EvalCounter();
    const t = await run(true, timed);
    expect(timed.steps).toBe(3);
    expect(t.steps).toBe(3);
    expect(timed.evals).toEqual([]);
    expect(t.finalLoss).toBeGreaterThan(0);
    expect([t.evalAccuracy, t.evalLoss, t.trainAccuracy, t.generalizationGap]).toEqual([null, null, null, null]);

    const full = new EvalCounter();
    const f = await run(false, full);
    expect(full.evals).toEqual([0, 1, 2]);
    expect(f.evalAccuracy).toBeGreaterThan(0);
    expect(f.trainAccuracy).toBeGreaterThan(0);
    expect(f.generalizationGap).toBeCloseTo(f.trainAccuracy! - f.evalAccuracy!, 12);
    // Skipping evaluation changes nothing about the training itself.
    expect(t.finalLoss).toBe(f.finalLoss);
  }, 120_000);
});
