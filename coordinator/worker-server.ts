// The WebSocket side of membership: checks the token in the HTTP upgrade (so an unauthorized
// peer never gets a WebSocket), runs the handshake (hello → welcome → ready), pings, and turns
// frames into membership events. A bad frame closes its connection with the error's close code.

import type { Server as HttpServer, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { isAuthorized, refuseUpgrade } from '../shared/auth.js';
import { decodeFrame, encodeFrame, FrameEncoder, type WireDtype } from '../shared/codec.js';
import { BatchlabError, closeCodeFor, describeError, ProtocolError } from '../shared/errors.js';
import { PROTOCOL_VERSION, type HelloMessage, type Message, type WelcomeMessage } from '../shared/protocol.js';
import { rejectReasonForError } from '../shared/reasons.js';
import type { Membership, ReducerReply } from './membership.js';
import { PendingConnections, type PendingLimits, type PendingRefusal } from './pending-connections.js';
import type { WorkerChannel } from './worker-channel.js';
import { shutdownMessage, shutdownSocket, WebSocketChannel } from './websocket-channel.js';

export interface WorkerServerOptions {
  token: string | null;
  /** Builds the welcome for a new worker id. */
  welcome: (workerId: number) => WelcomeMessage;
  /** Throws a BatchlabError when a worker that says `hello` cannot take part in this run (its settings). */
  checkWorker?: (hello: HelloMessage) => void;
  datasetFingerprint: string;
  maxPayloadBytes: number;
  /** From hello to ready: the worker loads its dataset and model in between (no limit for --max-chunk auto). */
  handshakeTimeoutMs: number;
  /** Deadline and caps for connections before their hello (see pending-connections.ts). */
  pending: PendingLimits;
  /** Ping every interval; two intervals without a pong and the worker is dead. */
  heartbeatIntervalMs: number;
  log: (line: string) => void;
  /** Counts frame bytes sent (`out`) and received (`in`). */
  onBytes?: (direction: 'in' | 'out', bytes: number) => void;
  /** Number format of weight bodies sent (gradients come back in the format the welcome names). */
  wireDtype?: WireDtype;
}

/** One connection from upgrade to close: the channel exists once `hello` has arrived. */
interface Connection {
  workerId: number;
  socket: WebSocket;
  remoteAddress: string;
  remotePort: number | undefined;
  channel: WebSocketChannel | null;
  ready: boolean;
  /** After a bad frame the connection is closing: nothing more it sends is believed. */
  dropped: boolean;
  /** It reported OUT_OF_MEMORY: the run no longer waits for it. */
  departed: boolean;
  handshakeTimer: NodeJS.Timeout;
}

export class WorkerServer {
  private readonly wss: WebSocketServer;
  /** Reuses model-sized frame buffers across steps and workers. */
  private readonly encoder: FrameEncoder;
  private readonly connections = new Set<Connection>();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly pending: PendingConnections;
  /** Connections closed before hello since the last log line about them, by reason. */
  private readonly unlogged = new Map<PendingRefusal, number>();
  private lastRefusalLogMs = 0;
  private nextWorkerId = 1;
  private closed = false;

  constructor(
    private readonly http: HttpServer,
    private readonly membership: Membership,
    private readonly options: WorkerServerOptions,
  ) {
    this.encoder = new FrameEncoder(options.wireDtype ?? 'f32');
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: options.maxPayloadBytes });
    http.on('upgrade', this.onUpgrade);
    this.pending = new PendingConnections(http, options.pending, (reason, address) => this.onRefused(reason, address));
    // Checked four times per interval, so a silent worker is found within 2.25 intervals.
    this.heartbeat = setInterval(() => this.beat(), options.heartbeatIntervalMs / 4);
    this.heartbeat.unref();
  }

  /** Tells every worker (joined or still loading) to exit, then closes the server. Idempotent. */
  async close(reason: string, code?: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    this.http.off('upgrade', this.onUpgrade);
    this.pending.close();
    // One snapshot: a worker still loading is told too, and one whose `ready` arrives from now on
    // is not joined (frames are ignored once closed).
    const pending = [...this.connections].filter((c) => !c.ready);
    await Promise.all([
      this.membership.close(reason, code),
      ...pending.map((c) =>
        shutdownSocket(c.socket, reason, () => this.sendRaw(c.socket, shutdownMessage(reason, code))),
      ),
    ]);
    this.wss.close();
  }

  /**
   * Terminates ready workers silent for two heartbeat intervals; pings each once per interval.
   * A worker still loading its data (before `ready`) may block its event loop for seconds on a
   * busy host; it holds no work, and the handshake timeout bounds that phase instead.
   */
  private beat(): void {
    const now = Date.now();
    const interval = this.options.heartbeatIntervalMs;
    for (const { channel, ready, socket } of this.connections) {
      if (!channel) continue;
      const silentMs = now - channel.lastHeardMs;
      if (ready && silentMs > 2 * interval) {
        channel.terminate(`no pong for 2 heartbeats (${(silentMs / 1000).toFixed(1)} s silent)`);
      } else if (now - channel.lastPingMs >= interval && channel.isOpen) {
        channel.lastPingMs = now;
        socket.ping();
      }
    }
  }

  private readonly onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (this.closed || (this.options.token !== null && !isAuthorized(request, this.options.token))) {
      const from = request.socket.remoteAddress ?? 'an unknown address';
      const why = this.closed ? '503 Service Unavailable' : '401 Unauthorized';
      refuseUpgrade(socket, why);
      if (!this.closed) {
        this.options.log(`refused a connection from ${from}: missing or wrong token`);
        this.membership.reject('auth', from);
      }
      return;
    }
    this.wss.handleUpgrade(request, socket, head, (ws) =>
      this.accept(ws, request.socket.remoteAddress ?? '', request.socket.remotePort),
    );
  };

  /**
   * Counts a connection closed before its hello. A flood makes hundreds a second: one log line
   * at most every 10 s says how many, and why.
   */
  private onRefused(reason: PendingRefusal, address: string): void {
    const { maxPending, maxPendingPerAddress, helloTimeoutMs } = this.options.pending;
    this.membership.reject(reason, `connection from ${address || 'an unknown address'} before hello`);
    this.unlogged.set(reason, (this.unlogged.get(reason) ?? 0) + 1);
    const now = Date.now();
    if (now - this.lastRefusalLogMs < 10_000) return;
    this.lastRefusalLogMs = now;
    const counts = [...this.unlogged].map(([why, n]) => `${n} ${why}`).join(', ');
    this.unlogged.clear();
    this.options.log(
      `closed connections before hello (${counts}; last from ${address || 'an unknown address'}): at most ${maxPending} may wait, ${maxPendingPerAddress} per address, ${helloTimeoutMs / 1000} s each`,
    );
  }

  private accept(socket: WebSocket, remoteAddress: string, remotePort: number | undefined): void {
    const workerId = this.nextWorkerId++;
    const timeoutMs = this.options.handshakeTimeoutMs;
    const connection: Connection = {
      workerId,
      socket,
      remoteAddress,
      remotePort,
      channel: null,
      ready: false,
      dropped: false,
      departed: false,
      handshakeTimer: setTimeout(() => {
        connection.dropped = true;
        this.drop(connection, new ProtocolError('BAD_MESSAGE', `no ready within ${timeoutMs} ms`));
      }, timeoutMs),
    };
    this.connections.add(connection);
    socket.on('message', (data: Buffer, isBinary: boolean) => this.onFrame(connection, data, isBinary));
    socket.on('pong', () => {
      if (connection.channel) connection.channel.lastHeardMs = Date.now();
    });
    socket.on('close', (code, reason) => this.onClose(connection, code, reason));
    socket.on('error', (error) => this.onSocketError(connection, error));
  }

  private onFrame(connection: Connection, data: Buffer, isBinary: boolean): void {
    this.options.onBytes?.('in', data.length);
    if (connection.dropped || this.closed) return;
    // Any frame is a sign of life, as good as a pong.
    if (connection.channel) connection.channel.lastHeardMs = Date.now();
    try {
      if (!isBinary) throw new ProtocolError('BAD_FRAME', 'text frame; batchlab speaks binary frames only');
      const { message, body } = decodeFrame(data);
      this.onMessage(connection, message, body);
    } catch (error) {
      connection.dropped = true;
      this.drop(connection, error);
    }
  }

  private onMessage(connection: Connection, message: Message, body: Float32Array | null): void {
    const { channel, workerId } = connection;
    if (!channel) return this.onHello(connection, message);
    if (message.type === 'ready' && !connection.ready) {
      if (message.datasetFingerprint !== this.options.datasetFingerprint) {
        throw new ProtocolError(
          'DATASET_MISMATCH',
          `worker loaded data with fingerprint ${message.datasetFingerprint}, coordinator has ${this.options.datasetFingerprint}: give both the same dataset files (--data-dir)`,
        );
      }
      clearTimeout(connection.handshakeTimer);
      connection.ready = true;
      // --max-chunk auto: the chunk it probed, now that it knows the run's model.
      if (message.maxChunk !== undefined) channel.info.maxChunk = message.maxChunk;
      const { name, backend, device, maxChunk } = channel.info;
      this.options.log(
        `worker ${workerId} joined (${name}, backend ${backend}, device ${device}, max chunk ${maxChunk})`,
      );
      this.membership.join(channel);
    } else if (message.type === 'gradient' && connection.ready) {
      this.membership.receive(channel, message, body);
    } else if (isReducerReply(message) && connection.ready) {
      this.membership.receiveReducerReply(channel, message, body);
    } else if (message.type === 'error') {
      this.options.log(`worker ${workerId} (${channel.info.name}) reported [${message.code}] ${message.message}`);
      // It cannot work in this run and leaves (it said hello: it was one the run counts on).
      if (message.code === 'OUT_OF_MEMORY' && !connection.departed) {
        connection.departed = true;
        this.membership.departForGood();
      }
    } else {
      throw new ProtocolError(
        'BAD_MESSAGE',
        `unexpected ${message.type} from worker ${workerId} (ready: ${connection.ready})`,
      );
    }
  }

  private onHello(connection: Connection, message: Message): void {
    if (message.type !== 'hello') throw new ProtocolError('BAD_MESSAGE', `expected hello first, got ${message.type}`);
    if (message.protocolVersion !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        'VERSION_MISMATCH',
        `worker speaks protocol ${message.protocolVersion}, coordinator ${PROTOCOL_VERSION}: run the same batchlab version on both`,
      );
    }
    this.options.checkWorker?.(message);
    // Past hello (and the token, checked at the upgrade): the pre-hello deadline and caps no
    // longer apply; the handshake timeout bounds loading the data until `ready`.
    this.pending.admit(connection.remoteAddress, connection.remotePort);
    const info = workerInfoOf(message, connection.remoteAddress);
    const onBytesOut = (bytes: number): void => this.options.onBytes?.('out', bytes);
    connection.channel = new WebSocketChannel(connection.workerId, info, connection.socket, this.encoder, onBytesOut);
    connection.channel.send(this.options.welcome(connection.workerId));
    // --max-chunk auto (0): before `ready` the worker probes its memory, computing micro-batches,
    // each in one blocking pass for a batch-norm model, so neither a deadline nor heartbeats can
    // bound it. It holds no work meanwhile; a worker that dies closes its socket.
    if (message.maxChunk === 0) clearTimeout(connection.handshakeTimer);
  }

  private onClose(connection: Connection, code: number, reason: Buffer): void {
    clearTimeout(connection.handshakeTimer);
    this.connections.delete(connection);
    const { channel } = connection;
    if (!channel || !connection.ready) return;
    const why =
      channel.lostReason ?? `connection closed (code ${code}${reason.length ? `, ${reason.toString()}` : ''})`;
    // After close every worker leaves: that is the end of the run, not a loss.
    if (!this.closed) this.options.log(`worker ${connection.workerId} (${channel.info.name}) lost: ${why}`);
    this.membership.leave(channel, why);
  }

  private onSocketError(connection: Connection, error: Error): void {
    const code = (error as { code?: string }).code;
    if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      // ws has already closed with 1009; count it like any other bad frame.
      this.options.log(
        `worker ${connection.workerId}: frame larger than the ${this.options.maxPayloadBytes}-byte limit; connection closed (1009)`,
      );
      this.membership.reject('bad_frame', `worker ${connection.workerId}: oversized frame`);
      return;
    }
    this.options.log(`worker ${connection.workerId} socket error: ${error.message}`);
  }

  /** Tells the peer why, counts it, and closes with the error's close code. */
  private drop(connection: Connection, error: unknown): void {
    const code = error instanceof BatchlabError ? error.code : 'BAD_MESSAGE';
    this.options.log(`closing a worker connection: ${describeError(error)}`);
    this.membership.reject(rejectReasonForError(code), describeError(error));
    const { socket } = connection;
    if (socket.readyState === socket.OPEN) {
      this.sendRaw(socket, { type: 'error', code, message: (error as Error).message ?? String(error) });
      socket.close(closeCodeFor(code), code);
    }
  }

  /** A frame outside any channel (before hello, or to a connection being dropped). */
  private sendRaw(socket: WebSocket, message: Message): void {
    if (socket.readyState === socket.OPEN) socket.send(encodeFrame(message), { binary: true });
  }
}

function isReducerReply(message: Message): message is ReducerReply {
  return message.type === 'reduced' || message.type === 'state' || message.type === 'probe-result';
}

/** The worker's self-description; its metrics address is the one this connection came from. */
function workerInfoOf(hello: HelloMessage, remoteAddress: string): WorkerChannel['info'] {
  const host = remoteAddress.replace(/^::ffff:/, '');
  const metricsTarget = hello.metricsPort ? `${host.includes(':') ? `[${host}]` : host}:${hello.metricsPort}` : null;
  return {
    name: hello.workerName,
    backend: hello.backend,
    device: hello.device,
    maxChunk: hello.maxChunk,
    metricsTarget,
    maxMicroBatches: hello.maxMicroBatches ?? null,
    peerAddress: hello.peerAddress ?? null,
  };
}
