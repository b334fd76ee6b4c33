// Membership: the WebSocket server side of each worker. Runs the handshake (hello → welcome →
// ready), routes gradient frames to whoever listens, and reports joins and losses. The token
// is checked in the HTTP upgrade, so an unauthorized peer never gets a WebSocket.

import { EventEmitter } from 'node:events';
import type { Server as HttpServer, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { isAuthorized } from '../shared/auth.js';
import { decodeFrame, encodeFrame, FrameEncoder, type WireDtype } from '../shared/codec.js';
import { updateThroughput } from './split.js';
import { BatchlabError, closeCodeFor, describeError, ProtocolError } from '../shared/errors.js';
import { PROTOCOL_VERSION, type GradientMessage, type Message, type WelcomeMessage } from '../shared/protocol.js';

/** A connected worker. `ready` once it has loaded the data and model. */
export interface WorkerConnection {
  workerId: number;
  name: string;
  backend: string;
  device: string;
  maxChunk: number;
  ready: boolean;
  /** Step whose weights the worker holds (-1: none yet). */
  weightsStep: number;
  socket: WebSocket;
  /** host:port of the worker's /metrics endpoint, when it serves one. */
  metricsTarget: string | null;
  /** Date.now() of the last pong (or of the connection) and of the last ping sent. */
  lastPongMs: number;
  lastPingMs: number;
  /** Why the coordinator ended the connection, for the loss log line. */
  lostReason: string | null;
  /** Measured compute samples/s (EMA over micro-batch replies after the first); null until then. */
  samplesPerSecond: number | null;
  /** Its memory limit in micro-batches per step (hello); null: none. */
  maxMicroBatches: number | null;
  /** Gradient replies received (the first, with warm-up in it, is not measured). */
  replies: number;
}

export interface MembershipEvents {
  joined: [worker: WorkerConnection];
  lost: [worker: WorkerConnection, reason: string];
  gradient: [worker: WorkerConnection, message: GradientMessage, body: Float32Array];
  rejected: [reason: string, detail: string];
}

export interface MembershipOptions {
  token: string | null;
  /** Builds the welcome for a new worker id. */
  welcome: (workerId: number) => WelcomeMessage;
  datasetFingerprint: string;
  maxPayloadBytes: number;
  handshakeTimeoutMs: number;
  /** Ping every interval; two intervals without a pong and the worker is dead. */
  heartbeatIntervalMs: number;
  log: (line: string) => void;
  /** Counts frame bytes sent (`out`) and received (`in`). */
  onBytes?: (direction: 'in' | 'out', bytes: number) => void;
  /** Number format of weight bodies sent (gradients come back in the format the welcome names). */
  wireDtype?: WireDtype;
}

export class Membership extends EventEmitter<MembershipEvents> {
  readonly workers = new Map<number, WorkerConnection>();
  private readonly wss: WebSocketServer;
  /** Reuses model-sized frame buffers across steps and workers. */
  private readonly encoder: FrameEncoder;
  private nextWorkerId = 1;
  private closed = false;

  constructor(
    private readonly http: HttpServer,
    private readonly options: MembershipOptions,
  ) {
    super();
    this.encoder = new FrameEncoder(options.wireDtype ?? 'f32');
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: options.maxPayloadBytes });
    http.on('upgrade', this.onUpgrade);
    // Checked four times per interval, so a silent worker is found within 2.25 intervals.
    this.heartbeat = setInterval(() => this.beat(), options.heartbeatIntervalMs / 4);
    this.heartbeat.unref();
  }

  private readonly heartbeat: NodeJS.Timeout;

  /**
   * Terminates ready workers silent for two heartbeat intervals; pings each once per interval.
   * A worker still loading its data (before `ready`) may block its event loop for seconds on a
   * busy host; it holds no work, and the handshake timeout bounds that phase instead.
   */
  private beat(): void {
    const now = Date.now();
    const interval = this.options.heartbeatIntervalMs;
    for (const worker of this.workers.values()) {
      const silentMs = now - worker.lastPongMs;
      if (worker.ready && silentMs > 2 * interval) {
        worker.lostReason = `no pong for 2 heartbeats (${(silentMs / 1000).toFixed(1)} s silent)`;
        worker.socket.terminate();
        continue;
      }
      if (now - worker.lastPingMs >= interval && worker.socket.readyState === worker.socket.OPEN) {
        worker.lastPingMs = now;
        worker.socket.ping();
      }
    }
  }

  /** Live workers that finished the handshake, by ascending id (the split's order). */
  readyWorkers(): WorkerConnection[] {
    return [...this.workers.values()].filter((w) => w.ready).sort((a, b) => a.workerId - b.workerId);
  }

  /** Sends one frame; false when the socket is gone. `bodyKey`: see `FrameEncoder.encode`. */
  send(worker: WorkerConnection, message: Message, body: Float32Array | null = null, bodyKey?: number): boolean {
    if (worker.socket.readyState !== worker.socket.OPEN) return false;
    const frame = this.encoder.encode(message, body, bodyKey);
    this.options.onBytes?.('out', frame.bytes.length);
    // The buffer goes back to the pool once ws has handed it to the kernel (or failed to).
    worker.socket.send(frame.bytes, { binary: true }, () => frame.release());
    return true;
  }

  /** Tells every worker to exit, then closes all sockets and the server. Idempotent. */
  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    this.http.off('upgrade', this.onUpgrade);
    const closing = [...this.workers.values()].map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.socket.readyState === w.socket.CLOSED) return resolve();
          const timer = setTimeout(() => {
            w.socket.terminate();
            resolve();
          }, 2000);
          w.socket.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          this.send(w, { type: 'shutdown', reason });
          w.socket.close(1000, reason.slice(0, 120));
        }),
    );
    await Promise.all(closing);
    this.wss.close();
  }

  private readonly onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (this.closed || (this.options.token !== null && !isAuthorized(request, this.options.token))) {
      const from = request.socket.remoteAddress ?? 'an unknown address';
      const why = this.closed ? '503 Service Unavailable' : '401 Unauthorized';
      socket.write(`HTTP/1.1 ${why}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroy();
      if (!this.closed) {
        this.options.log(`refused a connection from ${from}: missing or wrong token`);
        this.emit('rejected', 'auth', from);
      }
      return;
    }
    this.wss.handleUpgrade(request, socket, head, (ws) => this.onConnection(ws, request.socket.remoteAddress ?? ''));
  };

  private onConnection(socket: WebSocket, remoteAddress: string): void {
    const workerId = this.nextWorkerId++;
    let worker: WorkerConnection | null = null;
    // After a bad frame the connection is closing: nothing more it sends is believed.
    let dropped = false;
    const handshakeTimer = setTimeout(() => this.drop(socket, new ProtocolError('BAD_MESSAGE', `no hello/ready within ${this.options.handshakeTimeoutMs} ms`)), this.options.handshakeTimeoutMs);

    socket.on('message', (data: Buffer, isBinary: boolean) => {
      this.options.onBytes?.('in', data.length);
      if (dropped) return;
      // Any frame is a sign of life, as good as a pong.
      if (worker) worker.lastPongMs = Date.now();
      try {
        if (!isBinary) throw new ProtocolError('BAD_FRAME', 'text frame; batchlab speaks binary frames only');
        const { message, body } = decodeFrame(data);
        if (!worker) {
          if (message.type !== 'hello') throw new ProtocolError('BAD_MESSAGE', `expected hello first, got ${message.type}`);
          if (message.protocolVersion !== PROTOCOL_VERSION) {
            throw new ProtocolError('VERSION_MISMATCH', `worker speaks protocol ${message.protocolVersion}, coordinator ${PROTOCOL_VERSION}: run the same batchlab version on both`);
          }
          const host = remoteAddress.replace(/^::ffff:/, '');
          const metricsTarget = message.metricsPort ? `${host.includes(':') ? `[${host}]` : host}:${message.metricsPort}` : null;
          worker = { workerId, name: message.workerName, backend: message.backend, device: message.device, maxChunk: message.maxChunk, ready: false, weightsStep: -1, socket, metricsTarget, lastPongMs: Date.now(), lastPingMs: 0, lostReason: null, samplesPerSecond: null, maxMicroBatches: message.maxMicroBatches ?? null, replies: 0 };
          this.workers.set(workerId, worker);
          this.send(worker, this.options.welcome(workerId));
          return;
        }
        if (message.type === 'ready' && !worker.ready) {
          if (message.datasetFingerprint !== this.options.datasetFingerprint) {
            throw new ProtocolError('DATASET_MISMATCH', `worker loaded data with fingerprint ${message.datasetFingerprint}, coordinator has ${this.options.datasetFingerprint}: give both the same dataset files (--data-dir)`);
          }
          clearTimeout(handshakeTimer);
          worker.ready = true;
          this.options.log(`worker ${workerId} joined (${worker.name}, backend ${worker.backend}, device ${worker.device})`);
          this.emitSafely('joined', worker);
          return;
        }
        if (message.type === 'gradient' && worker.ready) {
          worker.replies++;
          if (worker.replies > 1) worker.samplesPerSecond = updateThroughput(worker.samplesPerSecond, message.samples, message.computeMs);
          // Between steps (evaluation, a checkpoint write) no round listens: the reply is late.
          if (this.listenerCount('gradient') === 0) this.emit('rejected', 'stale_step', `worker ${workerId}: reply for step ${message.step} between steps`);
          else this.emitSafely('gradient', worker, message, body!);
          return;
        }
        if (message.type === 'error') {
          this.options.log(`worker ${workerId} (${worker.name}) reported [${message.code}] ${message.message}`);
          return;
        }
        throw new ProtocolError('BAD_MESSAGE', `unexpected ${message.type} from worker ${workerId} (ready: ${worker.ready})`);
      } catch (error) {
        dropped = true;
        this.drop(socket, error);
      }
    });

    socket.on('pong', () => {
      if (worker) worker.lastPongMs = Date.now();
    });
    socket.on('close', (code, reason) => {
      clearTimeout(handshakeTimer);
      if (!worker) return;
      this.workers.delete(workerId);
      if (!this.closed) {
        const why = worker.lostReason ?? `connection closed (code ${code}${reason.length ? `, ${reason.toString()}` : ''})`;
        if (worker.ready) this.options.log(`worker ${workerId} (${worker.name}) lost: ${why}`);
        this.emitSafely('lost', worker, why);
      }
    });
    socket.on('error', (error) => {
      const code = (error as { code?: string }).code;
      if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        // ws has already closed with 1009; count it like any other bad frame.
        this.options.log(`worker ${workerId}: frame larger than the ${this.options.maxPayloadBytes}-byte limit; connection closed (1009)`);
        this.emit('rejected', 'bad_frame', `worker ${workerId}: oversized frame`);
        return;
      }
      this.options.log(`worker ${workerId} socket error: ${error.message}`);
    });
  }

  /** Emits to the coordinator's own listeners; their failure is a coordinator bug, not the worker's. */
  private emitSafely<K extends keyof MembershipEvents>(event: K, ...args: MembershipEvents[K]): void {
    try {
      this.emit(event, ...(args as never));
    } catch (error) {
      this.options.log(`internal error while handling ${String(event)}: ${describeError(error)}`);
    }
  }

  /** Tells the peer why, counts it, and closes with the error's close code. */
  private drop(socket: WebSocket, error: unknown): void {
    const code = error instanceof BatchlabError ? error.code : 'BAD_MESSAGE';
    this.options.log(`closing a worker connection: ${describeError(error)}`);
    this.emit('rejected', code === 'BAD_FRAME' || code === 'BAD_MESSAGE' ? 'bad_frame' : code.toLowerCase(), describeError(error));
    if (socket.readyState === socket.OPEN) {
      socket.send(encodeFrame({ type: 'error', code, message: (error as Error).message ?? String(error) }), { binary: true });
      socket.close(closeCodeFor(code), code);
    }
  }
}
