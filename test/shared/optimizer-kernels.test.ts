import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { compileWat, KERNEL_SOURCE } from '../../scripts/build-wasm-kernels.js';
import { adamUpdate, sgdMomentumUpdate } from '../../shared/kernels/optimizer-kernels.js';
import { OPTIMIZER_KERNELS_WASM_BASE64 } from '../../shared/kernels/optimizer-kernels.wasm.js';
import { createRandom } from '../../shared/data/seeded-random.js';

const root = new URL('../../', import.meta.url);

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Values of both signs over many magnitudes, with the special values sprinkled in. */
function values(n: number, seed: number, scale: number): Float32Array {
  const random = createRandom(seed);
  const out = new Float32Array(n);
  const specials = [0, -0, 1e-45, -3e-39, Infinity, -Infinity, NaN, 3.4e38];
  for (let i = 0; i < n; i++) {
    out[i] =
      i % 97 === 5
        ? specials[((i / 97) % specials.length) | 0]!
        : (random.next() < 0.5 ? -1 : 1) * scale * 10 ** (random.next() * 8 - 4);
  }
  return out;
}

/** The scalar float64 Adam loop (torch.optim.Adam's formula), the kernel's reference. */
function adamReference(
  w: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  c: { b1: number; b2: number; coupled: number; shrink: number; stepSize: number; invSqrtC2: number; eps: number },
): void {
  for (let i = 0; i < w.length; i++) {
    const gi = g[i]! + c.coupled * w[i]!;
    const mi = c.b1 * m[i]! + (1 - c.b1) * gi;
    const vi = c.b2 * v[i]! + (1 - c.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i]! * c.shrink - (c.stepSize * mi) / (Math.sqrt(vi) * c.invSqrtC2 + c.eps);
  }
}

function sgdReference(
  w: Float32Array,
  g: Float32Array,
  v: Float32Array,
  mu: number,
  wd: number,
  lr: number,
  nesterov: boolean,
): void {
  for (let i = 0; i < w.length; i++) {
    const gi = g[i]! + wd * w[i]!;
    const vi = mu * v[i]! + gi;
    v[i] = vi;
    w[i] = w[i]! - lr * (nesterov ? gi + mu * vi : vi);
  }
}

// Lengths around the SIMD width (4) and the 8192-element window, where tails and seams are.
const LENGTHS = [0, 1, 3, 4, 5, 8191, 8192, 8193, 20_003];

describe('optimizer kernels (WebAssembly SIMD)', () => {
  it('ship the bytes that optimizer-kernels.wat compiles to', async () => {
    const source = await readFile(new URL(KERNEL_SOURCE, root), 'utf8');
    const bytes = await compileWat(source);
    expect(
      Buffer.from(OPTIMIZER_KERNELS_WASM_BASE64, 'base64').equals(Buffer.from(bytes)),
      'run: npm run build && node dist/scripts/build-wasm-kernels.js',
    ).toBe(true);
  });

  it("Adam gives the scalar float64 loop's bits over several steps, coupled and decoupled decay", () => {
    for (const n of LENGTHS) {
      for (const [coupled, shrink] of [
        [0, 1],
        [0.01, 1],
        [0, 1 - 1e-3 * 0.05],
      ] as const) {
        const w = values(n, 1 + n, 0.1);
        const m = new Float32Array(n);
        const v = new Float32Array(n);
        const [w2, m2, v2] = [w.slice(), m.slice(), v.slice()];
        for (let t = 1; t <= 3; t++) {
          const g = values(n, 100 * t + n, 1e-3);
          const c = {
            b1: 0.9,
            b2: 0.999,
            coupled,
            shrink,
            stepSize: 1e-3 / (1 - 0.9 ** t),
            invSqrtC2: 1 / Math.sqrt(1 - 0.999 ** t),
            eps: 1e-8,
          };
          adamUpdate(w, g, m, v, c);
          adamReference(w2, g, m2, v2, c);
        }
        const label = `n=${n} coupled=${coupled} shrink=${shrink}`;
        expect(Buffer.compare(bytesOf(w), bytesOf(w2)), label).toBe(0);
        expect(Buffer.compare(bytesOf(m), bytesOf(m2)), label).toBe(0);
        expect(Buffer.compare(bytesOf(v), bytesOf(v2)), label).toBe(0);
      }
    }
  });

  it("momentum SGD gives the scalar float64 loop's bits, plain and Nesterov", () => {
    for (const n of LENGTHS) {
      for (const nesterov of [false, true]) {
        const w = values(n, 3 + n, 0.1);
        const v = new Float32Array(n);
        const [w2, v2] = [w.slice(), v.slice()];
        for (let t = 1; t <= 3; t++) {
          const g = values(n, 300 * t + n, 1e-2);
          sgdMomentumUpdate(w, g, v, 0.9, 5e-4, 0.1, nesterov);
          sgdReference(w2, g, v2, 0.9, 5e-4, 0.1, nesterov);
        }
        expect(Buffer.compare(bytesOf(w), bytesOf(w2)), `n=${n} nesterov=${nesterov}`).toBe(0);
        expect(Buffer.compare(bytesOf(v), bytesOf(v2)), `n=${n} nesterov=${nesterov}`).toBe(0);
      }
    }
  });

  it("refuse arrays whose lengths differ from the weights', naming both", () => {
    const c = { b1: 0.9, b2: 0.999, coupled: 0, shrink: 1, stepSize: 1e-3, invSqrtC2: 1, eps: 1e-8 };
    expect(() =>
      adamUpdate(new Float32Array(8), new Float32Array(7), new Float32Array(8), new Float32Array(8), c),
    ).toThrow(/7 values but the weights have 8/);
    expect(() =>
      sgdMomentumUpdate(new Float32Array(4), new Float32Array(4), new Float32Array(5), 0.9, 0, 0.1, false),
    ).toThrow(/5 values but the weights have 4/);
  });
});
