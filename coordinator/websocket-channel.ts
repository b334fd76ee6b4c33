// A worker connection over WebSocket: frames encoded into pooled buffers, liveness from pongs
// and frames, and an orderly shutdown (a `shutdown` frame, then close, then terminate).

import type { WebSocket } from 'ws';
import type { FrameEncoder } from '../shared/codec.js';
import { closeCodeFor } from '../shared/errors.js';
import type { Message, ShutdownMessage } from '../shared/protocol.js';
import type { WorkerChannel, WorkerInfo } from './worker-channel.js';

/** How long a worker has to close its end after a shutdown before the socket is terminated. */
const SHUTDOWN_GRACE_MS = 2000;

export class WebSocketChannel implements WorkerChannel {
  /** Date.now() of the last pong or frame (or of the connection) and of the last ping sent. */
  lastHeardMs = Date.now();
  lastPingMs = 0;
  /** Why the coordinator ended the connection, for the loss log line. */
  lostReason: string | null = null;

  constructor(
    readonly workerId: number,
    readonly info: WorkerInfo,
    readonly socket: WebSocket,
    private readonly encoder: FrameEncoder,
    private readonly onBytesOut: (bytes: number) => void,
  ) {}

  get isOpen(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  send(message: Message, body: Float32Array | null = null, bodyKey?: number): boolean {
    if (!this.isOpen) return false;
    const frame = this.encoder.encode(message, body, bodyKey);
    this.onBytesOut(frame.bytes.length);
    // The buffer goes back to the pool once ws has handed it to the kernel (or failed to).
    this.socket.send(frame.bytes, { binary: true }, () => frame.release());
    return true;
  }

  /** Ends a connection that stopped answering, with `reason` for the loss line. */
  terminate(reason: string): void {
    this.lostReason = reason;
    this.socket.terminate();
  }

  /** Sends an `EVICTED` error frame and closes with its code: the worker takes that as final. */
  evict(reason: string): void {
    this.lostReason = reason;
    if (!this.isOpen) return;
    // The error frame carries the whole reason (a close reason is at most 123 bytes).
    const sendError = (): void => void this.send({ type: 'error', code: 'EVICTED', message: reason });
    void shutdownSocket(this.socket, reason, sendError, closeCodeFor('EVICTED'));
  }

  shutdown(reason: string, code?: string): Promise<void> {
    return shutdownSocket(this.socket, reason, () => this.send(shutdownMessage(reason, code)));
  }
}

/** The `shutdown` frame: `code` only when the run did not complete. */
export function shutdownMessage(reason: string, code?: string): ShutdownMessage {
  return code === undefined ? { type: 'shutdown', reason } : { type: 'shutdown', reason, code };
}

/** Sends the shutdown (via `sendShutdown`), closes with `closeCode`, and terminates after a grace period. */
export function shutdownSocket(
  socket: WebSocket,
  reason: string,
  sendShutdown: () => void,
  closeCode = 1000,
): Promise<void> {
  return new Promise<void>((resolve) => {
    if (socket.readyState === socket.CLOSED) return resolve();
    const timer = setTimeout(() => {
      socket.terminate();
      resolve();
    }, SHUTDOWN_GRACE_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    sendShutdown();
    socket.close(closeCode, reason.slice(0, 120));
  });
}
