import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { decodeFrame, encodeFrame, FrameEncoder } from '../../shared/codec.js';
import { ProtocolError } from '../../shared/errors.js';
import {
  BODY_RULE,
  PROTOCOL_VERSION,
  validateMessage,
  type ErrorMessage,
  type GradientMessage,
  type HelloMessage,
  type Message,
  type MessageType,
  type ReadyMessage,
  type ShutdownMessage,
  type WelcomeMessage,
  type WorkMessage,
} from '../../shared/protocol.js';

// Packs headers the way a foreign (or hostile) peer might, to build frames encodeFrame refuses to.
const packr = new Packr({ useRecords: false, moreTypes: false });

const hello: HelloMessage = {
  type: 'hello',
  protocolVersion: PROTOCOL_VERSION,
  workerName: 'gpu-node-3',
  backend: 'tensorflow-gpu',
  device: 'NVIDIA A100',
  maxChunk: 64,
};
const welcome: WelcomeMessage = {
  type: 'welcome',
  protocolVersion: PROTOCOL_VERSION,
  runId: 'run-7f3a',
  workerId: 2,
  seed: 42,
  modelTopology: {
    class_name: 'Sequential',
    config: { name: 'mlp', layers: [{ class_name: 'Dense', config: { units: 10, activation: 'softmax' } }] },
  },
  params: [
    { name: 'dense/kernel', shape: [784, 10] },
    { name: 'dense/bias', shape: [10] },
  ],
  dataset: {
    name: 'synthetic',
    trainCount: 600,
    testCount: 200,
    fingerprint: 'abc123',
    syntheticTrain: 600,
    syntheticTest: 200,
  },
  heartbeatIntervalMs: 5000,
};
const ready: ReadyMessage = { type: 'ready', datasetFingerprint: 'abc123' };
const work = (hasWeights: boolean): WorkMessage => ({
  type: 'work',
  step: 17,
  weightsStep: 17,
  hasWeights,
  globalBatchSize: 10,
  microBatches: [
    { id: 0, start: 0, end: 4 },
    { id: 1, start: 4, end: 8 },
    { id: 2, start: 8, end: 10 },
  ],
});
const memory = { peakTensorBytes: 3_868_428, tensorBytes: 9_384, tensors: 6, rssBytes: 235_732_992 };
const gradient: GradientMessage = {
  type: 'gradient',
  step: 17,
  microBatchId: 1,
  samples: 4,
  lossSum: 9.21,
  correct: 3,
  computeMs: 12.5,
  sqNorm: 0.0625,
};
const error: ErrorMessage = {
  type: 'error',
  code: 'DATASET_MISMATCH',
  message: 'dataset fingerprint abc123 != def456: load the same dataset on both sides',
};
const shutdown: ShutdownMessage = { type: 'shutdown', reason: 'run finished after 100 steps' };

/** Float32 values whose bits are easy to corrupt: signed zero, subnormals, extremes, infinities, a NaN payload. */
function trickyFloats(): Float32Array {
  const bits = new Uint32Array([
    0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00001,
    0x3f800000, 0xbeaaaaab,
  ]);
  return new Float32Array(bits.buffer);
}

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** A frame built by hand: [u32 LE header length][header bytes][zero pad to 4][body bytes]. */
function rawFrame(header: unknown, bodyBytes = new Uint8Array(0)): Buffer {
  const packed = packr.pack(header);
  const bodyOffset = (4 + packed.length + 3) & ~3;
  const frame = Buffer.alloc(bodyOffset + bodyBytes.length);
  frame.writeUInt32LE(packed.length, 0);
  packed.copy(frame, 4);
  frame.set(bodyBytes, bodyOffset);
  return frame;
}

/** Runs `fn`, expects a ProtocolError, and returns it for further checks. */
function protocolErrorFrom(fn: () => unknown): ProtocolError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    return e as ProtocolError;
  }
  throw new Error('expected a ProtocolError, nothing was thrown');
}

/** The sharded reducer's bodiless messages, one of each. */
const reduced: Message = { type: 'reduced', step: 3, attempt: 1, sqNorm: 0.25, scatterMs: 4, gatherMs: 2 };
const commit: Message = { type: 'commit', step: 3, attempt: 1 };
const stateRequest: Message = { type: 'state-request', step: 3 };
const probe: Message = { type: 'probe', peers: [{ workerId: 2, address: '127.0.0.1:4000' }], timeoutMs: 1000 };
const probeResult: Message = { type: 'probe-result', unreachable: [{ workerId: 2, why: 'ECONNREFUSED' }] };
const peerHello: Message = { type: 'peer-hello', protocolVersion: 2, runId: 'r1', workerId: 1 };
const slice: Message = { type: 'slice', step: 3, attempt: 0, shard: 1, microBatchId: 4 };

