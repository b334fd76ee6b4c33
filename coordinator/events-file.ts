// `--events FILE`: one JSON line per step and per evaluation, each written with its own write(2)
// as it happens, so a coordinator killed with SIGKILL leaves every line it reported. The first line
// is the run's configuration. A run that starts at step 0 begins the file anew; a resumed run
// appends a `resume` line and goes on, so the steps after the checkpoint appear again after it.

import { closeSync, fstatSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Evaluation } from '../shared/evaluate.js';
import type { StepRecord, TrainerObserver } from './trainer-observer.js';

export class EventsFile implements TrainerObserver {
  private constructor(
    private fd: number | null,
    private readonly path: string,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Opens `path`: truncated when the run starts at step 0, else appended to with a resume line.
   * `config` is written first when the file is (then) empty.
   */
  static open(
    path: string,
    config: Record<string, unknown>,
    resumedAtStep: number,
    log: (line: string) => void,
  ): EventsFile {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(path, resumedAtStep === 0 ? 'w' : 'a');
    const file = new EventsFile(fd, path, log);
    if (resumedAtStep === 0 || fstatSync(fd).size === 0) file.write({ type: 'config', ...config });
    if (resumedAtStep > 0) file.write({ type: 'resume', step: resumedAtStep });
    return file;
  }

  /** `step`: steps applied so far (1 after the first); the other fields as in the report's history, plus time and workers. */
  onStep(record: StepRecord): void {
    this.write({
      type: 'step',
      step: record.step + 1,
      loss: record.loss,
      accuracy: record.accuracy,
      lr: record.lr,
      bSimple: record.noise?.bSimple ?? null,
      samples: record.stats.samples,
      workers: record.workers,
      wallSeconds: record.wallSeconds,
    });
  }

  /** `step`: the steps applied when the evaluation ran. */
  onEval(step: number, evaluation: Evaluation): void {
    this.write({
      type: 'eval',
      step: step + 1,
      loss: evaluation.loss,
      accuracy: evaluation.accuracy,
      samples: evaluation.samples,
    });
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  /**
   * One line, handed to the kernel whole before this returns (a SIGKILL then loses none of it). A
   * write that fails (a full disk) is logged and ends the file; the run goes on.
   */
  private write(event: Record<string, unknown>): void {
    if (this.fd === null) return;
    const line = Buffer.from(`${JSON.stringify({ ...event, time: new Date().toISOString() })}\n`);
    try {
      let done = 0;
      while (done < line.length) done += writeSync(this.fd, line, done, line.length - done);
    } catch (error) {
      this.log(`could not write to ${this.path} (${(error as Error).message}); no more events are written there`);
      this.close();
    }
  }
}
