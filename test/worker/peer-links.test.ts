// The sharded reducer's worker side over real loopback WebSocket links: three workers' exchanges
// give every worker the star's mean gradient bit for bit, whatever order slices arrive in, and
// forged, stale, misrouted, oversized or unauthenticated peer frames are refused with a reason
// while the step still completes exactly.

import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { encodeFrame } from '../../shared/codec.js';
import { OrderedSum } from '../../shared/ordered-sum.js';
import {
  PROTOCOL_VERSION,
  type ExchangePlan,
  type Message,
  type PeerSpec,
  type ReducedMessage,
} from '../../shared/protocol.js';
import type { RejectReason } from '../../shared/reasons.js';
import { shardBounds } from '../../coordinator/sharded-reducer.js';
import { createRandom } from '../../shared/data/seeded-random.js';
import { PeerLinks } from '../../worker/peer-links.js';
import { ShardExchange } from '../../worker/shard-exchange.js';
import { expectBitIdentical, mixedMagnitudes } from '../support/tensors.js';

const TOKEN = 'peer-token';
const RUN = 'run-peer-test';
const P = 1001;
const MICRO = [0, 1, 2, 3, 4].map((id) => ({ id, start: id * 8, end: id * 8 + (id === 4 ? 5 : 8) }));

interface Node {
  id: number;
  links: PeerLinks;
  exchange: ShardExchange;
  rejected: RejectReason[];
  reduced: Promise<ReducedMessage>;
}

const nodes: Node[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.links.close()));
});

async function node(id: number): Promise<Node> {
  const rejected: RejectReason[] = [];
  const links = await PeerLinks.listen('127.0.0.1', 0, {
    token: TOKEN,
    clientMask: 'auto',
    onReject: (reason) => rejected.push(reason),
    onBytes: () => {},
    onSendSeconds: () => {},
    log: () => {},
  });
  let resolve!: (m: ReducedMessage) => void;
  const reduced = new Promise<ReducedMessage>((r) => (resolve = r));
  const exchange = new ShardExchange(P, {
    sendToPeer: (peer, message, body) => links.send(peer, message, body),
    sendToCoordinator: (message) => resolve(message),
    refused: (problem) => rejected.push(problem),
  });
  links.bind(RUN, id, P, (from, message, body) => exchange.receive(from, message, body));
  const n = { id, links, exchange, rejected, reduced };
  nodes.push(n);
  return n;
}

const gradOf = (id: number): Float32Array => mixedMagnitudes(P, 100 + id);

/** The star's mean: every micro-batch's full gradient summed in id order in float64. */
function starMean(): { mean: Float32Array; sqNorm: number } {
  const sum = new OrderedSum(P);
  sum.begin(MICRO.map((m) => m.id));
  for (const m of [...MICRO].reverse()) sum.add(m.id, gradOf(m.id), m.end - m.start);
  const { meanGrad, sqNorm } = sum.finish();
  return { mean: meanGrad.slice(), sqNorm };
}

async function threeWorkers(): Promise<{ workers: Node[]; plan: ExchangePlan; peers: PeerSpec[] }> {
  const workers = await Promise.all([1, 2, 3].map((id) => node(id)));
  const peers = workers.map((w) => ({ workerId: w.id, address: `127.0.0.1:${w.links.port}` }));
  const plan: ExchangePlan = { attempt: 0, peers, bounds: shardBounds(P, 3), microBatches: MICRO, lr: 0.1 };
  return { workers, plan, peers };
}

