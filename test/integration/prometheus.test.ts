// A real training run scraped by a real Prometheus: every panel query of every dashboard
// returns data, and the coordinator's and workers' endpoints are all up.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, startCli, waitForOutput } from '../support/cli.js';
import { PROMETHEUS_BIN, startPrometheus, type PrometheusServer } from '../support/prometheus.js';

const inCi = process.env.CI === 'true';
const dir = mkdtempSync(join(tmpdir(), 'batchlab-prometheus-'));
let run: ChildProcess | null = null;
let prometheus: PrometheusServer | null = null;
afterAll(async () => {
  if (run && run.exitCode === null) run.kill('SIGKILL');
  await prometheus?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Grafana's variables, replaced as Grafana would for "All" and a short time range. */
function expand(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '10s')
    .replaceAll('$__range', '2m')
    .replaceAll('$__interval', '2s')
    .replaceAll('$instance', '.*')
    .replaceAll('$worker', '.*');
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

const title =
  PROMETHEUS_BIN || inCi
    ? 'every dashboard query returns data from a live run'
    : 'every dashboard query returns data from a live run (skipped: prometheus not installed; apt-get install prometheus)';

describe('metrics scraped by a real Prometheus', () => {
  it.skipIf(!PROMETHEUS_BIN && !inCi)(
    title,
    async () => {
      expect(PROMETHEUS_BIN, 'prometheus is required under CI=true (apt-get install prometheus)').not.toBeNull();
      const targets = join(dir, 'targets.json');
      // Long enough to outlive the checks; stopped with SIGINT at the end. Sharded, so the peer-link
      // panels have data too (the coordinator still serves every star-era series).
      run = startCli([
        'local',
        '--workers',
        '2',
        '--reducer',
        'sharded',
        '--dataset',
        'synthetic',
        '--hidden',
        '64',
        '--global-batch',
        '64',
        '--micro-batch',
        '16',
        '--steps',
        '100000',
        '--eval-every',
        '5',
        '--targets-file',
        targets,
      ]);
      let output = '';
      run.stderr!.on('data', (d) => (output += d));
      await waitForOutput(run, /2 workers ready/);
      prometheus = await startPrometheus(dir, targets);
      const p = prometheus;

      // Coordinator + 2 workers up, and enough scrapes for rate() over 10 s windows.
      await waitFor(async () => (await p.query('count(up == 1)'))[0]?.value[1] === '3', 'three targets up');
      await waitFor(
        async () => Number((await p.query('min(count_over_time(batchlab_tensors[1m]))'))[0]?.value[1] ?? 0) >= 6,
        'six scrapes of every target',
      );
      const roles = (await p.query('count by (role) (batchlab_tensors)')).map((r) => r.metric.role).sort();
      expect(roles).toEqual(['coordinator', 'worker']);

      // Every endpoint in the targets file also answers /healthz.
      const groups = JSON.parse(readFileSync(targets, 'utf8')) as { targets: string[] }[];
      const health = await Promise.all(
        groups.map(
          async (g) =>
            (await fetch(`http://${g.targets[0]}/healthz`)).json() as Promise<{ status: string; role: string }>,
        ),
      );
      expect(health.map((h) => `${h.status} ${h.role}`).sort()).toEqual(['ok coordinator', 'ok worker', 'ok worker']);

      const empty: string[] = [];
      let checked = 0;
      for (const file of readdirSync(join(ROOT, 'grafana/dashboards')).filter((f) => f.endsWith('.json'))) {
        const dashboard = JSON.parse(readFileSync(join(ROOT, 'grafana/dashboards', file), 'utf8'));
        for (const panel of dashboard.panels) {
          for (const target of panel.targets ?? []) {
            const result = await p.query(expand(target.expr));
            checked++;
            if (result.length === 0) empty.push(`${file} / ${panel.title} / ${target.refId}: ${target.expr}`);
          }
        }
        for (const variable of dashboard.templating.list) {
          const metric = /label_values\((\w+), (\w+)\)/.exec(variable.definition ?? '');
          if (!metric) continue;
          const values = await p.query(`count by (${metric[2]}) (${metric[1]})`);
          if (values.length === 0) empty.push(`${file} / variable ${variable.name}`);
        }
      }
      expect(empty, 'queries without data').toEqual([]);
      expect(checked).toBeGreaterThanOrEqual(16);

      // The values are the run's, not placeholders.
      const steps = Number((await p.query('batchlab_steps_total'))[0]!.value[1]);
      expect(steps).toBeGreaterThan(5);
      const efficiency = Number((await p.query('batchlab_scaling_efficiency_ratio'))[0]!.value[1]);
      expect(efficiency).toBeGreaterThan(0);
      expect(efficiency).toBeLessThanOrEqual(1);
      const workerSeries = await p.query('batchlab_worker_throughput_samples_per_second');
      expect(workerSeries.map((s) => s.metric.worker).sort()).toEqual(['1', '2']);

      run.kill('SIGINT');
      const code = await new Promise<number | null>((resolve) => run!.once('exit', (c) => resolve(c)));
      expect(code, output.slice(-2000)).toBe(130);
    },
    180_000,
  );
});
