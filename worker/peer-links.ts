// The WebSocket links between workers that the sharded reducer's frames travel on. Each worker
// runs a peer server (the token is checked in the HTTP upgrade, as the coordinator does) and
// opens one outgoing link per peer; a worker sends only on its outgoing links and receives only
// on incoming ones. The first frame on a link is `peer-hello` naming the run and the sender;
// after that only `slice` and `shard` frames are accepted, each validated like any other frame.

import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { authorizationHeader, isAuthorized, refuseUpgrade } from '../shared/auth.js';
import { decodeFrame, encodeFrame, FrameEncoder } from '../shared/codec.js';
import { BatchlabError, closeCodeFor, ProtocolError } from '../shared/errors.js';
import {
  PROTOCOL_VERSION,
  type Message,
  type PeerSpec,
  type ShardMessage,
  type SliceMessage,
} from '../shared/protocol.js';
import { rejectReasonForError, type RejectReason } from '../shared/reasons.js';
import { useZeroMask, zeroMask, type ClientMask } from '../shared/transport.js';

/** What a peer server hands on: a slice or shard frame from worker `from`; returns why it is refused, or null. */
export type PeerFrameHandler = (
  from: number,
  message: SliceMessage | ShardMessage,
  body: Float32Array,
) => RejectReason | null;

export interface PeerLinksOptions {
  token: string | null;
  /** PEM files of this worker's peer server: it serves wss:// (and advertises it). */
  tls?: { cert: string; key: string };
  /** PEM certificates to trust for peers' wss:// (the worker's --ca). */
  ca?: string;
  clientMask: ClientMask;
  /** Counts refused frames and connections. */
  onReject: (reason: RejectReason, detail: string) => void;
  /** Counts bytes per peer and direction, and send seconds. */
  onBytes: (peer: number, direction: 'in' | 'out', bytes: number) => void;
  onSendSeconds: (peer: number, seconds: number) => void;
  log: (line: string) => void;
}

/** A link this worker sends on; frames wait in `queue` until it is open and greeted. */
interface OutgoingLink {
  address: string;
  socket: WebSocket;
  queue: { frame: Buffer; done: (error?: Error) => void }[] | null;
}

/** The run the links belong to, known once the welcome has arrived. */
interface RunBinding {
  runId: string;
  workerId: number;
  maxPayloadBytes: number;
  handler: PeerFrameHandler;
}

export class PeerLinks {
  private readonly http: Server;
  private wss: WebSocketServer | null = null;
  private run: RunBinding | null = null;
  private readonly outgoing = new Map<number, OutgoingLink>();
  private readonly incoming = new Set<WebSocket>();
  private readonly encoder = new FrameEncoder('f32');

  private constructor(
    private readonly options: PeerLinksOptions,
    readonly port: number,
    http: Server,
    private readonly ca: Buffer | undefined,
  ) {
    this.http = http;
    http.on('upgrade', this.onUpgrade);
  }

  /** Starts the peer server on `host:port` (0: any free port); wss:// when `options.tls` is given. */
  static async listen(host: string, port: number, options: PeerLinksOptions): Promise<PeerLinks> {
    const answer = (_req: IncomingMessage, res: ServerResponse): void => {
      res.statusCode = 426;
      res.end('batchlab worker peer link: WebSocket only\n');
    };
    const http = options.tls
      ? createHttpsServer({ cert: await readFile(options.tls.cert), key: await readFile(options.tls.key) }, answer)
      : createServer(answer);
    const ca = options.ca ? await readFile(options.ca) : undefined;
    const bound = await new Promise<number>((resolve, reject) => {
      http.once('error', reject);
      http.listen(port, host, () => resolve((http.address() as AddressInfo).port));
    });
    return new PeerLinks(options, bound, http, ca);
  }

  /** How peers reach this server: `wss://host:port` with TLS, else `host:port`. */
  addressFor(host: string): string {
    const hostPort = `${host.includes(':') ? `[${host}]` : host}:${this.port}`;
    return this.options.tls ? `wss://${hostPort}` : hostPort;
  }

