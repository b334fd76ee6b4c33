// The protocol fuzz test (issue 5): while a coordinator trains with two honest worker processes,
// the test process throws random bytes, text frames, truncated and bit-flipped valid frames, an
// oversized frame and wrong-but-well-formed messages at it, and runs "rogue" workers that finish
// the handshake honestly and then answer with wrong steps, unassigned ids, NaN/Infinity bodies,
// bodies of the wrong length, broken frames, or nothing at all. The coordinator must not crash,
// must re-issue the rogues' micro-batches to the honest workers, must count every refusal by
// reason, and must end with the same weights as an undisturbed run, bit for bit.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { createRandom, deriveSeed, type SeededRandom } from '../../shared/data/seeded-random.js';
import { PROTOCOL_VERSION } from '../../shared/protocol.js';
import { startCli, waitForOutput } from '../support/cli.js';
import {
  counters,
  ending,
  frame,
  gradient,
  hello,
  open,
  ReplayProxy,
  Rogue,
  sample,
  type Ending,
  type Work,
} from '../support/fuzz-client.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const TOKEN = 'fuzz-token-T';
const SEED = 20240605;
const STEPS = 60;
const GLOBAL_BATCH = 64;
const MICRO_BATCH = 16;
/** Over the coordinator's maxPayload (parameters × 4 + 16 MiB; 25,450 parameters here). */
const OVERSIZED_BYTES = 40 * 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), 'batchlab-fuzz-'));
const children: ChildProcess[] = [];
const sockets: WebSocket[] = [];
let proxy: ReplayProxy | null = null;
afterAll(async () => {
  for (const ws of sockets) if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await proxy?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Proc {
  child: ChildProcess;
  exit: Promise<number | null>;
  output: () => string;
}

function track(child: ChildProcess): Proc {
  children.push(child);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))),
  );
  return { child, exit, output: () => output };
}

interface Run extends Proc {
  wsUrl: string;
  metricsUrl: string;
  report: string;
  model: string;
}

async function startCoordinator(tag: string): Promise<Run> {
  const report = join(dir, `${tag}.json`);
  const model = join(dir, `${tag}-model`);
  const proc = track(
    startCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--token',
      TOKEN,
      '--dataset',
      'synthetic',
      '--hidden',
      '32',
      '--global-batch',
      String(GLOBAL_BATCH),
      '--micro-batch',
      String(MICRO_BATCH),
      '--steps',
      String(STEPS),
      '--eval-every',
      '0',
      '--metrics-port',
      '0',
      '--report',
      report,
      '--min-workers',
      '2',
      '--step-deadline-floor',
      '2',
      // Every worker gets work each step. With the throughput split, a busy machine can measure
      // the proxied worker as far slower than the rest once, which leaves it without micro-batches
      // (it is not measured again), and then it sends no gradient for the proxy to replay.
      '--balance',
      'equal',
      '--save-model',
      model,
    ]),
  );
  const m = await waitForOutput(
    proc.child,
    /listening on (ws:\/\/127\.0\.0\.1:\d+), metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/,
    60_000,
  );
  return { ...proc, wsUrl: m[1]!, metricsUrl: m[2]!, report, model };
}

function startWorker(url: string): Proc {
  return track(startCli(['worker', '--connect', url, '--metrics-port', 'off'], { BATCHLAB_TOKEN: TOKEN }));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Scrapes /metrics every 150 ms until stopped; keeps every successful scrape with its time. */
class Poller {
  readonly scrapes: { at: number; text: string }[] = [];
  private stopped = false;
  readonly done: Promise<void>;

  constructor(private readonly url: string) {
    this.done = this.loop();
  }

  async scrape(): Promise<string | null> {
    const at = Date.now();
    try {
      const res = await fetch(this.url, { signal: AbortSignal.timeout(2000) });
      if (!res.ok) return null;
      const text = await res.text();
      this.scrapes.push({ at, text });
      return text;
    } catch {
      return null; // not up yet, or already closed
    }
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await this.scrape();
      await sleep(150);
    }
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }

  get last(): { at: number; text: string } | undefined {
    return this.scrapes.at(-1);
  }

  async waitFor(check: (text: string) => boolean, what: string, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = this.last?.text;
      if (text && check(text)) return text;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }
}

