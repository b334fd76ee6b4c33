// Frame codec: one WebSocket binary frame = [u32 LE header length][msgpack header][pad to 4]
// [body]. The body is little-endian float32, aligned so the receiver can view it as a
// Float32Array without a copy (it copies only when ws hands over an unaligned slice), or float16
// with a power-of-two scale when the run uses `--wire-dtype f16` (header fields bodyDtype and
// bodyScale). Mirrors tfjs io_utils framing.

import { Packr } from 'msgpackr';
import { ProtocolError } from './errors.js';
import { decodeFloat16, encodeFloat16, float16ScaleExponent } from './float16.js';
import { BODY_RULE, validateMessage, type Message } from './protocol.js';

const packr = new Packr({ useRecords: false, moreTypes: false });
const LENGTH_BYTES = 4;
/** Largest header we accept; headers are small, tensors travel in the body. */
export const MAX_HEADER_BYTES = 16 * 1024 * 1024;

/** How a frame's body travels: float32 as is, or float16 with a power-of-two scale (`--wire-dtype`). */
export type WireDtype = 'f32' | 'f16';
export const WIRE_DTYPES: readonly WireDtype[] = ['f32', 'f16'];

/** A decoded frame: the validated message and its float32 body, if it has one. */
export interface Frame<M extends Message = Message> {
  message: M;
  body: Float32Array | null;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function bodyBytesFor(length: number, dtype: WireDtype): number {
  return length * (dtype === 'f16' ? 2 : 4);
}

/**
 * Header, padding and body written into `frame`, which must be exactly as long as they are.
 * `halves`, when given, is `body` already converted to float16 with `scaleExponent`.
 */
function writeFrame(
  frame: Buffer,
  header: Buffer,
  body: Float32Array | null,
  dtype: WireDtype,
  scaleExponent: number,
  halves?: Uint16Array,
): void {
  const bodyOffset = align4(LENGTH_BYTES + header.length);
  frame.writeUInt32LE(header.length, 0);
  header.copy(frame, LENGTH_BYTES);
  frame.fill(0, LENGTH_BYTES + header.length, bodyOffset);
  if (!body) return;
  const source = dtype === 'f32' ? body : halves;
  if (source) frame.set(new Uint8Array(source.buffer, source.byteOffset, source.byteLength), bodyOffset);
  else encodeFloat16(body, new Uint16Array(frame.buffer, frame.byteOffset + bodyOffset, body.length), scaleExponent);
}

/** The header for `message` and `body`; under f16 with the body's scale, found unless `knownScale` is given. */
function packHeader(
  message: Message,
  body: Float32Array | null,
  dtype: WireDtype,
  knownScale?: number,
): { header: Buffer; scaleExponent: number } {
  if (!body || dtype === 'f32')
    return { header: packr.pack({ ...message, bodyLength: body ? body.length : -1 }), scaleExponent: 0 };
  const scaleExponent = knownScale ?? float16ScaleExponent(body);
  return {
    header: packr.pack({ ...message, bodyLength: body.length, bodyDtype: 'f16', bodyScale: scaleExponent }),
    scaleExponent,
  };
}

/**
 * Encodes a message and an optional body into one freshly allocated frame. Reverse of
 * `decodeFrame`. Little-endian is assumed for the body (every platform Node runs on today).
 */
export function encodeFrame(message: Message, body: Float32Array | null = null, dtype: WireDtype = 'f32'): Buffer {
  const { header, scaleExponent } = packHeader(message, body, dtype);
  const frame = Buffer.allocUnsafe(
    align4(LENGTH_BYTES + header.length) + (body ? bodyBytesFor(body.length, dtype) : 0),
  );
  writeFrame(frame, header, body, dtype, scaleExponent);
  return frame;
}

/** A frame in a reused buffer; `release()` once the socket has written it (the send callback). */
export interface PooledFrame {
  bytes: Buffer;
  release(): void;
}

/**
 * A frame whose float32 body is filled in place before its header is known (`FrameEncoder.bodyFrame`):
 * write `body`, then `seal` it with its message, or `release` it unsent.
 */
export interface BodyFrame {
  readonly body: Float32Array;
  /** The frame with `message` as its header; `body` must not change until the frame is released. */
  seal(message: Message): PooledFrame;
  release(): void;
}

/**
 * Bytes kept in front of a pooled frame's body for its header, so a body written in place can be
 * given its header afterwards (headers are a few hundred bytes; a larger one takes the copy path).
 */
const HEADER_ROOM = 4096;

/**
 * Encodes frames into buffers it keeps and reuses, so a steady stream of model-sized frames
 * allocates nothing after the first few. A buffer returns to the pool on `release()`; until then
 * the socket may still be reading it, so it is never handed out twice.
 */
export class FrameEncoder {
  private readonly free: Buffer[] = [];
  /** The last float16 body converted under a key (`encode`'s `bodyKey`), for the next frames with the same body. */
  private converted: { body: Float32Array; key: number; halves: Uint16Array; scaleExponent: number } | null = null;
  /** float32 staging for `bodyFrame` under f16, whose frame body cannot hold float32. */
  private staging: Float32Array | null = null;
  /** Buffers ever allocated (for tests and the benchmark: it stops growing in steady state). */
  allocations = 0;

