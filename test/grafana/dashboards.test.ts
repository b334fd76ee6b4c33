// The Grafana provisioning and dashboards are valid, consistent with each other, and query only
// metrics the code defines; the Prometheus config passes promtool.

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.js';
import { definedMetricNames, metricNamesIn } from '../support/metric-names.js';

const GRAFANA = join(ROOT, 'grafana');
const dashboardFiles = readdirSync(join(GRAFANA, 'dashboards')).filter((f) => f.endsWith('.json'));
const dashboards = dashboardFiles.map((f) => ({
  file: f,
  json: JSON.parse(readFileSync(join(GRAFANA, 'dashboards', f), 'utf8')),
}));
const datasources = parseYaml(readFileSync(join(GRAFANA, 'provisioning/datasources/prometheus.yaml'), 'utf8'));
const providers = parseYaml(readFileSync(join(GRAFANA, 'provisioning/dashboards/batchlab.yaml'), 'utf8'));

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  options?: Record<string, unknown>;
  transformations?: { id: string; options: Record<string, unknown> }[];
}

describe('grafana provisioning', () => {
  it('provisions one Prometheus datasource with a fixed uid and a file dashboard provider', () => {
    expect(datasources.apiVersion).toBe(1);
    expect(datasources.datasources).toHaveLength(1);
    expect(datasources.datasources[0]).toMatchObject({
      type: 'prometheus',
      uid: 'batchlab-prometheus',
      access: 'proxy',
    });
    expect(providers.apiVersion).toBe(1);
    expect(providers.providers[0]).toMatchObject({ type: 'file', options: { path: '/var/lib/grafana/dashboards' } });
  });

  it('has dashboards with unique, stable uids and titles on the current schema', () => {
    expect(dashboards.length).toBeGreaterThanOrEqual(1);
    const uids = dashboards.map((d) => d.json.uid);
    expect(new Set(uids).size).toBe(uids.length);
    expect(new Set(dashboards.map((d) => d.json.title)).size).toBe(dashboards.length);
    for (const { json } of dashboards) {
      expect(json.uid).toMatch(/^[a-zA-Z0-9_-]{8,40}$/);
      expect(json.schemaVersion).toBe(42);
      expect(json.id).toBeNull();
    }
  });
});

describe.each(dashboards)('dashboard $file', ({ json }) => {
  const panels: Panel[] = json.panels;
  const datasourceUid = datasources.datasources[0].uid;

  it('has at least 8 panels with unique ids inside the 24-column grid', () => {
    expect(panels.length).toBeGreaterThanOrEqual(8);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      expect(p.gridPos.w).toBeGreaterThan(0);
      expect(p.gridPos.h).toBeGreaterThan(0);
    }
  });

  it('points every panel, query and variable at the provisioned datasource uid', () => {
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe(datasourceUid);
      for (const t of p.targets ?? []) expect(t.datasource?.uid ?? datasourceUid, p.title).toBe(datasourceUid);
    }
    for (const v of json.templating.list) if (v.type === 'query') expect(v.datasource.uid).toBe(datasourceUid);
  });

  it('queries only metric names the code defines', async () => {
    const defined = await definedMetricNames();
    const used = new Set<string>();
    for (const p of panels) for (const t of p.targets ?? []) for (const name of metricNamesIn(t.expr)) used.add(name);
    for (const v of json.templating.list) for (const name of metricNamesIn(v.definition ?? '')) used.add(name);
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) expect(defined, `${name} is used by the dashboard but defined nowhere`).toContain(name);
  });

  it('covers the views users study, including efficiency with batch size on the x-axis', () => {
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    for (const name of [
      'batchlab_throughput_samples_per_second',
      'batchlab_scaling_efficiency_ratio',
      'batchlab_step_phase_seconds',
      'batchlab_worker_compute_seconds',
      'batchlab_gradient_bytes_total',
      'batchlab_train_loss',
      'batchlab_eval_accuracy',
      'batchlab_learning_rate',
      'batchlab_gradient_noise_scale',
      'batchlab_workers_connected',
      'batchlab_microbatch_reassignments_total',
      'batchlab_rejected_messages_total',
    ])
      expect(exprs).toContain(name);
    const byBatch = panels.find(
      (p) =>
        p.type === 'barchart' && (p.targets ?? []).some((t) => t.expr.includes('batchlab_scaling_efficiency_ratio')),
    );
    expect(byBatch, 'a bar chart of efficiency grouped by global batch size').toBeDefined();
    expect(byBatch!.targets![0]!.expr).toMatch(/by \(global_batch_size, workers\)/);
    expect(byBatch!.options!.xField).toBe('global_batch_size\\workers');
    expect(byBatch!.transformations!.map((t) => t.id)).toContain('groupingToMatrix');
  });

  it('offers coordinator and worker template variables', () => {
    const names = json.templating.list.map((v: { name: string }) => v.name);
    expect(names).toEqual(expect.arrayContaining(['instance', 'worker']));
  });
});

describe('deploy/prometheus.yml', () => {
  const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
  const inCi = process.env.CI === 'true';

  it('parses as YAML and scrapes batchlab through file_sd', () => {
    const config = parseYaml(readFileSync(join(ROOT, 'deploy/prometheus.yml'), 'utf8'));
    expect(config.scrape_configs[0].file_sd_configs[0].files[0]).toMatch(/\.json$/);
  });

  it('scrapes the port the sweep metrics docs name (batchlab sweep --metrics-port)', () => {
    const config = parseYaml(readFileSync(join(ROOT, 'deploy/prometheus.yml'), 'utf8'));
    const sweep = config.scrape_configs.find((c: { job_name: string }) => c.job_name === 'batchlab-sweep');
    const port = /^127\.0\.0\.1:(\d+)$/.exec(sweep.static_configs[0].targets[0])![1]!;
    const doc = readFileSync(join(ROOT, 'docs/METRICS.md'), 'utf8');
    expect(doc).toContain(`batchlab sweep --global-batch 64,256,1024 --workers 1,2,4 --metrics-port ${port}`);
    expect(doc).toContain(`- targets: ["127.0.0.1:${port}"]`);
  });

  it.skipIf(!promtool && !inCi)(
    promtool || inCi
      ? 'passes promtool check config'
      : 'passes promtool check config (skipped: promtool not installed; apt-get install prometheus)',
    () => {
      expect(promtool, 'promtool is required under CI=true (apt-get install prometheus)').toBeDefined();
      const out = execFileSync(promtool!, ['check', 'config', join(ROOT, 'deploy/prometheus.yml')], {
        encoding: 'utf8',
      });
      expect(out).toMatch(/SUCCESS/);
    },
  );
});
