import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { decodeFrame, encodeFrame, FrameEncoder } from '../../shared/codec.js';
import { ProtocolError } from '../../shared/errors.js';
import { decodeFloat16, encodeFloat16, float16Bits, float16ScaleExponent } from '../../shared/float16.js';
import type { GradientMessage, WorkMessage } from '../../shared/protocol.js';

/** Reference float16 value of a bit pattern, straight from the IEEE 754 definition. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

describe('float16Bits (round to nearest, ties to even)', () => {
  it.each([
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
  ])('encodes %f as 0x%s', (x, bits) => {
    expect(float16Bits(x)).toBe(bits);
  });

  it('rounds ties to even: 1 + 2^-11 goes down to 1, 1 + 3·2^-11 goes up to 1 + 2^-9', () => {
    expect(float16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(float16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
  });

  it('overflows to infinity past the largest finite half (65520 rounds up, 65519 down)', () => {
    expect(float16Bits(65519)).toBe(0x7bff);
    expect(float16Bits(65520)).toBe(0x7c00);
  });

  it('underflows to zero below half the smallest subnormal, and ties at exactly half go to even (zero)', () => {
    expect(float16Bits(2 ** -26)).toBe(0);
    expect(float16Bits(2 ** -25)).toBe(0);
    expect(float16Bits(2 ** -25 * 1.5)).toBe(1);
  });

  it('keeps NaN a NaN', () => {
    expect(Number.isNaN(halfValue(float16Bits(NaN)))).toBe(true);
  });

  it('gives the nearest half for every one of 20,000 seeded random float32 values, across the normal and subnormal range', () => {
    let seed = 12345;
    const random = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 20_000; i++) {
      const x = Math.fround((random() - 0.5) * 2 ** Math.floor(random() * 40 - 26));
      const h = float16Bits(x);
      const v = halfValue(h);
      // No other finite half is nearer; on a tie the chosen one has an even mantissa.
      const up = halfValue(h + 1);
      const down = halfValue(h === 0 || h === 0x8000 ? h : h - 1);
      const err = Math.abs(v - x);
      if (Number.isFinite(up)) expect(err).toBeLessThanOrEqual(Math.abs(up - x));
      expect(err).toBeLessThanOrEqual(Math.abs(down - x));
      if (Math.abs(up - x) === err && up !== v) expect(h & 1).toBe(0);
    }
  });
});

describe('float16 rounding, exhaustively at every tie', () => {
  it('sends each midpoint between neighbouring halves to the even one, and a float32 step either side to the nearer', () => {
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    const step = (x: number, by: number): number => {
      f[0] = x;
      u[0]! += by;
      return f[0];
    };
    for (let h = 0; h < 0x7bff; h++) {
      const mid = (halfValue(h) + halfValue(h + 1)) / 2; // 12 significant bits: exact in float32
      expect(Math.fround(mid)).toBe(mid);
      const even = h % 2 === 0 ? h : h + 1;
      expect(float16Bits(mid), `tie above 0x${h.toString(16)}`).toBe(even);
      expect(float16Bits(-mid)).toBe(even | 0x8000);
      expect(float16Bits(step(mid, -1))).toBe(h);
      expect(float16Bits(step(mid, 1))).toBe(h + 1);
    }
  });
});

describe('encodeFloat16 with a scale', () => {
  it('gives the bits of float16(float32(x × 2^k)) for every k it may meet, over all float32 exponents, NaN and infinities', () => {
    const f = new Float32Array(4000);
    const u = new Uint32Array(f.buffer);
    let seed = 99;
    const random = (): number => (seed = (seed * 1103515245 + 12345) >>> 0);
    for (let i = 0; i < u.length; i++) u[i] = random();
    f.set([0, -0, Infinity, -Infinity, NaN, 1e-45, -1.1754942e-38, 3.4028235e38, 1 + 2 ** -11, 65520], 0);
    const out = new Uint16Array(f.length);
    for (const k of [-100, -37, -5, -1, 0, 1, 7, 29, 64, 100]) {
      encodeFloat16(f, out, k);
      for (let i = 0; i < f.length; i++) {
        const expected = float16Bits(Math.fround(f[i]! * 2 ** k));
        if (Number.isNaN(f[i]!)) expect(out[i]! & 0x7c00, `NaN at ${i}`).toBe(0x7c00);
        else expect(out[i], `k=${k}: 0x${u[i]!.toString(16)}`).toBe(expected);
      }
    }
  });

  it('refuses a scale exponent outside [-100, 100]', () => {
    expect(() => encodeFloat16(new Float32Array(1), new Uint16Array(1), 101)).toThrow(/scale exponent 101/);
  });
});

describe('float16 arrays with a power-of-two scale', () => {
  it('chooses the scale that puts the largest magnitude in [2^14, 2^15)', () => {
    for (const max of [1e-6, 0.37, 1, 3000, 1e7]) {
      const k = float16ScaleExponent(Float32Array.of(max / 3, -max, 0));
      const scaled = max * 2 ** k;
      expect(scaled).toBeGreaterThanOrEqual(2 ** 14);
      expect(scaled).toBeLessThan(2 ** 15);
    }
    expect(float16ScaleExponent(new Float32Array(4))).toBe(0);
    expect(float16ScaleExponent(Float32Array.of(1, NaN, Infinity))).toBe(0);
  });

  it('round-trips within float16 precision relative to the largest value, far outside float16 range', () => {
    const values = new Float32Array(1000).map((_, i) => Math.sin(i) * 1e-5 * (1 + (i % 7)));
    const k = float16ScaleExponent(values);
    const halves = new Uint16Array(values.length);
    encodeFloat16(values, halves, k);
    const back = new Float32Array(values.length);
    decodeFloat16(halves, back, k);
    const max = Math.max(...values.map(Math.abs));
    for (let i = 0; i < values.length; i++) {
      // Half a unit in the last place of an 11-bit significand, relative to the value itself for
      // normal halves (everything here is within 2^14 of the maximum, so stays normal or near it).
      expect(Math.abs(back[i]! - values[i]!)).toBeLessThanOrEqual(
        Math.max(Math.abs(values[i]!) * 2 ** -11, max * 2 ** -24),
      );
    }
  });

  it('values exactly representable as scaled halves come back bit for bit', () => {
    const values = Float32Array.of(0.25, -0.5, 1.5, 3, -1024, 2 ** -10);
    const k = float16ScaleExponent(values);
    const halves = new Uint16Array(values.length);
    encodeFloat16(values, halves, k);
    const back = new Float32Array(values.length);
    decodeFloat16(halves, back, k);
    expect(back).toEqual(values);
  });
});

const gradient: GradientMessage = {
  type: 'gradient',
  step: 3,
  microBatchId: 1,
  samples: 32,
  lossSum: 70.5,
  correct: 20,
  computeMs: 12.5,
  sqNorm: 0.25,
};

describe('frames with float16 bodies', () => {
  it('carry half the body bytes and decode to the rounded values, with non-finite values kept', () => {
    const body = new Float32Array(1001).map((_, i) => (i - 500) * 0.013);
    body[7] = NaN;
    body[8] = Infinity;
    const f32 = encodeFrame(gradient, body);
    const f16 = encodeFrame(gradient, body, 'f16');
    expect(f32.length - f16.length).toBeGreaterThanOrEqual(body.length * 2 - 64);
    const { message, body: decoded } = decodeFrame(f16);
    expect(message).toEqual(gradient);
    expect(decoded!.length).toBe(body.length);
    expect(Number.isNaN(decoded![7])).toBe(true);
    expect(decoded![8]).toBe(Infinity);
    for (let i = 10; i < body.length; i++)
      expect(Math.abs(decoded![i]! - body[i]!)).toBeLessThanOrEqual(Math.abs(body[i]!) * 2 ** -11 + 1e-9);
  });

  it('refuses an unknown body dtype or a bad scale with BAD_FRAME naming the field', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const frame = (extra: Record<string, unknown>): Buffer => {
      const header = packr.pack({ ...gradient, bodyLength: 2, ...extra });
      const out = Buffer.alloc(((4 + header.length + 3) & ~3) + 8);
      out.writeUInt32LE(header.length, 0);
      header.copy(out, 4);
      return out;
    };
    expect(() => decodeFrame(frame({ bodyDtype: 'bf16' }))).toThrow(ProtocolError);
    expect(() => decodeFrame(frame({ bodyDtype: 'bf16' }))).toThrow(/bodyDtype/);
    expect(() => decodeFrame(frame({ bodyDtype: 'f16', bodyScale: 1.5 }))).toThrow(/bodyScale/);
    // A float16 body of 2 values is 4 bytes, not 8.
    expect(() => decodeFrame(frame({ bodyDtype: 'f16', bodyScale: 0 }))).toThrow(/float16/);
  });
});

describe('FrameEncoder', () => {
  it('encodes the same bytes as encodeFrame, for both dtypes', () => {
    const body = new Float32Array(40_000).map((_, i) => Math.cos(i));
    for (const dtype of ['f32', 'f16'] as const) {
      const encoder = new FrameEncoder(dtype);
      const frame = encoder.encode(gradient, body);
      expect(Buffer.compare(frame.bytes, encodeFrame(gradient, body, dtype))).toBe(0);
      frame.release();
    }
  });

  it('reuses a released buffer and never hands out one that is still in use', () => {
    const encoder = new FrameEncoder('f32');
    const body = new Float32Array(100_000);
    const a = encoder.encode(gradient, body);
    const b = encoder.encode(gradient, body);
    expect(a.bytes.buffer).not.toBe(b.bytes.buffer);
    expect(encoder.allocations).toBe(2);
    a.release();
    const c = encoder.encode(gradient, body);
    expect(c.bytes.buffer).toBe(a.bytes.buffer);
    b.release();
    c.release();
    for (let i = 0; i < 50; i++) encoder.encode({ ...gradient, step: i }, body).release();
    expect(encoder.allocations).toBe(2);
  });

  it('gives frames whose body is 4-byte aligned, so the receiver views it without a copy', () => {
    const encoder = new FrameEncoder('f32');
    const body = new Float32Array(70_000).map((_, i) => i);
    const frame = encoder.encode(gradient, body);
    const decoded = decodeFrame(frame.bytes).body!;
    expect(decoded.buffer).toBe(frame.bytes.buffer);
    expect(decoded).toEqual(body);
  });

  it("with a body key, converts a float16 body once and gives encodeFrame's bytes for each frame; a new key converts again", () => {
    const encoder = new FrameEncoder('f16');
    const weights = new Float32Array(60_001).map((_, i) => Math.cos(i) * 0.05);
    const work = (step: number, first: number): WorkMessage => ({
      type: 'work',
      step,
      weightsStep: step,
      hasWeights: true,
      globalBatchSize: 64,
      microBatches: [{ id: first, start: first * 32, end: first * 32 + 32 }],
    });
    for (const [step, worker] of [
      [7, 0],
      [7, 1],
      [8, 0],
      [8, 1],
    ] as const) {
      if (worker === 0) weights.forEach((w, i) => (weights[i] = w * 0.5 + step * 1e-3)); // the optimizer's update between steps
      const frame = encoder.encode(work(step, worker), weights, step);
      expect(
        Buffer.compare(frame.bytes, encodeFrame(work(step, worker), weights, 'f16')),
        `step ${step} worker ${worker}`,
      ).toBe(0);
      frame.release();
    }
  });

  it("bodyFrame: a body written in place and sealed gives encodeFrame's bytes, for both dtypes", () => {
    const values = new Float32Array(50_001).map((_, i) => Math.sin(i) * 1e-3);
    for (const dtype of ['f32', 'f16'] as const) {
      const encoder = new FrameEncoder(dtype);
      for (let round = 0; round < 3; round++) {
        const frame = encoder.bodyFrame(values.length);
        frame.body.set(values);
        const message = { ...gradient, step: round };
        const sealed = frame.seal(message);
        expect(Buffer.compare(sealed.bytes, encodeFrame(message, values, dtype)), `${dtype} round ${round}`).toBe(0);
        const decoded = decodeFrame(sealed.bytes);
        expect(decoded.message).toMatchObject(message);
        if (dtype === 'f32') expect(decoded.body!.buffer).toBe(sealed.bytes.buffer);
        sealed.release();
      }
      expect(encoder.allocations).toBeLessThanOrEqual(1);
    }
  });

  it('bodyFrame: two frames in use never share memory, and a released one is reused', () => {
    const encoder = new FrameEncoder('f32');
    const a = encoder.bodyFrame(30_000);
    const b = encoder.bodyFrame(30_000);
    a.body.fill(1);
    b.body.fill(2);
    expect(a.body.every((x) => x === 1)).toBe(true);
    const sealedA = a.seal(gradient);
    sealedA.release();
    b.release();
    const c = encoder.bodyFrame(30_000);
    expect([a.body.buffer, b.body.buffer]).toContain(c.body.buffer);
    expect(encoder.allocations).toBe(2);
  });

  it('bodyFrame: a header too large for the room in front of the body falls back to a copy, same bytes', () => {
    const encoder = new FrameEncoder('f32');
    const big: WorkMessage = {
      type: 'work',
      step: 3,
      weightsStep: 3,
      hasWeights: true,
      globalBatchSize: 4000,
      microBatches: Array.from({ length: 1000 }, (_, id) => ({ id, start: id * 4, end: id * 4 + 4 })),
    };
    const values = new Float32Array(20_000).map((_, i) => i);
    const frame = encoder.bodyFrame(values.length);
    frame.body.set(values);
    const sealed = frame.seal(big);
    expect(Buffer.compare(sealed.bytes, encodeFrame(big, values))).toBe(0);
    expect(decodeFrame(sealed.bytes).body).toEqual(values);
  });
});