  constructor(readonly dtype: WireDtype = 'f32') {}

  /**
   * `bodyKey` says the body has not changed since the last frame encoded with the same body and
   * key (the coordinator passes the step: the weights stay put within a step), so under f16 its
   * conversion is reused instead of redone for every worker: one conversion per step, then a
   * memcpy per frame.
   */
  encode(message: Message, body: Float32Array | null = null, bodyKey?: number): PooledFrame {
    const converted = body && this.dtype === 'f16' && bodyKey !== undefined ? this.convertOnce(body, bodyKey) : null;
    const { header, scaleExponent } = packHeader(message, body, this.dtype, converted?.scaleExponent);
    const size = align4(LENGTH_BYTES + header.length) + (body ? bodyBytesFor(body.length, this.dtype) : 0);
    // Small frames (control messages) are not worth pooling.
    const backing = size < 64 * 1024 ? null : this.take(size);
    const bytes = backing ? backing.subarray(0, size) : Buffer.allocUnsafe(size);
    writeFrame(bytes, header, body, this.dtype, scaleExponent, converted?.halves);
    return { bytes, release: backing ? this.releaser(backing) : () => {} };
  }

  /**
   * A pooled frame with room for `length` float32 values that the caller writes directly (a
   * worker computes its gradient into it), sparing the model-sized copy `encode` makes. The body
   * sits at a fixed offset and `seal` writes the header just in front of it, so the frame on the
   * wire is exactly what `encode` would produce. Under f16 the body is a float32 staging array
   * that `seal` converts (a copy is needed there anyway).
   */
  bodyFrame(length: number): BodyFrame {
    if (this.dtype === 'f16') {
      const body = this.staging?.length === length ? this.staging : (this.staging = new Float32Array(length));
      return { body, seal: (message) => this.encode(message, body), release: () => {} };
    }
    const backing = this.take(HEADER_ROOM + length * 4);
    const body = new Float32Array(backing.buffer, backing.byteOffset + HEADER_ROOM, length);
    const release = this.releaser(backing);
    return {
      body,
      release,
      seal: (message) => {
        const { header } = packHeader(message, body, 'f32');
        const headBytes = align4(LENGTH_BYTES + header.length);
        if (headBytes > HEADER_ROOM) {
          const copied = this.encode(message, body);
          release();
          return copied;
        }
        const start = HEADER_ROOM - headBytes;
        const bytes = backing.subarray(start, HEADER_ROOM + length * 4);
        writeFrame(bytes, header, null, 'f32', 0);
        return { bytes, release };
      },
    };
  }

  /** `body` as float16 with its scale, converted only when `body` or `key` differs from the last call. */
  private convertOnce(body: Float32Array, key: number): { halves: Uint16Array; scaleExponent: number } {
    const last = this.converted;
    if (last && last.body === body && last.key === key && last.halves.length === body.length) return last;
    const halves = last && last.halves.length === body.length ? last.halves : new Uint16Array(body.length);
    const scaleExponent = float16ScaleExponent(body);
    encodeFloat16(body, halves, scaleExponent);
    this.converted = { body, key, halves, scaleExponent };
    return this.converted;
  }

  /** A free buffer of at least `size` bytes, or a new one. */
  private take(size: number): Buffer {
    const index = this.free.findIndex((b) => b.length >= size);
    if (index >= 0) return this.free.splice(index, 1)[0]!;
    this.allocations++;
    // Header room on every buffer, so `encode` and `bodyFrame` share one pool, and headers that
    // grow a little (more micro-batch descriptors) need no new buffer.
    return Buffer.allocUnsafeSlow(size + HEADER_ROOM);
  }

  /** Returns `backing` to the pool, once however often it is called. */
  private releaser(backing: Buffer): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (this.free.length < 8) this.free.push(backing);
    };
  }
}

