// The coordinator's view of one worker connection: who it is and a way to send it frames. The
// WebSocket server makes these (websocket-channel.ts); tests make in-memory ones, so membership,
// dispatch and gather run without sockets or processes.

import type { Message } from '../shared/protocol.js';

/** What a worker said about itself in its `hello`. */
export interface WorkerInfo {
  name: string;
  backend: string;
  device: string;
  maxChunk: number;
  /** host:port of the worker's /metrics endpoint, when it serves one. */
  metricsTarget: string | null;
  /** Its memory limit in micro-batches per step; null: none. */
  maxMicroBatches: number | null;
  /** host:port of its peer server (sharded reducer); null: it has none. */
  peerAddress: string | null;
}

/** One worker, as membership, dispatch and gather see it. */
export interface WorkerChannel {
  readonly workerId: number;
  readonly info: WorkerInfo;
  /**
   * Sends one message with an optional float body; false when the connection is gone.
   * `bodyKey`: the same key promises the same body, so its encoding can be reused (f16).
   */
  send(message: Message, body?: Float32Array | null, bodyKey?: number): boolean;
  /** Tells the worker to exit with `reason` and ends the connection; idempotent. */
  shutdown(reason: string, code?: string): Promise<void>;
  /** Refuses the worker for good (it exits non-zero with `reason`); its loss follows when the connection ends. */
  evict(reason: string): void;
}
