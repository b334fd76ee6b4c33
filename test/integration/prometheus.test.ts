// A real training run scraped by a real Prometheus: every panel query of every dashboard
// returns data, and the coordinator's and workers' endpoints are all up.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, startCli, waitForOutput } from '../support/cli.js';
import {
  expandGrafanaVariables,
  freePort,
  PROMETHEUS_BIN,
  startPrometheus,
  type PrometheusServer,
} from '../support/prometheus.js';

const inCi = process.env.CI === 'true';
const dir = mkdtempSync(join(tmpdir(), 'batchlab-prometheus-'));
let run: ChildProcess | null = null;
let prometheus: PrometheusServer | null = null;
afterAll(async () => {
  if (run && run.exitCode === null) run.kill('SIGKILL');
  await prometheus?.stop();
  rmSync(dir, { recursive: true, force: true });
});

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
      // The sweep that fills the sweep panels later serves on this port (batchlab sweep --metrics-port).
      const sweepPort = await freePort();
      const sweepTargets = join(dir, 'sweep-targets.json');
      writeFileSync(sweepTargets, JSON.stringify([{ targets: [`127.0.0.1:${sweepPort}`] }]));
      prometheus = await startPrometheus(dir, targets, sweepTargets);
      const p = prometheus;

      // Coordinator + 2 workers up, and enough scrapes for rate() over 10 s windows.
      // The sweep's endpoint is down until the sweep below: 4 targets, 3 up (each target's `up`
      // appears at its first scrape, and the two targets files' scrapes are not in step).
      await waitFor(async () => (await p.query('count(up)'))[0]?.value[1] === '4', 'four targets scraped');
      await waitFor(async () => (await p.query('count(up == 1)'))[0]?.value[1] === '3', 'three targets up');
      const down = await p.query('up == 0');
      expect(down.map((r) => r.metric.instance)).toEqual([`127.0.0.1:${sweepPort}`]);
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
      // Sweep panels are checked after a sweep below; GPU panels need NVIDIA's dcgm-exporter on
      // a GPU host, which this machine is not (their PromQL is checked by promtool in
      // test/grafana/dashboards.test.ts).
      const sweepQueries: { where: string; expr: string }[] = [];
      const gpuQueries: string[] = [];
      for (const file of readdirSync(join(ROOT, 'grafana/dashboards')).filter((f) => f.endsWith('.json'))) {
        const dashboard = JSON.parse(readFileSync(join(ROOT, 'grafana/dashboards', file), 'utf8'));
        for (const panel of dashboard.panels) {
          for (const target of panel.targets ?? []) {
            const where = `${file} / ${panel.title} / ${target.refId}: ${target.expr}`;
            if (target.expr.includes('DCGM_')) gpuQueries.push(where);
            else if (target.expr.includes('batchlab_sweep_')) sweepQueries.push({ where, expr: target.expr });
            else {
              const result = await p.query(expandGrafanaVariables(target.expr));
              checked++;
              if (result.length === 0) empty.push(where);
            }
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

      // A small sweep on the scraped port fills the sweep panels, point by point.
      expect(gpuQueries.length).toBe(3);
      expect(sweepQueries.length).toBeGreaterThanOrEqual(4);
      const sweep = await runCli(
        [
          'sweep',
          '--dataset',
          'synthetic',
          '--hidden',
          '32',
          '--global-batch',
          '16,32',
          '--workers',
          '1,2',
          '--steps',
          '10',
          '--target-loss',
          '5',
          '--eval-every',
          '0',
          '--metrics-port',
          String(sweepPort),
        ],
        {},
        240_000,
      );
      expect(sweep.code, sweep.stderr.slice(-2000)).toBe(0);
      // The sweep's endpoint closed with the sweep, so its series are stale by now: each query is
      // asked for its last value over the sweep's lifetime (a subquery), as a Grafana range would show it.
      const lastOf = (expr: string) => `last_over_time((${expr})[10m:1s])`;
      for (const { where, expr } of sweepQueries)
        if ((await p.query(lastOf(expandGrafanaVariables(expr)))).length === 0) empty.push(where);
      expect(empty, 'sweep queries without data').toEqual([]);
      const measured = await p.query(
        lastOf('batchlab_sweep_scaling_efficiency_ratio{global_batch_size="16",workers="1"}'),
      );
      expect(measured.map((r) => r.value[1])).toEqual(['1']);
    },
    420_000,
  );
});