/** What the fuzzers sent and saw; the lower bounds the coordinator's counters must reach. */
interface Tally {
  /** Client-side view of how each hostile connection ended, by WebSocket close code. */
  closes: Record<string, number>;
  httpRefusals: number;
  staleSent: number;
  unassignedSent: number;
  nonFiniteSent: number;
  wrongLengthSent: number;
  /** Micro-batches the rogues held and never answered validly: each had to be re-issued. */
  mustReissue: number;
  /** Micro-batches left unanswered by a connected rogue: only the step deadline can free them. */
  silentIds: number;
  notes: string[];
}

function closed(tally: Tally, e: Ending): void {
  tally.closes[e.code] = (tally.closes[e.code] ?? 0) + 1;
}

function pick<T>(rng: SeededRandom, items: readonly T[]): T {
  return items[Math.floor(rng.next() * items.length)]!;
}

function randomBytes(rng: SeededRandom, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rng.next() * 256);
  return out;
}

/** A copy of `data` with 1–3 random bits flipped among its first `within` bytes. */
function flipBits(rng: SeededRandom, data: Buffer, within = data.length): Buffer {
  const out = Buffer.from(data);
  const flips = 1 + Math.floor(rng.next() * 3);
  for (let i = 0; i < flips; i++) {
    const at = Math.floor(rng.next() * Math.min(within, out.length));
    out[at]! ^= 1 << Math.floor(rng.next() * 8);
  }
  return out;
}

/** A body the right length whose values are all finite except one (NaN, +Inf or -Inf). */
function poisonedBody(rng: SeededRandom, length: number, poison: number): Float32Array {
  const body = new Float32Array(length);
  for (let i = 0; i < length; i++) body[i] = (rng.next() - 0.5) * 1e-3;
  body[Math.floor(rng.next() * length)] = poison;
  return body;
}

/**
 * Connections that never finish a handshake: each sends one hostile frame (random bytes, a text
 * frame, a truncated or bit-flipped hello or gradient, a header that lies about its body) and
 * waits to be hung up on. A bit-flipped hello that still parses gets a welcome; we then leave.
 */
async function byteFuzz(
  url: string,
  rng: SeededRandom,
  tally: Tally,
  count: number,
  paramCount: number,
): Promise<void> {
  const validHello = frame(hello('fuzz-bytes'));
  const validGradient = frame(
    gradient({ step: 3, microBatchId: 1, samples: MICRO_BATCH }),
    new Float32Array(paramCount),
  );
  const makers: ((r: SeededRandom) => { data: Buffer | string; binary: boolean })[] = [
    (r) => ({ data: randomBytes(r, Math.floor(r.next() * 300)), binary: true }),
    (r) => ({
      data: pick(r, ['hello', '{"type":"hello","protocolVersion":1}', randomBytes(r, 40).toString('base64')]),
      binary: false,
    }),
    (r) => ({ data: validHello.subarray(0, Math.floor(r.next() * validHello.length)), binary: true }),
    (r) => ({ data: flipBits(r, validHello), binary: true }),
    (r) => ({ data: validGradient.subarray(0, Math.floor(r.next() * validGradient.length)), binary: true }),
    (r) => ({ data: flipBits(r, validGradient.subarray(0, 200)), binary: true }),
    // Well-framed msgpack with the wrong field types.
    (r) => ({
      data: frame(
        pick(r, [
          { type: 'hello', protocolVersion: '1' },
          { type: 'nope' },
          { type: 'hello', protocolVersion: 1, workerName: 7 },
          { type: 'work', step: -1 },
        ]),
      ),
      binary: true,
    }),
    // A length prefix bigger than the frame, and a header that claims more body than it carries.
    (r) => ({
      data: Buffer.concat([Buffer.from([0xff, 0xff, 0xff, r.next() < 0.5 ? 0x7f : 0xff]), randomBytes(r, 32)]),
      binary: true,
    }),
    () => ({
      data: frame(gradient({ step: 0, microBatchId: 0, samples: MICRO_BATCH }), new Float32Array(3), 1000),
      binary: true,
    }),
  ];
  // Generated up front, so the same seed gives the same frames however the connections interleave.
  const payloads = Array.from({ length: count }, (_, i) => makers[i % makers.length]!(rng));
  let next = 0;
  const one = async (i: number): Promise<void> => {
    const { data, binary } = payloads[i]!;
    const { ws } = await open(url, TOKEN);
    if (!ws) throw new Error('fuzz connection refused at the upgrade');
    sockets.push(ws);
    const end = ending(ws, 5000, (h) => {
      if (h.type === 'welcome') ws.close(1000, 'fuzz: leaving');
    });
    ws.send(data, { binary });
    const e = await end;
    closed(tally, e);
  };
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      while (next < count) await one(next++);
    }),
  );
}