  /** Accepts frames of run `runId` from now on; links of an earlier run are closed. */
  bind(runId: string, workerId: number, paramCount: number, handler: PeerFrameHandler): void {
    if (this.run && (this.run.runId !== runId || this.run.workerId !== workerId)) this.closeLinks();
    const maxPayloadBytes = paramCount * 4 + 16 * 1024 * 1024;
    if (!this.wss || this.run?.maxPayloadBytes !== maxPayloadBytes) {
      this.wss?.close();
      this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: maxPayloadBytes });
    }
    this.run = { runId, workerId, maxPayloadBytes, handler };
  }

  /** Sends one frame to `peer` on this worker's outgoing link, opening it on first use. */
  send(peer: PeerSpec, message: Message, body: Float32Array | null): void {
    const link = this.linkTo(peer);
    // Slices and shards are encoded into reused buffers, as the coordinator's frames are.
    const pooled = this.encoder.encode(message, body);
    const frame = pooled.bytes;
    this.options.onBytes(peer.workerId, 'out', frame.length);
    const t0 = performance.now();
    const done = (error?: Error): void => {
      pooled.release();
      if (!error) this.options.onSendSeconds(peer.workerId, (performance.now() - t0) / 1000);
    };
    if (link.queue) link.queue.push({ frame, done });
    else if (link.socket.readyState === WebSocket.OPEN) link.socket.send(frame, { binary: true }, done);
    else pooled.release();
  }

  /** Opens links to `peers` that have none and waits until each is open; returns those that failed, with why. */
  async probe(peers: readonly PeerSpec[], timeoutMs: number): Promise<{ workerId: number; why: string }[]> {
    const results = await Promise.all(
      peers.map(async (peer) => {
        const why = await waitOpen(this.linkTo(peer).socket, timeoutMs);
        return why === null ? null : { workerId: peer.workerId, why: `${peer.address}: ${why}` };
      }),
    );
    return results.filter((r): r is { workerId: number; why: string } => r !== null);
  }

  /** Closes every link (the server keeps listening). */
  closeLinks(): void {
    for (const { socket } of this.outgoing.values()) socket.terminate();
    this.outgoing.clear();
    for (const socket of this.incoming) socket.terminate();
    this.incoming.clear();
  }

  async close(): Promise<void> {
    this.closeLinks();
    this.wss?.close();
    this.http.off('upgrade', this.onUpgrade);
    await new Promise<void>((resolve) => {
      this.http.closeAllConnections();
      this.http.close(() => resolve());
    });
  }

  /** The outgoing link to `peer`, opened (and greeted) when there is none or its address changed. */
  private linkTo(peer: PeerSpec): OutgoingLink {
    const known = this.outgoing.get(peer.workerId);
    if (known && known.address === peer.address && known.socket.readyState <= WebSocket.OPEN) return known;
    known?.socket.terminate();
    const run = this.run;
    if (!run) throw new ProtocolError('BAD_MESSAGE', 'peer link opened before the welcome');
    // A peer with a TLS server advertises wss://host:port; a plain one host:port.
    const url = peer.address.startsWith('wss://') ? peer.address : `ws://${peer.address}`;
    const socket = new WebSocket(url, {
      perMessageDeflate: false,
      ...(this.ca ? { ca: this.ca } : {}),
      headers: this.options.token ? { authorization: authorizationHeader(this.options.token) } : {},
      ...(useZeroMask(this.options.clientMask, url) ? { generateMask: zeroMask } : {}),
    });
    socket.on('error', (error) => this.options.log(`peer link to worker ${peer.workerId} (${url}): ${error.message}`));
    socket.on('unexpected-response', (_req, res) => {
      this.options.log(`peer worker ${peer.workerId} (${url}) refused the link: HTTP ${res.statusCode}`);
      socket.terminate();
    });
    const link: OutgoingLink = { address: peer.address, socket, queue: [] };
    // Once open: the greeting first, then whatever was sent while connecting.
    socket.once('open', () => {
      const hello: Message = {
        type: 'peer-hello',
        protocolVersion: PROTOCOL_VERSION,
        runId: run.runId,
        workerId: run.workerId,
      };
      socket.send(encodeFrame(hello), { binary: true });
      const queued = link.queue ?? [];
      link.queue = null;
      for (const { frame, done } of queued) socket.send(frame, { binary: true }, done);
    });
    this.outgoing.set(peer.workerId, link);
    return link;
  }

  private readonly onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const from = request.socket.remoteAddress ?? 'an unknown address';
    const refuse = (status: string, reason: RejectReason | null): void => {
      refuseUpgrade(socket, status);
      if (reason) {
        this.options.log(`refused a peer link from ${from}: missing or wrong token`);
        this.options.onReject(reason, from);
      }
    };
    if (!this.run || !this.wss) return refuse('503 Service Unavailable', null);
    if (this.options.token !== null && !isAuthorized(request, this.options.token))
      return refuse('401 Unauthorized', 'auth');
    this.wss.handleUpgrade(request, socket, head, (ws) => this.accept(ws));
  };

  private accept(socket: WebSocket): void {
    this.incoming.add(socket);
    let sender: number | null = null;
    socket.on('close', () => this.incoming.delete(socket));
    socket.on('error', (error) => {
      if ((error as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
        this.options.onReject('bad_frame', 'peer frame over the size limit (closed with 1009)');
    });
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (sender !== null) this.options.onBytes(sender, 'in', data.length);
      try {
        if (!isBinary) throw new ProtocolError('BAD_FRAME', 'text frame on a peer link');
        const { message, body } = decodeFrame(data);
        if (sender === null) {
          sender = this.greet(message);
          return;
        }
        if ((message.type !== 'slice' && message.type !== 'shard') || !body)
          throw new ProtocolError('BAD_MESSAGE', `unexpected ${message.type} on a peer link`);
        const problem = this.run ? this.run.handler(sender, message, body) : 'stale_step';
        if (problem) this.options.onReject(problem, `worker ${sender}: ${message.type} of step ${message.step}`);
      } catch (error) {
        const code = error instanceof BatchlabError ? error.code : 'BAD_MESSAGE';
        this.options.onReject(rejectReasonForError(code), (error as Error).message);
        this.options.log(
          `closing a peer link${sender === null ? '' : ` from worker ${sender}`}: ${(error as Error).message}`,
        );
        socket.close(closeCodeFor(code), code);
      }
    });
  }

  /** The sender named by a link's first frame, which must be this run's `peer-hello`. */
  private greet(message: Message): number {
    if (message.type !== 'peer-hello')
      throw new ProtocolError('BAD_MESSAGE', `expected peer-hello first, got ${message.type}`);
    if (message.protocolVersion !== PROTOCOL_VERSION)
      throw new ProtocolError(
        'VERSION_MISMATCH',
        `peer speaks protocol ${message.protocolVersion}, this worker ${PROTOCOL_VERSION}`,
      );
    if (message.runId !== this.run?.runId)
      throw new ProtocolError(
        'BAD_MESSAGE',
        `peer-hello for run ${message.runId}, this worker is in run ${this.run?.runId}`,
      );
    return message.workerId;
  }
}

/** Null once `socket` is open, or why it did not open within `timeoutMs`. */
function waitOpen(socket: WebSocket, timeoutMs: number): Promise<string | null> {
  if (socket.readyState === WebSocket.OPEN) return Promise.resolve(null);
  if (socket.readyState !== WebSocket.CONNECTING) return Promise.resolve('link closed');
  return new Promise((resolve) => {
    let why = `not open within ${timeoutMs} ms`;
    const timer = setTimeout(() => done(why), timeoutMs);
    const onError = (error: Error): void => {
      why = error.message;
    };
    const done = (result: string | null): void => {
      clearTimeout(timer);
      socket.off('open', onOpen);
      socket.off('error', onError);
      socket.off('close', onClose);
      resolve(result);
    };
    const onOpen = (): void => done(null);
    const onClose = (): void => done(why === `not open within ${timeoutMs} ms` ? 'link closed' : why);
    socket.on('open', onOpen);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}