describe('encodeFrame / decodeFrame round trip', () => {
  const bodiless: [string, Message][] = [
    ['hello', hello],
    ['welcome', welcome],
    ['ready', ready],
    ['work without weights', work(false)],
    ['error', error],
    ['shutdown', shutdown],
    ['reduced', reduced],
    ['commit', commit],
    ['state-request', stateRequest],
    ['probe', probe],
    ['probe-result', probeResult],
    ['peer-hello', peerHello],
    ['gradient without its body (sharded: the statistics only)', gradient],
  ];

  it.each(bodiless)('returns a %s message unchanged and without a body', (_name, message) => {
    const { message: decoded, body } = decodeFrame(encodeFrame(message));
    expect(decoded).toEqual(message);
    expect(body).toBeNull();
  });

  it('returns a work message with its weights body bit for bit', () => {
    const weights = trickyFloats();
    const { message, body } = decodeFrame(encodeFrame(work(true), weights));
    expect(message).toEqual(work(true));
    expect(body).not.toBeNull();
    expect(Buffer.compare(bytesOf(body!), bytesOf(weights))).toBe(0);
  });

  it('returns a gradient message with its gradient body bit for bit', () => {
    const grad = new Float32Array(1001);
    for (let i = 0; i < grad.length; i++) grad[i] = Math.sin(i * 12.9898) * 10 ** ((i % 13) - 6);
    const { message, body } = decodeFrame(encodeFrame(gradient, grad));
    expect(message).toEqual(gradient);
    expect(Buffer.compare(bytesOf(body!), bytesOf(grad))).toBe(0);
  });

  it("returns a gradient's batch statistics bit for bit in their own array, from a pooled frame too", () => {
    const stats = Float32Array.from({ length: 37 }, (_, i) => Math.cos(i) * 10 ** ((i % 7) - 3));
    const grad = new Float32Array(64).fill(0.5);
    const pooled = new FrameEncoder('f32').bodyFrame(grad.length);
    pooled.body.set(grad);
    for (const bytes of [
      encodeFrame({ ...gradient, batchStats: stats }, grad),
      pooled.seal({ ...gradient, batchStats: stats }).bytes,
    ]) {
      const { message, body } = decodeFrame(bytes);
      const got = (message as GradientMessage).batchStats!;
      expect(got).toBeInstanceOf(Float32Array);
      expect(Buffer.compare(bytesOf(got), bytesOf(stats))).toBe(0);
      expect(got.buffer.byteLength).toBe(4 * stats.length);
      expect(Buffer.compare(bytesOf(body!), bytesOf(grad))).toBe(0);
    }
    const odd = { ...gradient, batchStats: new Uint8Array(6) } as unknown as Message;
    expect(() => decodeFrame(encodeFrame(odd))).toThrow(/gradient\.batchStats: expected float32 values as bytes/);
  });

  it('returns an empty body as an empty Float32Array, not as null', () => {
    const { body } = decodeFrame(encodeFrame(work(true), new Float32Array(0)));
    expect(body).toBeInstanceOf(Float32Array);
    expect(body!.length).toBe(0);
  });

  it('drops header fields that are not part of the message type', () => {
    const frame = rawFrame({ ...shutdown, bodyLength: -1, injected: { evil: true } });
    expect(decodeFrame(frame).message).toEqual(shutdown);
  });

  it('carries the current protocol version in hello and welcome', () => {
    expect(Number.isSafeInteger(PROTOCOL_VERSION) && PROTOCOL_VERSION >= 1).toBe(true);
    expect((decodeFrame(encodeFrame(hello)).message as HelloMessage).protocolVersion).toBe(PROTOCOL_VERSION);
    expect((decodeFrame(encodeFrame(welcome)).message as WelcomeMessage).protocolVersion).toBe(PROTOCOL_VERSION);
  });
});

