// The quarantine state machine on plain data: late → quarantined (no new work) → released once
// it has answered every micro-batch it was sent; the late streak counts deadlines missed in a
// row and only a reply on time ends it; a quarantined worker that owes work and stays silent is
// due to be marked late again.

import { describe, expect, it } from 'vitest';
import { WorkerSchedule } from '../../coordinator/worker-schedule.js';

function scheduleWith(...ids: number[]): WorkerSchedule {
  const schedule = new WorkerSchedule();
  for (const id of ids) schedule.add(id, null);
  return schedule;
}

/** A reply for micro-batch `id` of `step`. */
const reply = (step: number, id: number) => ({ step, microBatchId: id, samples: 16, computeMs: 5 });

describe('worker quarantine', () => {
  it('quarantines a late worker until it has answered every micro-batch it was sent, re-issued ones included', () => {
    const s = scheduleWith(1, 2);
    s.recordWork(2, 0, [3, 4, 5]);
    expect(s.markLate(2, 1000)).toBe(1);
    expect(s.isQuarantined(2)).toBe(true);
    expect(s.quarantined()).toEqual([2]);
    expect(s.recordReply(2, reply(0, 3), 1500)).toBe('still-owing');
    // A reply for something it was not sent (another step, another id) settles nothing.
    expect(s.recordReply(2, reply(1, 4), 1550)).toBe('still-owing');
    expect(s.recordReply(2, reply(0, 9), 1560)).toBe('still-owing');
    expect(s.recordReply(2, reply(0, 4), 1600)).toBe('still-owing');
    expect(s.isQuarantined(2)).toBe(true);
    expect(s.recordReply(2, reply(0, 5), 1700)).toBe('released');
    expect(s.isQuarantined(2)).toBe(false);
    expect(s.quarantined()).toEqual([]);
    expect(s.isQuarantined(1)).toBe(false);
  });

  it('counts lates in a row; a late reply does not end the streak, a reply on time does', () => {
    const s = scheduleWith(1);
    s.recordWork(1, 0, [0]);
    expect(s.markLate(1, 0)).toBe(1);
    expect(s.recordReply(1, reply(0, 0), 10)).toBe('released');
    s.recordWork(1, 1, [0]);
    expect(s.markLate(1, 20)).toBe(2);
    expect(s.recordReply(1, reply(1, 0), 30)).toBe('released');
    // Work answered before any deadline: on time, the streak starts over.
    s.recordWork(1, 2, [0]);
    expect(s.recordReply(1, reply(2, 0), 40)).toBe('on-time');
    s.recordWork(1, 3, [0]);
    expect(s.markLate(1, 50)).toBe(1);
  });

  it('names quarantined workers that owe work and gave no sign of life since a time as due to be late again', () => {
    const s = scheduleWith(1, 2, 3);
    for (const id of [1, 2, 3]) s.recordWork(id, 0, [2 * id, 2 * id + 1]);
    s.markLate(1, 1000);
    s.markLate(2, 1000);
    // Worker 3 is not quarantined: its lateness is the step deadline's business.
    expect(s.silentSince(999)).toEqual([]);
    expect(s.silentSince(1000)).toEqual([1, 2]);
    // A late reply is a sign of life: it is computing, just slowly.
    s.recordReply(2, reply(0, 4), 1800);
    expect(s.silentSince(1500)).toEqual([1]);
    // Owing nothing, it is released and not late again.
    s.recordReply(2, reply(0, 5), 1900);
    expect(s.silentSince(5000)).toEqual([1]);
  });

  it('forgets a worker that left', () => {
    const s = scheduleWith(1);
    s.recordWork(1, 0, [0]);
    s.markLate(1, 0);
    s.remove(1);
    expect(s.isQuarantined(1)).toBe(false);
    expect(s.silentSince(10)).toEqual([]);
    expect(s.markLate(1, 20)).toBe(0);
  });
});
