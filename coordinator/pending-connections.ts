// Limits on connections that have not said hello yet (for a coordinator with a token: not yet
// authenticated either). Each gets a short deadline from TCP connect to hello; their number is
// capped in total and per source address, the total at a fraction of the process's descriptor
// limit, so a flood of silent or half-open sockets is refused at connect and never takes the
// descriptors a checkpoint, the metrics endpoint or a worker's frames need.

import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import type { Socket } from 'node:net';

/** How long and how many connections may wait before their hello. */
export interface PendingLimits {
  /** From TCP connect to hello (TLS, HTTP upgrade with the token, hello frame). */
  helloTimeoutMs: number;
  /** Connections without a hello yet, from all addresses together. */
  maxPending: number;
  /** Connections without a hello yet from one source address. */
  maxPendingPerAddress: number;
}

/** The soft RLIMIT_NOFILE (from /proc/self/limits on Linux); null when it cannot be read or is unlimited. */
export function openFileLimit(limitsFile = '/proc/self/limits'): number | null {
  try {
    const line = readFileSync(limitsFile, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : null;
  } catch {
    return null;
  }
}

/**
 * Limits for a process allowed `openFiles` descriptors: a quarter of them (8 to 1024) for
 * connections before hello, a quarter of that (4 to 32) per address, 10 s to say hello. The
 * other three quarters stay for workers, checkpoint files, the metrics endpoint and the runtime.
 */
export function pendingLimitsFor(openFiles: number | null): PendingLimits {
  const maxPending = openFiles === null ? 256 : Math.max(8, Math.min(1024, Math.floor(openFiles / 4)));
  return {
    helloTimeoutMs: 10_000,
    maxPending,
    maxPendingPerAddress: Math.max(4, Math.min(32, Math.floor(maxPending / 4))),
  };
}

/** Why a connection was closed before its hello. */
export type PendingRefusal = 'pending_limit' | 'handshake_timeout';

/** Tracks every TCP connection of `server` from connect until {@link admit} (its hello) or close. */
export class PendingConnections {
  private readonly pending = new Map<string, { socket: Socket; timer: NodeJS.Timeout }>();
  private readonly perAddress = new Map<string, number>();

  constructor(
    private readonly server: Server,
    readonly limits: PendingLimits,
    private readonly onRefuse: (reason: PendingRefusal, address: string) => void,
  ) {
    server.on('connection', this.onConnection);
  }

  /** Connections waiting for their hello. */
  get size(): number {
    return this.pending.size;
  }

  /** The connection from `address:port` said hello: no more deadline, and it no longer counts. */
  admit(address: string | undefined, port: number | undefined): void {
    const key = keyOf(address, port);
    const entry = this.pending.get(key);
    if (entry) this.forget(key, address ?? '', entry.timer);
  }

  /** Stops watching new connections and clears every deadline. */
  close(): void {
    this.server.off('connection', this.onConnection);
    for (const [key, { timer, socket }] of this.pending) this.forget(key, socket.remoteAddress ?? '', timer);
  }

  private readonly onConnection = (socket: Socket): void => {
    const address = socket.remoteAddress ?? '';
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.pending.size >= this.limits.maxPending || fromAddress >= this.limits.maxPendingPerAddress) {
      // Closed at once: the descriptor is free again before anything else runs.
      socket.destroy();
      this.onRefuse('pending_limit', address);
      return;
    }
    const key = keyOf(address, socket.remotePort);
    const timer = setTimeout(() => {
      this.forget(key, address, timer);
      socket.destroy();
      this.onRefuse('handshake_timeout', address);
    }, this.limits.helloTimeoutMs);
    timer.unref();
    this.pending.set(key, { socket, timer });
    this.perAddress.set(address, fromAddress + 1);
    socket.once('close', () => {
      if (this.pending.get(key)?.socket === socket) this.forget(key, address, timer);
    });
  };

  private forget(key: string, address: string, timer: NodeJS.Timeout): void {
    clearTimeout(timer);
    if (!this.pending.delete(key)) return;
    const left = (this.perAddress.get(address) ?? 1) - 1;
    if (left > 0) this.perAddress.set(address, left);
    else this.perAddress.delete(address);
  }
}

function keyOf(address: string | undefined, port: number | undefined): string {
  return `${address ?? ''}|${port ?? 0}`;
}