describe('decodeFrame body memory', () => {
  const grad = trickyFloats();

  it('views the body in place, without a copy, when the frame is 4-byte aligned', () => {
    const frame = encodeFrame(gradient, grad);
    expect(frame.byteOffset % 4).toBe(0);
    const { body } = decodeFrame(frame);
    expect(body!.buffer).toBe(frame.buffer);
    expect((body!.byteOffset - frame.byteOffset) % 4).toBe(0);
    expect(body!.byteOffset + body!.byteLength).toBe(frame.byteOffset + frame.byteLength);
  });

  it('copies the body correctly when the frame is a Uint8Array at an odd offset inside a larger buffer', () => {
    const frame = encodeFrame(gradient, grad);
    const larger = new Uint8Array(frame.length + 8);
    larger.set(frame, 3);
    const { message, body } = decodeFrame(larger.subarray(3, 3 + frame.length));
    expect(message).toEqual(gradient);
    expect(body!.length).toBe(grad.length);
    expect(body!.buffer).not.toBe(larger.buffer);
    expect(Buffer.compare(bytesOf(body!), bytesOf(grad))).toBe(0);
  });

  // ws hands 'message' listeners a Buffer, often a slice of a larger receive buffer.
  // Whole buffer length not a multiple of 4 (9 spare bytes) or a multiple of 4 (4 spare bytes).
  it.each([9, 4])(
    'copies the body correctly when the frame is a Buffer at an odd offset inside a larger buffer (%i spare bytes)',
    (spare) => {
      const frame = encodeFrame(gradient, grad);
      const larger = Buffer.alloc(frame.length + spare);
      frame.copy(larger, 1);
      const { message, body } = decodeFrame(larger.subarray(1, 1 + frame.length));
      expect(message).toEqual(gradient);
      expect(body!.length).toBe(grad.length);
      expect(Buffer.compare(bytesOf(body!), bytesOf(grad))).toBe(0);
    },
  );

  it('keeps the copied body intact when the receive buffer is reused afterwards', () => {
    const frame = encodeFrame(gradient, grad);
    const larger = new Uint8Array(frame.length + 2);
    larger.set(frame, 1);
    const { body } = decodeFrame(larger.subarray(1, 1 + frame.length));
    larger.fill(0xee);
    expect(Buffer.compare(bytesOf(body!), bytesOf(grad))).toBe(0);
  });
});