/**
 * Decodes and validates a frame. Reverse of `encodeFrame`. The body is a view into `data` when
 * it is 4-byte aligned in memory, otherwise a copy. Throws `ProtocolError` (`BAD_FRAME` for
 * framing, `BAD_MESSAGE` for header fields).
 */
export function decodeFrame(data: Uint8Array): Frame {
  if (data.length < LENGTH_BYTES)
    throw new ProtocolError('BAD_FRAME', `frame of ${data.length} bytes is shorter than its length prefix`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const headerLength = view.getUint32(0, true);
  if (headerLength === 0 || headerLength > MAX_HEADER_BYTES || LENGTH_BYTES + headerLength > data.length) {
    throw new ProtocolError('BAD_FRAME', `header length ${headerLength} does not fit a frame of ${data.length} bytes`);
  }
  let raw: unknown;
  try {
    raw = packr.unpack(data.subarray(LENGTH_BYTES, LENGTH_BYTES + headerLength));
  } catch (error) {
    throw new ProtocolError('BAD_FRAME', `header is not valid msgpack: ${(error as Error).message}`);
  }
  const bodyLength = (raw as { bodyLength?: unknown } | null)?.bodyLength;
  if (typeof bodyLength !== 'number' || !Number.isSafeInteger(bodyLength) || bodyLength < -1) {
    throw new ProtocolError(
      'BAD_FRAME',
      `header.bodyLength: expected an integer >= -1, got ${typeof bodyLength === 'bigint' ? String(bodyLength) : JSON.stringify(bodyLength)}`,
    );
  }
  const message = validateMessage(raw);
  const rule = BODY_RULE[message.type];
  if (bodyLength === -1) {
    if (rule === 'required') throw new ProtocolError('BAD_FRAME', `${message.type} frame has no body; one is required`);
    if (data.length !== align4(LENGTH_BYTES + headerLength) && data.length !== LENGTH_BYTES + headerLength) {
      throw new ProtocolError(
        'BAD_FRAME',
        `${message.type} frame has ${data.length - LENGTH_BYTES - headerLength} trailing bytes`,
      );
    }
    return { message, body: null };
  }
  if (rule === 'none') throw new ProtocolError('BAD_FRAME', `${message.type} frame carries a body; none is allowed`);
  const { bodyDtype, bodyScale } = raw as { bodyDtype?: unknown; bodyScale?: unknown };
  if (bodyDtype !== undefined && bodyDtype !== 'f16')
    throw new ProtocolError(
      'BAD_FRAME',
      `header.bodyDtype: expected "f16" or absent (float32), got ${JSON.stringify(bodyDtype)}`,
    );
  const dtype: WireDtype = bodyDtype === 'f16' ? 'f16' : 'f32';
  const scaleExponent = bodyScale ?? 0;
  if (typeof scaleExponent !== 'number' || !Number.isInteger(scaleExponent) || Math.abs(scaleExponent) > 100) {
    throw new ProtocolError(
      'BAD_FRAME',
      `header.bodyScale: expected an integer in [-100, 100], got ${JSON.stringify(bodyScale)}`,
    );
  }
  const bodyOffset = align4(LENGTH_BYTES + headerLength);
  const bodyBytes = bodyBytesFor(bodyLength, dtype);
  if (data.length !== bodyOffset + bodyBytes) {
    throw new ProtocolError(
      'BAD_FRAME',
      `body: header says ${bodyLength} ${dtype === 'f16' ? 'float16' : 'float32'} (${bodyBytes} bytes), frame holds ${data.length - bodyOffset}`,
    );
  }
  const start = data.byteOffset + bodyOffset;
  if (dtype === 'f16') {
    // Widening to float32 needs new memory anyway; an unaligned slice is copied first.
    const halves =
      start % 2 === 0
        ? new Uint16Array(data.buffer, start, bodyLength)
        : new Uint16Array(Uint8Array.from(data.subarray(bodyOffset, bodyOffset + bodyBytes)).buffer);
    const body = new Float32Array(bodyLength);
    decodeFloat16(halves, body, scaleExponent);
    return { message, body };
  }
  if (start % 4 === 0) return { message, body: new Float32Array(data.buffer, start, bodyLength) };
  // Unaligned: copy into fresh memory. (Buffer#slice would return a view, not a copy.)
  const copy = new Uint8Array(bodyBytes);
  copy.set(data.subarray(bodyOffset, bodyOffset + bodyBytes));
  const body = new Float32Array(copy.buffer);
  return { message, body };
}
