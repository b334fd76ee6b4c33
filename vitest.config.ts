import { defineConfig } from 'vitest/config';

// Integration tests start real processes that compete for the machine's two cores, so files
// run one after another; each test sets its own timeout where it trains.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
