// The checkpoint options are refused where they make no sense, naming the option and what is accepted.

import { describe, expect, it } from 'vitest';
import { parseSweepSettings, parseTrainingSettings } from '../../cli/options.js';
import { OptionError } from '../../shared/errors.js';

describe('checkpoint options', () => {
  it.each([
    [
      { 'keep-checkpoints': '0', 'checkpoint-dir': 'd' },
      /--keep-checkpoints: got "0"; expected an integer from 1 to 1000/,
    ],
    [{ 'keep-checkpoints': 'two', 'checkpoint-dir': 'd' }, /--keep-checkpoints: got "two"/],
    [{ fresh: true }, /--fresh: got true; expected a --checkpoint-dir/],
    [
      { fresh: true, resume: true, 'checkpoint-dir': 'd' },
      /--fresh: got true; expected either --fresh or --resume, not both/,
    ],
    [
      { 'allow-schedule-change': true, 'checkpoint-dir': 'd' },
      /--allow-schedule-change: got true; expected it only with --resume/,
    ],
  ])('refuses %o', (raw, message) => {
    expect(() => parseTrainingSettings(raw)).toThrow(OptionError);
    expect(() => parseTrainingSettings(raw)).toThrow(message);
  });

  it('keeps 2 checkpoints unless told otherwise, and passes the flags through', () => {
    expect(parseTrainingSettings({ 'checkpoint-dir': 'd' })).toMatchObject({
      keepCheckpoints: 2,
      fresh: false,
      allowScheduleChange: false,
    });
    expect(
      parseTrainingSettings({
        'checkpoint-dir': 'd',
        resume: true,
        'allow-schedule-change': true,
        'keep-checkpoints': '5',
      }),
    ).toMatchObject({ keepCheckpoints: 5, resume: true, allowScheduleChange: true });
  });

  it('sweep refuses --fresh and --allow-schedule-change', () => {
    expect(() => parseSweepSettings({ fresh: true })).toThrow(/--fresh: got true/);
    expect(() => parseSweepSettings({ 'allow-schedule-change': true })).toThrow(/--allow-schedule-change: got true/);
  });
});