/** Wrong but well-formed connection attempts, each with one known outcome. */
async function handshakeFuzz(url: string, tally: Tally): Promise<Record<string, Ending>> {
  const results: Record<string, Ending> = {};
  // Missing, wrong and almost-right tokens: HTTP 401, no WebSocket at all.
  for (const token of [null, 'wrong', TOKEN.slice(0, -1)]) {
    const { ws, status } = await open(url, token);
    expect(ws, `token ${token}`).toBeNull();
    expect(status).toBe(401);
    tally.httpRefusals++;
  }
  const script = async (name: string, frames: (Buffer | string)[], afterWelcome: Buffer[] = []): Promise<void> => {
    const { ws } = await open(url, TOKEN);
    sockets.push(ws!);
    const end = ending(ws!, 5000, (h) => {
      if (h.type === 'welcome') for (const f of afterWelcome) ws!.send(f, { binary: true });
    });
    for (const f of frames) ws!.send(f, { binary: typeof f !== 'string' });
    results[name] = await end;
    closed(tally, results[name]);
  };
  await script('version', [frame(hello('fuzz-version', PROTOCOL_VERSION + 1))]);
  await script(
    'fingerprint',
    [frame(hello('fuzz-fingerprint'))],
    [frame({ type: 'ready', datasetFingerprint: '0123456789abcdef' })],
  );
  await script(
    'gradient-before-ready',
    [frame(hello('fuzz-early'))],
    [frame(gradient({ step: 0, microBatchId: 0, samples: MICRO_BATCH }), new Float32Array(8))],
  );
  await script('hello-twice', [frame(hello('fuzz-twice'))], [frame(hello('fuzz-twice'))]);
  await script('ready-first', [frame({ type: 'ready', datasetFingerprint: 'x' })]);
  // One frame over maxPayload before any handshake: ws refuses it by its length (1009).
  await script('oversized', [Buffer.alloc(OVERSIZED_BYTES)]);
  return results;
}

/**
 * The rogue that answers: for its first work frame wrong steps, unassigned ids, a wrong sample
 * count, then NaN bodies for every micro-batch it holds; on a later step Infinity bodies; on a
 * later step nothing (the step deadline must free them, reason `timeout`, and quarantine it), then
 * those micro-batches late, which ends its quarantine; on a later step it leaves with work in
 * hand (reason `worker_lost`).
 */
