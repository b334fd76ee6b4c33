// Hostile peers for the protocol fuzz test: a frame encoder written from docs/PROTOCOL.md (not
// shared/codec.ts, so the wire format is checked, not assumed), one-shot connections that send
// one frame and report how the coordinator hung up, a "rogue" worker that completes the
// handshake honestly and then misbehaves, a replaying proxy in front of an honest worker, and a
// reader for the coordinator's Prometheus counters.

import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Packr, unpack } from 'msgpackr';
import WebSocket, { WebSocketServer, type RawData } from 'ws';
import { PROTOCOL_VERSION } from '../../shared/protocol.js';

const packr = new Packr({ useRecords: false, moreTypes: false });

/** A frame as PROTOCOL.md lays it out: u32 LE header length, msgpack header, pad to 4, float32 LE body. */
export function frame(header: Record<string, unknown>, body: Float32Array | null = null, bodyLength?: number): Buffer {
  const packed = packr.pack({ ...header, bodyLength: bodyLength ?? (body ? body.length : -1) });
  const bodyOffset = (4 + packed.length + 3) & ~3;
  const out = Buffer.alloc(bodyOffset + (body ? body.byteLength : 0));
  out.writeUInt32LE(packed.length, 0);
  packed.copy(out, 4);
  if (body) Buffer.from(body.buffer, body.byteOffset, body.byteLength).copy(out, bodyOffset);
  return out;
}

/** The msgpack header of a frame (no validation: the test only reads the coordinator's own frames). */
export function header(data: Buffer): Record<string, unknown> & { type: string } {
  const length = data.readUInt32LE(0);
  return unpack(data.subarray(4, 4 + length)) as Record<string, unknown> & { type: string };
}

export function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

export function hello(name: string, protocolVersion = PROTOCOL_VERSION): Record<string, unknown> {
  return { type: 'hello', protocolVersion, workerName: name, backend: 'cpu', device: 'fuzz', maxChunk: 16 };
}

export interface GradientFields {
  step: number;
  microBatchId: number;
  samples: number;
  lossSum?: number;
  sqNorm?: number;
}

export function gradient(f: GradientFields): Record<string, unknown> {
  return {
    type: 'gradient',
    step: f.step,
    microBatchId: f.microBatchId,
    samples: f.samples,
    lossSum: f.lossSum ?? 1,
    correct: 0,
    computeMs: 1,
    sqNorm: f.sqNorm ?? 1,
  };
}

/** Opens a WebSocket (resolves null on an HTTP refusal, with its status). */
export function open(url: string, token: string | null): Promise<{ ws: WebSocket | null; status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      maxPayload: 1024 * 1024 * 1024,
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (_req, res) => {
      resolve({ ws: null, status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.once('error', (e) => {
      if (!/Unexpected server response/.test(e.message)) reject(e);
    });
  });
}

/** How one connection ended, from the client's side. */
export interface Ending {
  /** WebSocket close code (1006: the TCP connection dropped without a close frame). */
  code: number;
  /** `code` of the coordinator's `error` frame, when it sent one before closing. */
  errorCode: string | null;
  /** Types of the coordinator's frames, in order. */
  received: string[];
}

/** Collects what the coordinator sends until the socket closes (or `timeoutMs`, then terminates). */
export function ending(
  ws: WebSocket,
  timeoutMs: number,
  onFrame?: (h: Record<string, unknown> & { type: string }, data: Buffer) => void,
): Promise<Ending> {
  const received: string[] = [];
  let errorCode: string | null = null;
  ws.on('error', () => {}); // EPIPE/ECONNRESET while we still write is part of being hung up on.
  ws.on('message', (data, isBinary) => {
    const buf = toBuffer(data);
    if (!isBinary || buf.length < 4) return void received.push('?');
    // Only an unreadable header counts as '?': an error thrown by onFrame must reach the test.
    let h: ReturnType<typeof header>;
    try {
      h = header(buf);
    } catch {
      return void received.push('?');
    }
    received.push(h.type);
    if (h.type === 'error') errorCode = String(h.code);
    onFrame?.(h, buf);
  });
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve({ code: 1006, errorCode, received });
    const timer = setTimeout(() => ws.terminate(), timeoutMs);
    ws.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, errorCode, received });
    });
  });
}

/** The parts of the coordinator's welcome a rogue needs. */
export interface Welcome {
  workerId: number;
  fingerprint: string;
  paramCount: number;
}

export interface Work {
  step: number;
  microBatches: { id: number; start: number; end: number }[];
}

/**
 * A peer that does the handshake like a worker (hello → welcome → ready with the right
 * fingerprint) and then hands every `work` frame to the test, which decides how to misbehave.
 */
export class Rogue {
  readonly works: Work[] = [];
  readonly closed: Promise<Ending>;
  private waiters: (() => void)[] = [];

  private constructor(
    readonly ws: WebSocket,
    readonly welcome: Welcome,
    closed: Promise<Ending>,
  ) {
    this.closed = closed;
  }