describe('decodeFrame refusals', () => {
  it('refuses a frame shorter than its length prefix with BAD_FRAME', () => {
    const err = protocolErrorFrom(() => decodeFrame(new Uint8Array(3)));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/3 bytes/);
  });

  it('refuses a header length that runs past the end of the frame with BAD_FRAME', () => {
    const frame = Buffer.from(encodeFrame(shutdown));
    frame.writeUInt32LE(1000, 0);
    const err = protocolErrorFrom(() => decodeFrame(frame));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/header length 1000/);
  });

  it('refuses a zero header length with BAD_FRAME', () => {
    const err = protocolErrorFrom(() => decodeFrame(new Uint8Array(8)));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/header length 0/);
  });

  it('refuses a header that is not valid msgpack with BAD_FRAME', () => {
    // A map of one entry whose key string ("type") is cut off after two bytes.
    const frame = new Uint8Array([4, 0, 0, 0, 0x81, 0xa4, 0x74, 0x79]);
    const err = protocolErrorFrom(() => decodeFrame(frame));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/^header is not valid msgpack/);
  });

  it('refuses a header made of the never-used msgpack byte 0xc1 with BAD_FRAME', () => {
    const frame = new Uint8Array([1, 0, 0, 0, 0xc1, 0, 0, 0]);
    expect(protocolErrorFrom(() => decodeFrame(frame)).code).toBe('BAD_FRAME');
  });

  it('refuses a header without bodyLength with BAD_FRAME naming bodyLength', () => {
    const err = protocolErrorFrom(() => decodeFrame(rawFrame({ ...shutdown })));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/bodyLength/);
  });

  it('refuses a slice frame without a body with BAD_FRAME', () => {
    const err = protocolErrorFrom(() => decodeFrame(encodeFrame(slice)));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/^slice frame has no body/);
  });

  it.each(
    Object.entries(BODY_RULE)
      .filter(([, rule]) => rule === 'none')
      .map(([type]) => type as MessageType),
  )('refuses a %s frame that carries a body with BAD_FRAME', (type) => {
    const message = {
      hello,
      welcome,
      ready,
      error,
      shutdown,
      reduced,
      commit,
      'state-request': stateRequest,
      probe,
      'probe-result': probeResult,
      'peer-hello': peerHello,
    }[type as 'hello'];
    const err = protocolErrorFrom(() => decodeFrame(encodeFrame(message, new Float32Array([1, 2]))));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(new RegExp(`^${type} .*body`));
  });

  it('refuses a body shorter than the header says with BAD_FRAME', () => {
    const frame = encodeFrame(gradient, new Float32Array([1, 2, 3]));
    const err = protocolErrorFrom(() => decodeFrame(frame.subarray(0, frame.length - 4)));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/^body: header says 3 float32/);
  });

  it('refuses a body longer than the header says with BAD_FRAME', () => {
    const frame = encodeFrame(gradient, new Float32Array([1, 2, 3]));
    const err = protocolErrorFrom(() => decodeFrame(Buffer.concat([frame, Buffer.alloc(4)])));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/^body: header says 3 float32/);
  });

  it('refuses trailing bytes after a bodiless frame with BAD_FRAME', () => {
    const frame = encodeFrame(shutdown);
    const err = protocolErrorFrom(() => decodeFrame(Buffer.concat([frame, Buffer.alloc(8)])));
    expect(err.code).toBe('BAD_FRAME');
    expect(err.message).toMatch(/trailing bytes/);
  });

  it("carries a gradient's memory, ready's probed maxChunk, welcome's microBatch and hello's 0 for auto", () => {
    const withMemory = { ...gradient, memory: { ...memory, wasmHeapBytes: 16_777_216 } };
    expect(decodeFrame(encodeFrame(withMemory, new Float32Array(1))).message).toEqual(withMemory);
    expect(decodeFrame(encodeFrame({ ...ready, maxChunk: 8 })).message).toEqual({ ...ready, maxChunk: 8 });
    expect(decodeFrame(encodeFrame({ ...welcome, microBatch: 32 })).message).toEqual({ ...welcome, microBatch: 32 });
    expect(decodeFrame(encodeFrame({ ...hello, maxChunk: 0 })).message).toEqual({ ...hello, maxChunk: 0 });
    const err = protocolErrorFrom(() => decodeFrame(rawFrame({ ...ready, maxChunk: 0, bodyLength: -1 })));
    expect(err.message.startsWith('ready.maxChunk: expected an integer >= 1')).toBe(true);
  });

  it('refuses an unknown message type with BAD_MESSAGE naming the type field', () => {
    const err = protocolErrorFrom(() => decodeFrame(rawFrame({ type: 'launch_missiles', bodyLength: -1 })));
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message).toMatch(
      /^message\.type: expected one of hello, welcome, ready, work, gradient, error, shutdown, reduced, commit, state-request, state, probe, probe-result, peer-hello, slice, shard, got "launch_missiles"/,
    );
  });

  it.each([
    ['a negative step', { step: -1 }, 'gradient.step'],
    ['a string step', { step: 'x' }, 'gradient.step'],
    ['a fractional step', { step: 1.5 }, 'gradient.step'],
    ['zero samples', { samples: 0 }, 'gradient.samples'],
    ['a string lossSum', { lossSum: 'big' }, 'gradient.lossSum'],
    ['a negative correct count', { correct: -3 }, 'gradient.correct'],
    ['a missing sqNorm', { sqNorm: undefined }, 'gradient.sqNorm'],
    ['a memory that is not an object', { memory: 5 }, 'gradient.memory'],
    ['a negative peak', { memory: { ...memory, peakTensorBytes: -1 } }, 'gradient.memory.peakTensorBytes'],
    ['a fractional RSS', { memory: { ...memory, rssBytes: 1.5 } }, 'gradient.memory.rssBytes'],
  ])('refuses a gradient with %s with BAD_MESSAGE naming the field', (_name, patch, field) => {
    const frame = rawFrame({ ...gradient, ...patch, bodyLength: 1 }, new Uint8Array(4));
    const err = protocolErrorFrom(() => decodeFrame(frame));
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message.startsWith(`${field}: expected`)).toBe(true);
  });

  it.each([
    ['a NaN lossSum', { lossSum: Number.NaN }],
    ['an infinite lossSum', { lossSum: Number.POSITIVE_INFINITY }],
    ['an infinite sqNorm', { sqNorm: Number.NEGATIVE_INFINITY }],
  ])(
    'decodes a gradient with %s: a diverged run is data, which the gather round refuses as non_finite',
    (_name, patch) => {
      const { message } = decodeFrame(rawFrame({ ...gradient, ...patch, bodyLength: 1 }, new Uint8Array(4)));
      expect(message).toMatchObject(patch);
    },
  );

  it('refuses a work micro-batch whose end is not after its start with BAD_MESSAGE naming it', () => {
    for (const end of [4, 3]) {
      const bad = { ...work(false), microBatches: [{ id: 0, start: 4, end }] };
      const err = protocolErrorFrom(() => decodeFrame(rawFrame({ ...bad, bodyLength: -1 })));
      expect(err.code).toBe('BAD_MESSAGE');
      expect(err.message).toMatch(/^work\.microBatches\[0\]\.end: expected > start \(4\)/);
    }
  });

  it('refuses a hello whose workerName is not a string, naming hello.workerName', () => {
    const err = protocolErrorFrom(() => decodeFrame(rawFrame({ ...hello, workerName: 7, bodyLength: -1 })));
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message).toMatch(/^hello\.workerName: expected a string/);
  });

  it('refuses a work message whose hasWeights is not a boolean, naming work.hasWeights', () => {
    const err = protocolErrorFrom(() => decodeFrame(rawFrame({ ...work(false), hasWeights: 1, bodyLength: -1 })));
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message).toMatch(/^work\.hasWeights: expected a boolean, got 1/);
  });

  it('refuses a welcome param with a zero dimension, naming the param and dimension', () => {
    const bad = { ...welcome, params: [{ name: 'w', shape: [3, 0] }] };
    const err = protocolErrorFrom(() => decodeFrame(rawFrame({ ...bad, bodyLength: -1 })));
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message).toMatch(/^welcome\.params\[0\]\.shape\[1\]: expected a positive integer, got 0/);
  });
});