/** A raw client on `port` that greets as worker `from` and sends `frames`. */
async function rawPeer(port: number, token: string, from: number): Promise<WebSocket> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}`, { headers: { authorization: `Bearer ${token}` } });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
    socket.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  socket.send(encodeFrame({ type: 'peer-hello', protocolVersion: PROTOCOL_VERSION, runId: RUN, workerId: from }));
  return socket;
}

const sendRaw = (socket: WebSocket, message: Message, body: Float32Array | null): Promise<void> =>
  new Promise((resolve) => socket.send(encodeFrame(message, body), { binary: true }, () => resolve()));

const bounds = (plan: ExchangePlan, shard: number): number => plan.bounds[shard + 1]! - plan.bounds[shard]!;

const settle = (ms = 100): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('the sharded exchange over peer links', () => {
  it("gives every worker the star's mean gradient and |mean|² bit for bit (micro-batches split unevenly, plan arriving late)", async () => {
    const { workers, plan } = await threeWorkers();
    // Worker 3 computes first and sends before workers 1 and 2 have their plan: they keep its slices.
    const owned = new Map([
      [3, [4]],
      [1, [0, 1, 2]],
      [2, [3]],
    ]);
    for (const [id, ids] of owned) {
      const w = workers[id - 1]!;
      w.exchange.begin(5, plan, w.id);
      for (const mb of ids) w.exchange.contribute(mb, gradOf(mb));
      await settle(30);
    }
    const reduced = await Promise.all(workers.map((w) => w.reduced));
    const star = starMean();
    for (const [i, w] of workers.entries()) {
      expect(reduced[i]).toMatchObject({ type: 'reduced', step: 5, attempt: 0 });
      expect(w.exchange.isComplete(5, 0)).toBe(true);
      expectBitIdentical(star.mean, w.exchange.mean, `worker ${w.id}'s mean`);
      expect(reduced[i]!.sqNorm).toBe(star.sqNorm);
      expect(w.rejected, `worker ${w.id}`).toEqual([]);
    }
  });

  it('refuses a peer link without the token (401, counted as auth)', async () => {
    const { workers } = await threeWorkers();
    await expect(rawPeer(workers[0]!.links.port, 'wrong', 2)).rejects.toThrow(/HTTP 401/);
    await settle(50);
    expect(workers[0]!.rejected).toEqual(['auth']);
  });

  it('refuses forged, stale, misrouted, duplicate and non-finite frames with reasons, and the step still completes exactly', async () => {
    const { workers, plan } = await threeWorkers();
    const [w1, w2, w3] = workers as [Node, Node, Node];
    for (const w of workers) w.exchange.begin(5, plan, w.id);
    const bounds = plan.bounds;
    const len0 = bounds[1]! - bounds[0]!;
    const forger = await rawPeer(w1.links.port, TOKEN, 9);
    const slice = (shard: number, microBatchId: number, step = 5, attempt = 0) =>
      ({ type: 'slice', step, attempt, shard, microBatchId }) as const;
    // An earlier step, a shard worker 1 does not own, a micro-batch not in the plan, the wrong
    // length, NaN: each refused and never summed.
    await sendRaw(forger, slice(0, 0, 4), new Float32Array(len0));
    await sendRaw(forger, slice(1, 0), new Float32Array(bounds[2]! - bounds[1]!));
    await sendRaw(forger, slice(0, 77), new Float32Array(len0));
    await sendRaw(forger, slice(0, 0), new Float32Array(len0 - 1));
    await sendRaw(forger, slice(0, 0), new Float32Array(len0).fill(Number.NaN));
    await settle();
    expect(w1.rejected).toEqual(['stale_step', 'unassigned', 'unassigned', 'bad_shape', 'non_finite']);
    // The real work: everyone contributes its micro-batches.
    w1.exchange.contribute(0, gradOf(0));
    w1.exchange.contribute(1, gradOf(1));
    w2.exchange.contribute(2, gradOf(2));
    w2.exchange.contribute(3, gradOf(3));
    w3.exchange.contribute(4, gradOf(4));
    await Promise.all(workers.map((w) => w.reduced));
    // A replayed slice after the fact is a duplicate.
    await sendRaw(forger, slice(0, 0), gradOf(0).subarray(0, len0));
    await settle();
    expect(w1.rejected.at(-1)).toBe('duplicate');
    const star = starMean();
    for (const w of workers) expectBitIdentical(star.mean, w.exchange.mean, `worker ${w.id}'s mean after forgeries`);
    // A frame that is not a slice or shard closes the link, counted as bad_frame.
    const closed = new Promise<number>((resolve) => forger.once('close', (code) => resolve(code)));
    await sendRaw(forger, { type: 'commit', step: 5, attempt: 0 }, null);
    expect(await closed).toBe(4400);
    expect(w1.rejected.at(-1)).toBe('bad_frame');
    forger.terminate();
  });

  it('survives 300 seeded random frames on its peer links (noise, forged headers, wrong fields) and still sums exactly', async () => {
    const { workers, plan } = await threeWorkers();
    for (const w of workers) w.exchange.begin(5, plan, w.id);
    const random = createRandom(42);
    const int = (n: number): number => Math.floor(random.next() * n);
    const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
    // Mostly plausible values, so frames get past validation to the exchange's own checks.
    const steps = [5, 5, 5, 4, 6, -1, 'x'];
    const attempts = [0, 0, 0, 1, 1.5];
    const shards = [0, 1, 2, 3, -1];
    const ids = [0, 1, 2, 3, 4, 77, null];
    let closedLinks = 0;
    for (let i = 0; i < 300; i++) {
      const target = pick(workers);
      // Most hostile links die at their first bad frame; open a fresh one when needed.
      const link = await rawPeer(target.links.port, TOKEN, 1 + int(3));
      link.on('close', () => closedLinks++);
      const kind = int(4);
      if (kind === 0) link.send(Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256))));
      else {
        const header = {
          type: pick(['slice', 'shard', 'slice', 'shard', 'work', 'hello', 'bogus']),
          step: pick(steps),
          attempt: pick(attempts),
          shard: pick(shards),
          microBatchId: pick(ids),
        };
        const length = pick([0, 1, 333, 334, P, bounds(plan, header.shard) || 1]);
        let fill = pick([0, 1e-30, Number.NaN, Number.POSITIVE_INFINITY, 3]);
        // A frame right in every field would be summed: a token holder can do that (docs/PROTOCOL.md);
        // the fuzz is about frames that are wrong somewhere, so such a frame gets a NaN.
        const own = workers.indexOf(target);
        const real =
          header.step === 5 &&
          header.attempt === 0 &&
          ((header.type === 'slice' &&
            header.shard === own &&
            typeof header.microBatchId === 'number' &&
            header.microBatchId < 5) ||
            header.type === 'shard') &&
          length === bounds(plan, header.shard);
        if (real && Number.isFinite(fill)) fill = Number.NaN;
        const body = new Float32Array(length).fill(fill);
        try {
          link.send(encodeFrame(header as unknown as Message, kind === 1 ? null : body));
        } catch {
          link.send(Buffer.from('not a frame'));
        }
      }
      await new Promise((r) => setTimeout(r, 2));
      link.terminate();
    }
    await settle(200);
    // The real step, after the noise: every worker still gets the star's bits.
    workers[0]!.exchange.contribute(0, gradOf(0));
    workers[1]!.exchange.contribute(1, gradOf(1));
    workers[1]!.exchange.contribute(2, gradOf(2));
    workers[2]!.exchange.contribute(3, gradOf(3));
    workers[2]!.exchange.contribute(4, gradOf(4));
    await Promise.all(workers.map((w) => w.reduced));
    const star = starMean();
    for (const w of workers) expectBitIdentical(star.mean, w.exchange.mean, `worker ${w.id} after the fuzz`);
    const refused = workers.flatMap((w) => w.rejected);
    expect(refused.length).toBeGreaterThan(100);
    expect([...new Set(refused)].sort()).toEqual(['bad_frame', 'bad_shape', 'non_finite', 'stale_step', 'unassigned']);
    expect(closedLinks).toBeGreaterThan(0);
  });

  it('refuses a late frame of a committed step, and a mean shard from a worker that does not own it', async () => {
    const { workers, plan } = await threeWorkers();
    const [w1] = workers as [Node, Node, Node];
    w1.exchange.begin(5, plan, w1.id);
    const len1 = bounds(plan, 1);
    // Shard 1 belongs to worker 2: worker 3 cannot hand it out.
    expect(w1.exchange.receive(3, { type: 'shard', step: 5, attempt: 0, shard: 1 }, new Float32Array(len1))).toBe(
      'unassigned',
    );
    w1.exchange.committed();
    // After the commit of step 5 a late slice of it is refused, not kept as early.
    const late = { type: 'slice', step: 5, attempt: 0, shard: 0, microBatchId: 2 } as const;
    expect(w1.exchange.receive(2, late, new Float32Array(bounds(plan, 0)))).toBe('stale_step');
    // A slice of step 6 that comes before its plan is kept (null), for the plan to come.
    expect(w1.exchange.receive(2, { ...late, step: 6 }, new Float32Array(bounds(plan, 0)))).toBeNull();
  });

  it('closes a link whose frame is larger than the limit (1009), counted as bad_frame', async () => {
    const { workers } = await threeWorkers();
    const forger = await rawPeer(workers[0]!.links.port, TOKEN, 9);
    const closed = new Promise<number>((resolve) => forger.once('close', (code) => resolve(code)));
    forger.send(Buffer.alloc(P * 4 + 16 * 1024 * 1024 + 64));
    expect(await closed).toBe(1009);
    await settle();
    expect(workers[0]!.rejected).toEqual(['bad_frame']);
  });

  it('re-sends kept gradients under a newer attempt and ignores frames of the old one', async () => {
    const { workers, plan } = await threeWorkers();
    const [w1, w2] = workers as [Node, Node, Node];
    // Attempt 0 over three workers; worker 3 is then lost before contributing.
    for (const w of workers) w.exchange.begin(5, plan, w.id);
    w1.exchange.contribute(0, gradOf(0));
    w1.exchange.contribute(1, gradOf(1));
    w2.exchange.contribute(2, gradOf(2));
    await settle(50);
    // Attempt 1 over the survivors: they re-send what they kept and compute the rest.
    const survivors = plan.peers.slice(0, 2);
    const next: ExchangePlan = { ...plan, attempt: 1, peers: survivors, bounds: shardBounds(P, 2) };
    for (const w of [w1, w2]) w.exchange.begin(5, next, w.id);
    w2.exchange.contribute(3, gradOf(3));
    w1.exchange.contribute(4, gradOf(4));
    const reduced = await Promise.all([w1.reduced, w2.reduced]);
    expect(reduced.map((r) => r.attempt)).toEqual([1, 1]);
    const star = starMean();
    for (const w of [w1, w2]) expectBitIdentical(star.mean, w.exchange.mean, `worker ${w.id} after the re-plan`);
  });
});