  static async join(url: string, token: string, name: string): Promise<Rogue> {
    const { ws, status } = await open(url, token);
    if (!ws) throw new Error(`rogue ${name}: upgrade refused with HTTP ${status}`);
    let rogue: Rogue | null = null;
    let resolveWelcome!: (w: Welcome) => void;
    const welcomed = new Promise<Welcome>((resolve) => (resolveWelcome = resolve));
    const early: Work[] = [];
    const closed = ending(ws, 600_000, (h) => {
      if (h.type === 'welcome') {
        const params = h.params as { shape: number[] }[];
        const dataset = h.dataset as { fingerprint: string };
        resolveWelcome({
          workerId: Number(h.workerId),
          fingerprint: dataset.fingerprint,
          paramCount: params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0),
        });
      } else if (h.type === 'work') {
        const work = { step: Number(h.step), microBatches: h.microBatches as Work['microBatches'] };
        if (rogue) rogue.push(work);
        else early.push(work);
      }
    });
    ws.send(frame(hello(name)), { binary: true });
    const welcome = await Promise.race([
      welcomed,
      closed.then((e) =>
        Promise.reject(new Error(`rogue ${name}: closed during the handshake (${JSON.stringify(e)})`)),
      ),
    ]);
    rogue = new Rogue(ws, welcome, closed);
    for (const w of early) rogue.push(w);
    ws.send(frame({ type: 'ready', datasetFingerprint: welcome.fingerprint }), { binary: true });
    return rogue;
  }

  private push(work: Work): void {
    this.works.push(work);
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** Resolves with the `index`-th work frame (0-based), or rejects after `timeoutMs` or on close. */
  async work(index: number, timeoutMs = 20_000): Promise<Work> {
    const deadline = Date.now() + timeoutMs;
    while (this.works.length <= index) {
      if (this.ws.readyState !== WebSocket.OPEN)
        throw new Error(`rogue ${this.welcome.workerId}: connection closed before work frame ${index}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`rogue ${this.welcome.workerId}: no work frame ${index} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.works[index]!;
  }

  send(data: Buffer | string, binary = true): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data, { binary });
  }
}

/**
 * A WebSocket proxy in front of one honest worker: forwards every frame both ways and, while
 * `replays` > 0, sends each gradient frame of the worker twice (a replayed, otherwise valid
 * reply: the only way to make the coordinator see a true duplicate without forging a gradient).
 */
export class ReplayProxy {
  replays = 0;
  replayed = 0;
  private readonly server: WebSocketServer;

  private constructor(server: WebSocketServer) {
    this.server = server;
  }

  static async start(upstreamUrl: string, token: string): Promise<ReplayProxy> {
    const server = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      perMessageDeflate: false,
      maxPayload: 1024 * 1024 * 1024,
    });
    await once(server, 'listening');
    const proxy = new ReplayProxy(server);
    server.on('connection', (down) => {
      const up = new WebSocket(upstreamUrl, {
        perMessageDeflate: false,
        maxPayload: 1024 * 1024 * 1024,
        headers: { authorization: `Bearer ${token}` },
      });
      const pending: [Buffer, boolean][] = [];
      const closeWith = (ws: WebSocket, code: number, reason: Buffer): void => {
        if (ws.readyState === WebSocket.CLOSED || ws.readyState === WebSocket.CLOSING) return;
        if (ws.readyState !== WebSocket.OPEN) return ws.terminate();
        // 1005/1006 are not sendable; pass on the rest unchanged.
        if (code === 1005 || code === 1006) ws.terminate();
        else ws.close(code, reason);
      };
      up.on('open', () => {
        for (const [data, binary] of pending.splice(0)) up.send(data, { binary });
      });
      up.on('message', (data, binary) => {
        if (down.readyState === WebSocket.OPEN) down.send(toBuffer(data), { binary });
      });
      up.on('ping', (data) => {
        if (down.readyState === WebSocket.OPEN) down.ping(data);
      });
      down.on('message', (data, binary) => {
        const buf = toBuffer(data);
        let copies = 1;
        if (binary && proxy.replays > 0) {
          try {
            if (header(buf).type === 'gradient') {
              proxy.replays--;
              proxy.replayed++;
              copies = 2;
            }
          } catch {
            // not ours to judge
          }
        }
        for (let i = 0; i < copies; i++) {
          if (up.readyState === WebSocket.OPEN) up.send(buf, { binary });
          else pending.push([buf, binary]);
        }
      });
      up.on('close', (code, reason) => closeWith(down, code, reason));
      down.on('close', (code, reason) => closeWith(up, code, reason));
      up.on('error', () => down.terminate());
      down.on('error', () => up.terminate());
    });
    return proxy;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    for (const client of this.server.clients) client.terminate();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Values of a labelled counter in Prometheus text format, by the value of `label`. */
export function counters(text: string, name: string, label = 'reason'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\}\\s+(\\S+)`, 'gm'))) {
    const value = new RegExp(`${label}="([^"]*)"`).exec(m[1]!)?.[1];
    if (value !== undefined) out[value] = (out[value] ?? 0) + Number(m[2]);
  }
  return out;
}

/** An unlabelled sample's value (NaN when absent). */
export function sample(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}
