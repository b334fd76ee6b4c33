// Transport benchmark: batchlab's frames over WebSocket against raw TCP on the same loopback, in
// the same run. A sink *process* receives both (so sender and receiver do not share a core's
// event loop), acknowledges each whole message with one byte, and the sender keeps one message
// in flight, as a worker does with gradients. Rounds alternate raw / ws so machine noise hits
// both alike (the ratio is the median of each adjacent pair's); ws with a random mask is measured after.
//
// Standalone: node dist/bench/transport.js [--quick]

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import WebSocket, { WebSocketServer } from 'ws';
import { decodeFrame, FrameEncoder } from '../shared/codec.js';
import { zeroMask } from '../shared/transport.js';
import { median } from './support.js';

export interface TransportPoint {
  /** Bytes per message (the float32 body; frames add a small header). */
  messageBytes: number;
  rawTcpBytesPerSecond: number;
  /** batchlab's frames over ws with the all-zero client mask (the loopback default). */
  wsBytesPerSecond: number;
  /** Same with ws's default random mask (what a plain ws:// network path uses); its rounds run after the paired ones. */
  wsRandomMaskBytesPerSecond: number;
  /** Median of `roundRatios`. */
  ratio: number;
  /** ws ÷ raw TCP for each pair of adjacent rounds, in the order they ran. */
  roundRatios: number[];
  /** wsRandomMaskBytesPerSecond ÷ rawTcpBytesPerSecond: medians of unpaired rounds, so noisier than `ratio`. */
  randomMaskRatio: number;
}

export interface TransportResult extends TransportPoint {
  points: TransportPoint[];
  bufferutil: boolean;
  /** Median round trip of a small batchlab frame over ws and its 1-byte acknowledgement (seconds). */
  wsRoundTripSeconds: number;
}

const SELF = fileURLToPath(import.meta.url);