async function answeringRogue(url: string, rng: SeededRandom, tally: Tally, poller: Poller): Promise<void> {
  const rogue = await Rogue.join(url, TOKEN, 'fuzz-rogue-replies');
  sockets.push(rogue.ws);
  const P = rogue.welcome.paramCount;
  const send = (fields: Parameters<typeof gradient>[0], body: Float32Array): void =>
    rogue.send(frame(gradient(fields), body));
  const size = (s: Work['microBatches'][number]): number => s.end - s.start;
  let index = 0;
  const nextWorkAfter = async (step: number): Promise<Work> => {
    for (;;) {
      const work = await rogue.work(index++, 30_000);
      // A re-issue within the same step is left unanswered: the deadline frees it.
      if (work.step > step) return work;
      tally.notes.push(
        `rogue-replies: extra work frame in step ${work.step} (ids ${work.microBatches.map((m) => m.id).join(',')}) left unanswered`,
      );
    }
  };

  const first = await nextWorkAfter(-1);
  const held = first.microBatches;
  const a = held[0]!;
  const finite = poisonedBody(rng, P, 0);
  send({ step: first.step + 1000, microBatchId: a.id, samples: size(a) }, finite);
  send({ step: first.step === 0 ? 1 : first.step - 1, microBatchId: a.id, samples: size(a) }, finite);
  tally.staleSent += 2;
  const notHeld = [0, 1, 2, 3].filter((id) => !held.some((m) => m.id === id));
  for (const id of [...notHeld.slice(0, 1), 4, 1_000_000])
    send({ step: first.step, microBatchId: id, samples: MICRO_BATCH }, finite);
  send({ step: first.step, microBatchId: a.id, samples: size(a) - 1 }, finite);
  tally.unassignedSent += Math.min(1, notHeld.length) + 3;
  for (const m of held) send({ step: first.step, microBatchId: m.id, samples: size(m) }, poisonedBody(rng, P, NaN));
  tally.nonFiniteSent += held.length;
  tally.mustReissue += held.length;
  // The NaN micro-batch was taken back: a second answer for it is no longer this rogue's.
  send({ step: first.step, microBatchId: a.id, samples: size(a) }, poisonedBody(rng, P, NaN));
  tally.unassignedSent += 1;

  const second = await nextWorkAfter(first.step);
  second.microBatches.forEach((m, i) =>
    send(
      { step: second.step, microBatchId: m.id, samples: size(m) },
      poisonedBody(rng, P, i % 2 ? -Infinity : Infinity),
    ),
  );
  tally.nonFiniteSent += second.microBatches.length;
  tally.mustReissue += second.microBatches.length;

  const third = await nextWorkAfter(second.step);
  tally.silentIds += third.microBatches.length;
  tally.mustReissue += third.microBatches.length;
  const silentAt = Date.now();
  // Quarantined at the deadline, it gets no new work until it has answered what it was sent:
  // answered late (the micro-batches went to others), refused as unassigned or stale.
  await poller.waitFor((text) => /^batchlab_workers_late_total\{[^}]*\} [1-9]/m.test(text), 'a late worker', 30_000);
  for (const m of third.microBatches)
    send({ step: third.step, microBatchId: m.id, samples: size(m) }, poisonedBody(rng, P, 0));

  const fourth = await nextWorkAfter(third.step);
  tally.notes.push(
    `rogue-replies: silent in step ${third.step}; next work (step ${fourth.step}) came ${Date.now() - silentAt} ms later`,
  );
  tally.mustReissue += fourth.microBatches.length;
  rogue.ws.close(1000, 'fuzz: leaving with work in hand');
  closed(tally, await rogue.closed);
}

/** A rogue that answers its micro-batches with bodies of the wrong length, then leaves. */
async function wrongLengthRogue(url: string, rng: SeededRandom, tally: Tally): Promise<Ending> {
  const rogue = await Rogue.join(url, TOKEN, 'fuzz-rogue-length');
  sockets.push(rogue.ws);
  const P = rogue.welcome.paramCount;
  const work = await rogue.work(0);
  for (const [i, m] of work.microBatches.entries()) {
    rogue.send(
      frame(
        gradient({ step: work.step, microBatchId: m.id, samples: m.end - m.start }),
        poisonedBody(rng, i % 2 ? P + 7 : P - 1, 0),
      ),
    );
    tally.wrongLengthSent++;
  }
  tally.mustReissue += work.microBatches.length;
  await sleep(200);
  if (rogue.ws.readyState === WebSocket.OPEN) rogue.ws.close(1000, 'fuzz: leaving');
  const e = await rogue.closed;
  closed(tally, e);
  return e;
}

