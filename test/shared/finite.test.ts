import { describe, expect, it } from 'vitest';
import { allFinite } from '../../shared/finite.js';

describe('allFinite', () => {
  it('finds a NaN or an infinity at every position, lanes and tail alike, and passes extremes', () => {
    for (const n of [0, 1, 3, 4, 5, 8, 11]) {
      const ok = new Float32Array(n).map(
        (_, i) => [3.4028234663852886e38, -3.4028234663852886e38, -0, 1e-45, 1][i % 5]!,
      );
      expect(allFinite(ok), `n=${n}`).toBe(true);
      for (let at = 0; at < n; at++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const values = ok.slice();
          values[at] = bad;
          expect(allFinite(values), `n=${n} ${bad} at ${at}`).toBe(false);
        }
      }
    }
  });
});