/** The receiving side, run in a child process: prints its two ports, then serves until stdin closes. */
async function runSink(): Promise<void> {
  const raw = createServer((socket) => {
    let pending: Buffer[] = [];
    let have = 0;
    let need = -1;
    socket.on('data', (chunk: Buffer) => {
      pending.push(chunk);
      have += chunk.length;
      for (;;) {
        if (need < 0) {
          if (have < 4) return;
          const head = Buffer.concat(pending);
          pending = [head];
          need = head.readUInt32LE(0) + 4;
        }
        if (have < need) return;
        // One whole message: drop it, keep what follows, acknowledge.
        const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
        const rest = all.subarray(need);
        pending = rest.length ? [rest] : [];
        have = rest.length;
        need = -1;
        socket.write(ACK);
      }
    });
    socket.on('error', () => {});
  });
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false, maxPayload: 1 << 30 });
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const { body } = decodeFrame(data);
      ws.send(ACK, { binary: true });
      if (!body) throw new Error('frame without body');
    });
  });
  raw.listen(0, '127.0.0.1');
  await Promise.all([once(raw, 'listening'), once(wss, 'listening')]);
  const rawPort = (raw.address() as { port: number }).port;
  const wsPort = (wss.address() as { port: number }).port;
  process.stdout.write(`${JSON.stringify({ rawPort, wsPort })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

const ACK = Buffer.from([1]);

/** Sends `count` messages of `bytes` over raw TCP, one in flight; returns bytes/s. */
async function rawRound(socket: Socket, payload: Buffer, count: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const acked = once(socket, 'data');
    socket.write(payload);
    await acked;
  }
  return ((payload.length - 4) * count) / ((performance.now() - t0) / 1000);
}

/**
 * Same over ws with batchlab frames, as a worker sends gradients: a pooled frame whose body the
 * gradient was computed into (`FrameEncoder.bodyFrame`), sealed with its header. Computing the
 * gradient is not transport, so the body is filled only when `fill` is set (the warm-up, which
 * fills every pooled buffer; the pool then hands the same buffers back).
 */
async function wsRound(
  ws: WebSocket,
  encoder: FrameEncoder,
  body: Float32Array,
  count: number,
  fill = false,
): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const acked = once(ws, 'message');
    const frame = encoder.bodyFrame(body.length);
    if (fill) frame.body.set(body);
    const sealed = frame.seal({
      type: 'gradient',
      step: i,
      microBatchId: 0,
      samples: 1,
      lossSum: 0,
      correct: 0,
      computeMs: 1,
      sqNorm: 0,
    });
    ws.send(sealed.bytes, { binary: true }, () => sealed.release());
    await acked;
  }
  return (body.byteLength * count) / ((performance.now() - t0) / 1000);
}

async function hasBufferutil(): Promise<boolean> {
  if (process.env.WS_NO_BUFFER_UTIL) return false;
  try {
    // A variable specifier: bufferutil ships no types and is optional.
    const name = 'bufferutil';
    await import(name);
    return true;
  } catch {
    return false;
  }
}

/** Measures raw TCP and ws throughput for each message size, side by side. */
export async function benchTransport(options: { quick: boolean; messageBytes?: number[] }): Promise<TransportResult> {
  const sizes = options.messageBytes ?? [940_000, 20_000_000];
  const sink = spawn(process.execPath, [SELF, '--sink'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(createInterface({ input: sink.stdout }), 'line')) as [string];
    const { rawPort, wsPort } = JSON.parse(line) as { rawPort: number; wsPort: number };
    const socket = createConnection({ port: rawPort, host: '127.0.0.1', noDelay: true });
    await once(socket, 'connect');
    const open = async (mask: boolean): Promise<WebSocket> => {
      const ws = new WebSocket(`ws://127.0.0.1:${wsPort}`, {
        perMessageDeflate: false,
        maxPayload: 1 << 30,
        ...(mask ? {} : { generateMask: zeroMask }),
      });
      await once(ws, 'open');
      return ws;
    };
    const zero = await open(false);
    const random = await open(true);
    const encoder = new FrameEncoder('f32');
    const points: TransportPoint[] = [];
    for (const bytes of sizes) {
      const body = new Float32Array(Math.floor(bytes / 4)).map((_, i) => Math.sin(i));
      const payload = Buffer.alloc(4 + body.byteLength);
      payload.writeUInt32LE(body.byteLength, 0);
      Buffer.from(body.buffer).copy(payload, 4);
      // Short rounds, many of them, alternating: about 0.08 s (quick) or 0.4 s of traffic per
      // round at ~1 GB/s. The ratio is the median of each adjacent pair's ratio, so a slow spell
      // on this shared machine hits both sides of a pair instead of one side of the comparison.
      const count = Math.max(3, Math.round((options.quick ? 0.08e9 : 0.4e9) / bytes));
      const rounds = options.quick ? 6 : 10;
      const raw: number[] = [];
      const ws: number[] = [];
      const wsRandom: number[] = [];
      // Warm-up: JIT, TCP buffer autotuning and the frame pool all take a few dozen messages;
      // without it the first connection measured looks several times slower than it is
      // (0.25 GB under --quick is enough for that; 0.5 GB otherwise).
      const warm = Math.max(8, Math.round((options.quick ? 0.25e9 : 0.5e9) / bytes));
      await rawRound(socket, payload, warm);
      await wsRound(zero, encoder, body, warm, true);
      // Within a pair the order alternates (raw first, then ws first), so drift over the run
      // does not always land on the same side.
      for (let r = 0; r < rounds; r++) {
        if (r % 2 === 0) {
          raw.push(await rawRound(socket, payload, count));
          ws.push(await wsRound(zero, encoder, body, count));
        } else {
          ws.push(await wsRound(zero, encoder, body, count));
          raw.push(await rawRound(socket, payload, count));
        }
      }
      // The random mask makes ws allocate a masked copy of every frame on both ends; its rounds
      // come after, so that garbage does not land on the rounds compared above.
      await wsRound(random, encoder, body, warm, true);
      for (let r = 0; r < rounds; r++) wsRandom.push(await wsRound(random, encoder, body, count));
      const roundRatios = ws.map((w, r) => w / raw[r]!);
      const rawTcpBytesPerSecond = median(raw);
      const wsBytesPerSecond = median(ws);
      const wsRandomMaskBytesPerSecond = median(wsRandom);
      points.push({
        messageBytes: body.byteLength,
        rawTcpBytesPerSecond,
        wsBytesPerSecond,
        wsRandomMaskBytesPerSecond,
        ratio: median(roundRatios),
        roundRatios,
        randomMaskRatio: wsRandomMaskBytesPerSecond / rawTcpBytesPerSecond,
      });
    }
    // Latency: small frames (a control message's size), one at a time.
    const tiny = new Float32Array(16);
    await wsRound(zero, encoder, tiny, 20, true);
    const trips: number[] = [];
    for (let i = 0; i < (options.quick ? 200 : 1000); i++) {
      const t0 = performance.now();
      await wsRound(zero, encoder, tiny, 1, true);
      trips.push((performance.now() - t0) / 1000);
    }
    socket.destroy();
    zero.terminate();
    random.terminate();
    // The headline is the largest message: a model-sized gradient (20 MB = 5M float32 parameters).
    return {
      ...points[points.length - 1]!,
      points,
      bufferutil: await hasBufferutil(),
      wsRoundTripSeconds: median(trips),
    };
  } finally {
    sink.stdin.end();
    sink.kill();
  }
}

if (process.argv[1] === SELF) {
  if (process.argv.includes('--sink')) {
    await runSink();
  } else {
    const result = await benchTransport({ quick: process.argv.includes('--quick') });
    for (const p of result.points) {
      console.log(
        `${(p.messageBytes / 1e6).toFixed(2)} MB: raw TCP ${(p.rawTcpBytesPerSecond / 1e9).toFixed(3)} GB/s, ws zero mask ${(p.wsBytesPerSecond / 1e9).toFixed(3)} GB/s (${p.ratio.toFixed(3)}), ws random mask ${(p.wsRandomMaskBytesPerSecond / 1e9).toFixed(3)} GB/s (${p.randomMaskRatio.toFixed(3)})`,
      );
    }
    console.log(
      `bufferutil: ${result.bufferutil}; small-frame round trip ${(result.wsRoundTripSeconds * 1e6).toFixed(0)} µs`,
    );
  }
}
