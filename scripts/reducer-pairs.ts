// Star against sharded at 2 workers on loopback, in interleaved pairs: the measurement behind the
// default of --reducer (README). This machine swings by ±25 points between runs, so one run of
// each decides nothing; the medians of five alternating pairs do.
//
//   npm run build && node dist/scripts/reducer-pairs.js [pairs=5]

import { measureRun, type RunMeasurement } from '../bench/scaling.js';
import { median } from '../bench/support.js';
import type { ReducerName } from '../coordinator/reducer.js';
import { parseLocalSettings } from '../cli/options.js';

const pairs = Number(process.argv[2] ?? 5);
const rate = (n: number): string => Math.round(n).toLocaleString('en-US');

for (const b of [64, 512]) {
  const rates: Record<ReducerName, number[]> = { star: [], sharded: [] };
  for (let i = 0; i < pairs; i++) {
    const order: ReducerName[] = i % 2 ? ['sharded', 'star'] : ['star', 'sharded'];
    for (const reducer of order) {
      const run: RunMeasurement = await measureRun(
        { model: 'mlp', globalBatchSize: b, workers: 2, microBatch: b / 2, warmupSteps: 20, timedSteps: 60, reducer },
        { configure: parseLocalSettings },
      );
      rates[reducer].push(run.samplesPerSecond);
    }
  }
  const star = median(rates.star);
  const sharded = median(rates.sharded);
  console.log(
    `MLP B=${b}, 2 workers, medians of ${pairs} interleaved pairs: star ${rate(star)} samples/s, sharded ${rate(sharded)} (sharded/star ${(sharded / star).toFixed(2)}); ` +
      `star ${rates.star.map(rate).join(', ')}; sharded ${rates.sharded.map(rate).join(', ')}`,
  );
}