describe('validateMessage', () => {
  it('refuses a header that is not an object with BAD_MESSAGE', () => {
    for (const raw of [null, 42, 'hello', [hello]]) {
      const err = protocolErrorFrom(() => validateMessage(raw));
      expect(err.code).toBe('BAD_MESSAGE');
      expect(err.message).toMatch(/^message\.header: expected an object/);
    }
  });

  it('names the index of a micro-batch whose id or start has the wrong type', () => {
    const badId = protocolErrorFrom(() =>
      validateMessage({
        ...work(false),
        microBatches: [
          { id: 0, start: 0, end: 4 },
          { id: -1, start: 4, end: 8 },
        ],
      }),
    );
    expect(badId.code).toBe('BAD_MESSAGE');
    expect(badId.message).toMatch(/^work\.microBatches\[1\]\.id: /);
    const badStart = protocolErrorFrom(() =>
      validateMessage({ ...work(false), microBatches: [{ id: 0, start: 'x', end: 4 }] }),
    );
    expect(badStart.message).toMatch(/^work\.microBatches\[0\]\.start: /);
  });

  it('names the dataset field of a welcome whose dataset is malformed', () => {
    const err = protocolErrorFrom(() =>
      validateMessage({ ...welcome, dataset: { ...welcome.dataset, trainCount: 0 } }),
    );
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message).toMatch(/^welcome\.dataset\.trainCount: /);
  });

  it("keeps a welcome's per-file digests and names a malformed one", () => {
    const files = [{ name: 'train-images-idx3-ubyte', sha256: 'a'.repeat(64) }];
    const valid = validateMessage({ ...welcome, dataset: { ...welcome.dataset, files } });
    expect(valid).toMatchObject({ dataset: { files } });
    const err = protocolErrorFrom(() =>
      validateMessage({ ...welcome, dataset: { ...welcome.dataset, files: [{ name: 'x', sha256: 7 }] } }),
    );
    expect(err.message).toMatch(/^welcome\.dataset\.files\[0\]\.sha256: /);
  });

  it("keeps a welcome's augmentation and names an unknown one", () => {
    expect(validateMessage({ ...welcome, augment: 'crop-flip' })).toMatchObject({ augment: 'crop-flip' });
    expect(validateMessage(welcome)).not.toHaveProperty('augment');
    const err = protocolErrorFrom(() => validateMessage({ ...welcome, augment: 'mixup' }));
    expect(err.code).toBe('BAD_MESSAGE');
    expect(err.message).toMatch(/^welcome\.augment: expected "none" or "crop-flip", got "mixup"/);
  });

  it('states a body rule for every message type: tensors (state, slice, shard) need one, work and gradient may have one, the rest none', () => {
    expect(BODY_RULE).toEqual({
      hello: 'none',
      welcome: 'none',
      ready: 'none',
      work: 'optional',
      gradient: 'optional',
      error: 'none',
      shutdown: 'none',
      reduced: 'none',
      commit: 'none',
      'state-request': 'none',
      state: 'required',
      probe: 'none',
      'probe-result': 'none',
      'peer-hello': 'none',
      slice: 'required',
      shard: 'required',
    });
  });
});