/** A rogue that holds work and then breaks the protocol with `attack`; returns how it ended. */
async function breakingRogue(
  url: string,
  name: string,
  tally: Tally,
  attack: (rogue: Rogue, work: Work) => void,
): Promise<Ending> {
  const rogue = await Rogue.join(url, TOKEN, name);
  sockets.push(rogue.ws);
  const work = await rogue.work(0);
  tally.mustReissue += work.microBatches.length;
  attack(rogue, work);
  // If nothing in the attack closed the connection, leave (so the run does not wait on us).
  const timer = setTimeout(() => rogue.ws.readyState === WebSocket.OPEN && rogue.ws.close(1000, 'fuzz: leaving'), 1500);
  const e = await rogue.closed;
  clearTimeout(timer);
  closed(tally, e);
  return e;
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(after), ...Object.keys(before)])) out[k] = (after[k] ?? 0) - (before[k] ?? 0);
  return out;
}

const REJECTED = 'batchlab_rejected_messages_total';
const REASSIGNED = 'batchlab_microbatch_reassignments_total';

describe('protocol fuzz against a live coordinator', () => {
  it('survives hostile frames and rogue workers, counts every refusal, and ends with the undisturbed weights', async () => {
    const started = Date.now();
    // One stream per fuzzer, so concurrency does not change what either sends.
    const bytesRng = createRandom(deriveSeed(SEED, 1));
    const rng = createRandom(deriveSeed(SEED, 2));
    // The undisturbed run trains alongside, on its own ports.
    const [run, reference] = await Promise.all([startCoordinator('fuzz'), startCoordinator('reference')]);
    proxy = await ReplayProxy.start(run.wsUrl, TOKEN);
    const honest = [startWorker(run.wsUrl), startWorker(proxy.url)];
    const referenceWorkers = [startWorker(reference.wsUrl), startWorker(reference.wsUrl)];
    const poller = new Poller(run.metricsUrl);

    // Fuzz once training is under way, so that step deadlines come from measured step times.
    const baseline = await poller.waitFor(
      (t) => sample(t, 'batchlab_steps_total') >= 3,
      'three training steps',
      60_000,
    );
    const fuzzStartedStep = sample(baseline, 'batchlab_steps_total');
    const fuzzStartedAt = Date.now();
    const tally: Tally = {
      closes: {},
      httpRefusals: 0,
      staleSent: 0,
      unassignedSent: 0,
      nonFiniteSent: 0,
      wrongLengthSent: 0,
      mustReissue: 0,
      silentIds: 0,
      notes: [],
    };

    // A peer that says hello and never ready: it is told `shutdown` when the run ends, which is
    // the last moment /metrics is still up.
    const { ws: observer } = await open(run.wsUrl, TOKEN);
    sockets.push(observer!);
    let shutdownScrape: Promise<string | null> | null = null;
    const observerEnd = ending(observer!, 600_000, (h) => {
      if (h.type === 'shutdown') shutdownScrape = poller.scrape();
    });
    observer!.send(frame(hello('fuzz-observer')), { binary: true });

    proxy.replays = 8;
    // mlp 784-32-10 on synthetic 28×28 images (the coordinator logs "25,450 parameters"); only sizes pre-handshake frames.
    const paramCount = 784 * 32 + 32 + 32 * 10 + 10;
    let handshakes: Record<string, Ending> = {};
    let wrongLength: Ending | null = null;
    const breaking: Record<string, Ending> = {};
    await Promise.all([
      (async () => {
        handshakes = await handshakeFuzz(run.wsUrl, tally);
        await byteFuzz(run.wsUrl, bytesRng, tally, 90, paramCount);
      })(),
      (async () => {
        // Rogues that take work run one at a time: each must be the only one misbehaving in its step.
        await answeringRogue(run.wsUrl, rng, tally, poller);
        wrongLength = await wrongLengthRogue(run.wsUrl, rng, tally);
        breaking.truncated = await breakingRogue(run.wsUrl, 'fuzz-rogue-truncated', tally, (rogue, work) => {
          const m = work.microBatches[0]!;
          const valid = frame(
            gradient({ step: work.step, microBatchId: m.id, samples: m.end - m.start }),
            poisonedBody(rng, rogue.welcome.paramCount, 0),
          );
          rogue.send(valid.subarray(0, 1 + Math.floor(rng.next() * (valid.length - 1))));
        });
        breaking.text = await breakingRogue(run.wsUrl, 'fuzz-rogue-text', tally, (rogue, work) => {
          rogue.send(
            JSON.stringify({ type: 'gradient', step: work.step, microBatchId: work.microBatches[0]!.id }),
            false,
          );
        });
        breaking.oversized = await breakingRogue(run.wsUrl, 'fuzz-rogue-oversized', tally, (rogue, work) => {
          const m = work.microBatches[0]!;
          rogue.send(
            frame(
              gradient({ step: work.step, microBatchId: m.id, samples: m.end - m.start }),
              new Float32Array(OVERSIZED_BYTES / 4),
            ),
          );
        });
        breaking.flipped = await breakingRogue(run.wsUrl, 'fuzz-rogue-flipped', tally, (rogue, work) => {
          // Every body value is NaN, so no flip can turn this into an acceptable gradient.
          // Most flips land in the header (length prefix, msgpack, bodyLength), some anywhere.
          const m = work.microBatches[0]!;
          const valid = frame(
            gradient({ step: work.step, microBatchId: m.id, samples: m.end - m.start }),
            new Float32Array(rogue.welcome.paramCount).fill(NaN),
          );
          const headerBytes = 4 + valid.readUInt32LE(0);
          for (let i = 0; i < 8; i++) rogue.send(flipBits(rng, valid, i < 6 ? headerBytes : valid.length));
        });
      })(),
    ]);
    const fuzzDoneAt = Date.now();
    // The fuzz ran while the coordinator trained, not after.
    const atFuzzEnd = await poller.scrape();
    expect(atFuzzEnd, 'coordinator /metrics after the fuzz').not.toBeNull();
    const fuzzEndedStep = sample(atFuzzEnd!, 'batchlab_steps_total');
    expect(fuzzEndedStep).toBeLessThan(STEPS);

    // No crash: the run completes, exactly.
    const code = await run.exit;
    await poller.stop();
    await (shutdownScrape ?? Promise.resolve(null));
    const finalScrape = poller.last!;
    const observed = await observerEnd;
    expect(code, run.output().slice(-4000)).toBe(0);
    for (const w of honest) expect(await w.exit, w.output().slice(-2000)).toBe(0);
    expect(await reference.exit, reference.output().slice(-2000)).toBe(0);
    for (const w of referenceWorkers) expect(await w.exit, w.output().slice(-2000)).toBe(0);
    expect(observed.received).toContain('shutdown');

    const report = JSON.parse(readFileSync(run.report, 'utf8'));
    expect(report.steps).toBe(STEPS);
    expect(report.samples).toBe(STEPS * GLOBAL_BATCH);

    // Counters: every provoked refusal shows up under its reason.
    expect(finalScrape.at).toBeGreaterThan(fuzzDoneAt);
    const rejected = delta(counters(finalScrape.text, REJECTED), counters(baseline, REJECTED));
    const reassigned = delta(counters(finalScrape.text, REASSIGNED), counters(baseline, REASSIGNED));
    const closes = (c: number): number => tally.closes[c] ?? 0;
    const lossLines = run
      .output()
      .split('\n')
      .filter((l) => /^step \d+: /.test(l));
    const summary = {
      seconds: {
        untilFuzzStarted: (fuzzStartedAt - started) / 1000,
        fuzz: (fuzzDoneAt - fuzzStartedAt) / 1000,
        total: (Date.now() - started) / 1000,
      },
      steps: { fuzzStarted: fuzzStartedStep, fuzzEnded: fuzzEndedStep },
      rejected,
      reassigned,
      tally,
      proxyReplayed: proxy.replayed,
      reissueLog: lossLines,
      handshakes: Object.fromEntries(
        Object.entries(handshakes).map(([k, e]) => [k, `${e.code} ${e.errorCode ?? ''}`.trim()]),
      ),
      wrongLength: wrongLength && `${(wrongLength as Ending).code} ${(wrongLength as Ending).errorCode ?? ''}`.trim(),
      breaking: Object.fromEntries(
        Object.entries(breaking).map(([k, e]) => [k, `${e.code} ${e.errorCode ?? ''}`.trim()]),
      ),
    };
    console.log(`fuzz summary: ${JSON.stringify(summary, null, 2)}`);
    const why = `${JSON.stringify(summary)}\ncoordinator log:\n${run.output().slice(-6000)}`;

    expect(handshakes.version).toMatchObject({ code: 4426, errorCode: 'VERSION_MISMATCH' });
    expect(handshakes.fingerprint).toMatchObject({ code: 4409, errorCode: 'DATASET_MISMATCH' });
    for (const k of ['gradient-before-ready', 'hello-twice', 'ready-first']) expect(handshakes[k]!.code, k).toBe(4400);
    expect(handshakes.oversized!.code).toBe(1009);
    expect(breaking.truncated).toMatchObject({ code: 4400, errorCode: 'BAD_FRAME' });
    expect(breaking.text!.code).toBe(4400);
    expect(breaking.oversized!.code).toBe(1009);

    expect(rejected.auth ?? 0, why).toBeGreaterThanOrEqual(tally.httpRefusals);
    expect(rejected.bad_frame ?? 0, why).toBeGreaterThanOrEqual(closes(4400));
    expect(rejected.version_mismatch ?? 0, why).toBeGreaterThanOrEqual(closes(4426));
    expect(rejected.dataset_mismatch ?? 0, why).toBeGreaterThanOrEqual(closes(4409));
    expect(rejected.stale_step ?? 0, why).toBeGreaterThanOrEqual(tally.staleSent);
    expect(rejected.unassigned ?? 0, why).toBeGreaterThanOrEqual(tally.unassignedSent);
    expect(rejected.non_finite ?? 0, why).toBeGreaterThanOrEqual(tally.nonFiniteSent);
    expect(proxy.replayed).toBeGreaterThan(0);
    expect(rejected.duplicate ?? 0, why).toBeGreaterThan(0);
    // A body of the wrong length is a refused reply (bad_shape) or a refused frame (bad_frame, connection closed).
    if ((wrongLength as Ending | null)?.code === 4400)
      expect(rejected.bad_frame ?? 0, why).toBeGreaterThanOrEqual(closes(4400));
    else expect(rejected.bad_shape ?? 0, why).toBeGreaterThanOrEqual(tally.wrongLengthSent);

    // Re-issues: the silent rogue's work by the step deadline, the departed rogues' work as lost,
    // and altogether at least every micro-batch a rogue held without a valid answer.
    expect(reassigned.timeout ?? 0, why).toBeGreaterThanOrEqual(tally.silentIds);
    expect(reassigned.worker_lost ?? 0, why).toBeGreaterThan(0);
    const totalReassigned = Object.values(reassigned).reduce((a, b) => a + b, 0);
    expect(totalReassigned, why).toBeGreaterThanOrEqual(tally.mustReissue);

    // Nothing a hostile peer sent reached the weights: they are the undisturbed run's, bit for bit.
    expectBitIdentical(readSavedWeights(reference.model), readSavedWeights(run.model), 'fuzzed run vs undisturbed run');
    expect(JSON.parse(readFileSync(reference.report, 'utf8'))).toMatchObject({
      steps: STEPS,
      samples: STEPS * GLOBAL_BATCH,
    });
  }, 180_000);
});
