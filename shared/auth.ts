// The shared token: checked in the HTTP upgrade with a constant-time comparison, before any
// WebSocket exists (ws README "Client authentication").

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

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
