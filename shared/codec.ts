// Frame codec: one WebSocket binary frame = [u32 LE header length][msgpack header][pad to 4]
// [float32 LE body]. The body is aligned so the receiver can view it as a Float32Array without a
// copy (it copies only when ws hands over an unaligned slice). Mirrors tfjs io_utils framing.

import { Packr } from 'msgpackr';
import { ProtocolError } from './errors.js';
import { BODY_RULE, validateMessage, type Message } from './protocol.js';

const packr = new Packr({ useRecords: false, moreTypes: false });
const LENGTH_BYTES = 4;
/** Largest header we accept; headers are small, tensors travel in the body. */
export const MAX_HEADER_BYTES = 16 * 1024 * 1024;

/** A decoded frame: the validated message and its float32 body, if it has one. */
export interface Frame<M extends Message = Message> {
  message: M;
  body: Float32Array | null;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Encodes a message and an optional float32 body into one frame. Reverse of `decodeFrame`.
 * Little-endian is assumed for the body (every platform Node runs on today).
 */
export function encodeFrame(message: Message, body: Float32Array | null = null): Buffer {
  const header = packr.pack({ ...message, bodyLength: body ? body.length : -1 });
  const bodyOffset = align4(LENGTH_BYTES + header.length);
  const frame = Buffer.allocUnsafe(bodyOffset + (body ? body.byteLength : 0));
  frame.writeUInt32LE(header.length, 0);
  header.copy(frame, LENGTH_BYTES);
  frame.fill(0, LENGTH_BYTES + header.length, bodyOffset);
  if (body) frame.set(new Uint8Array(body.buffer, body.byteOffset, body.byteLength), bodyOffset);
  return frame;
}

/**
 * Decodes and validates a frame. Reverse of `encodeFrame`. The body is a view into `data` when
 * it is 4-byte aligned in memory, otherwise a copy. Throws `ProtocolError` (`BAD_FRAME` for
 * framing, `BAD_MESSAGE` for header fields).
 */
export function decodeFrame(data: Uint8Array): Frame {
  if (data.length < LENGTH_BYTES) throw new ProtocolError('BAD_FRAME', `frame of ${data.length} bytes is shorter than its length prefix`);
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
    throw new ProtocolError('BAD_FRAME', `header.bodyLength: expected an integer >= -1, got ${typeof bodyLength === 'bigint' ? String(bodyLength) : JSON.stringify(bodyLength)}`);
  }
  const message = validateMessage(raw);
  const rule = BODY_RULE[message.type];
  if (bodyLength === -1) {
    if (rule === 'required') throw new ProtocolError('BAD_FRAME', `${message.type} frame has no body; one is required`);
    if (data.length !== align4(LENGTH_BYTES + headerLength) && data.length !== LENGTH_BYTES + headerLength) {
      throw new ProtocolError('BAD_FRAME', `${message.type} frame has ${data.length - LENGTH_BYTES - headerLength} trailing bytes`);
    }
    return { message, body: null };
  }
  if (rule === 'none') throw new ProtocolError('BAD_FRAME', `${message.type} frame carries a body; none is allowed`);
  const bodyOffset = align4(LENGTH_BYTES + headerLength);
  const bodyBytes = bodyLength * 4;
  if (data.length !== bodyOffset + bodyBytes) {
    throw new ProtocolError('BAD_FRAME', `body: header says ${bodyLength} float32 (${bodyBytes} bytes), frame holds ${data.length - bodyOffset}`);
  }
  const start = data.byteOffset + bodyOffset;
  if (start % 4 === 0) return { message, body: new Float32Array(data.buffer, start, bodyLength) };
  // Unaligned: copy into fresh memory. (Buffer#slice would return a view, not a copy.)
  const copy = new Uint8Array(bodyBytes);
  copy.set(data.subarray(bodyOffset, bodyOffset + bodyBytes));
  const body = new Float32Array(copy.buffer);
  return { message, body };
}
