// The shared token: checked in the HTTP upgrade with a constant-time comparison, before any
// WebSocket exists (ws README "Client authentication").

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

/** A fresh random token (for `batchlab local`). */
export function generateToken(): string {
  return randomBytes(24).toString('base64url');
}

/** The header a worker sends. */
export function authorizationHeader(token: string): string {
  return `Bearer ${token}`;
}

/**
 * True when `request` carries `Authorization: Bearer <token>`. Hashing both sides first makes the
 * comparison constant-time even when the lengths differ.
 */
export function isAuthorized(request: IncomingMessage, token: string): boolean {
  const header = request.headers.authorization ?? '';
  // The scheme name is case-insensitive (RFC 7235 §2.1); the token is compared exactly.
  const presented = /^bearer /i.test(header) ? header.slice('Bearer '.length) : '';
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && presented.length > 0;
}

/** Answers an HTTP upgrade with `status` (e.g. '401 Unauthorized') and closes it: no WebSocket is made. */
export function refuseUpgrade(socket: Duplex, status: string): void {
  socket.write(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  socket.destroy();
}
