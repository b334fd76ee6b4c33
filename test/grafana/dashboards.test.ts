// The Grafana provisioning and dashboards are valid, consistent with each other, and query only
// metrics the code defines; the Prometheus config passes promtool.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.js';
import { definedMetricNames, metricNamesIn } from '../support/metric-names.js';
import { expandGrafanaVariables } from '../support/prometheus.js';

const GRAFANA = join(ROOT, 'grafana');
/** The oldest Grafana the dashboards are written for (docs/DEPLOY.md). */
const GRAFANA_MIN_VERSION = '11.1.0';
const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
const inCi = process.env.CI === 'true';
const tmp = mkdtempSync(join(tmpdir(), 'batchlab-dashboards-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * Fields of dcgm-exporter's default counters (etc/default-counters.csv of NVIDIA/dcgm-exporter)
 * the dashboard may use: the exporter as deploy/ runs it exports these without a counters file.
 */
const DCGM_DEFAULT_FIELDS = ['DCGM_FI_DEV_GPU_UTIL', 'DCGM_FI_DEV_FB_USED', 'DCGM_FI_DEV_FB_FREE'];

/**
 * promtool has no command that parses a bare expression; `check rules` parses each rule's expr
 * with Prometheus's own PromQL parser, so every query becomes one recording rule.
 */
function promtoolCheckExprs(exprs: string[]): { ok: boolean; out: string } {
  const file = join(tmp, `queries-${exprs.length}.yml`);
  const rules = exprs.map((expr, i) => ({
    record: `batchlab_dashboard_query_${i}`,
    expr: expandGrafanaVariables(expr),
  }));
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
  const result = spawnSync(promtool!, ['check', 'rules', file], { encoding: 'utf8' });
  return { ok: result.status === 0, out: `${result.stdout}${result.stderr}` };
}
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
  description?: string;
  datasource?: { type: string; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; refId: string; datasource?: { type: string; uid: string } }[];
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

  it('points every panel, query and query variable at the datasource variable, never at a fixed uid', () => {
    for (const p of panels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      for (const t of p.targets ?? [])
        expect(t.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
    }
    const queries = json.templating.list.filter((v: { type: string }) => v.type === 'query');
    expect(queries.length).toBeGreaterThan(0);
    for (const v of queries) expect(v.datasource, v.name).toEqual({ type: 'prometheus', uid: '${datasource}' });
    // An import into another Grafana must not carry this repository's uid anywhere.
    expect(JSON.stringify(json)).not.toContain(datasourceUid);
  });

  it('asks for the Prometheus on import (__inputs, __requires) and takes the provisioned one when provisioned', () => {
    const variable = json.templating.list[0];
    expect(variable).toMatchObject({ name: 'datasource', type: 'datasource', query: 'prometheus' });
    // Import replaces ${DS_PROMETHEUS} with the datasource the user picks. Provisioning replaces
    // nothing: the value matches no datasource and Grafana takes the first Prometheus one, which
    // is the provisioned one because grafana/provisioning defines exactly one.
    expect(variable.current.value).toBe('${DS_PROMETHEUS}');
    expect(json.__inputs).toEqual([
      expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }),
    ]);
    expect(datasources.datasources.filter((d: { type: string }) => d.type === 'prometheus')).toHaveLength(1);
    const requires = json.__requires.map((r: { type: string; id: string }) => `${r.type}/${r.id}`);
    expect(requires).toEqual(expect.arrayContaining(['grafana/grafana', 'datasource/prometheus']));
    for (const type of new Set(panels.map((p) => p.type))) expect(requires, type).toContain(`panel/${type}`);
    expect(json.__requires.find((r: { id: string }) => r.id === 'grafana').version).toBe(GRAFANA_MIN_VERSION);
  });

  it('says in each efficiency panel which definition it shows: live (compute / wall) or measured (against 1 worker)', () => {
    const exprsOf = (p: Panel): string => (p.targets ?? []).map((t) => t.expr).join('\n');
    const live = panels.filter((p) => exprsOf(p).includes('batchlab_scaling_efficiency_ratio'));
    const measured = panels.filter((p) => exprsOf(p).includes('batchlab_sweep_scaling_efficiency_ratio'));
    expect(live.length).toBeGreaterThanOrEqual(2);
    expect(measured.length).toBeGreaterThanOrEqual(1);
    for (const p of live) {
      expect(p.title, p.title).toMatch(/\blive\b/i);
      expect(p.title).toMatch(/compute \/ wall/);
      expect(p.description).toMatch(/[Ll]ive definition/);
    }
    for (const p of measured) {
      expect(p.title, p.title).toMatch(/\bmeasured\b/i);
      expect(p.title + p.description).toMatch(/1 worker/);
      expect(p.description).toContain('throughput(N) / (N × throughput(1');
    }
    // The same definitions as docs/METRICS.md.
    const doc = readFileSync(join(ROOT, 'docs/METRICS.md'), 'utf8');
    expect(doc).toContain('measured efficiency = throughput(N workers) / (N × throughput(1 worker))');
    expect(doc).toMatch(/The measured definition is the one to quote/);
  });

  it("charts the sweep's measured efficiency against global batch size, and its points as a table", () => {
    const chart = panels.find(
      (p) =>
        p.type === 'barchart' &&
        (p.targets ?? []).some((t) => t.expr.includes('batchlab_sweep_scaling_efficiency_ratio')),
    );
    expect(chart, 'a bar chart of measured efficiency by global batch size').toBeDefined();
    expect(chart!.targets![0]!.expr).toMatch(/by \(global_batch_size, workers\)/);
    expect(chart!.options!.xField).toBe('global_batch_size\\workers');
    expect(chart!.transformations!.map((t) => t.id)).toContain('groupingToMatrix');
    const table = panels.find((p) => p.type === 'table' && p.title.includes('Sweep'));
    const exprs = (table?.targets ?? []).map((t) => t.expr).join('\n');
    for (const name of [
      'batchlab_sweep_scaling_efficiency_ratio',
      'batchlab_sweep_throughput_samples_per_second',
      'batchlab_sweep_steps_to_target',
    ])
      expect(exprs).toContain(name);
  });

  it('draws GPU utilisation and memory from dcgm-exporter, with fields of its default counters', () => {
    const used = new Set(
      panels.flatMap((p) => (p.targets ?? []).flatMap((t) => t.expr.match(/\bDCGM_FI_[A-Z0-9_]+/g) ?? [])),
    );
    expect([...used].sort()).toEqual(['DCGM_FI_DEV_FB_FREE', 'DCGM_FI_DEV_FB_USED', 'DCGM_FI_DEV_GPU_UTIL']);
    for (const name of used) expect(DCGM_DEFAULT_FIELDS, name).toContain(name);
  });

  it.skipIf(!promtool && !inCi)(
    promtool || inCi
      ? 'every panel query is valid PromQL (promtool check rules)'
      : 'every panel query is valid PromQL (skipped: promtool not installed; apt-get install prometheus)',
    () => {
      expect(promtool, 'promtool is required under CI=true (apt-get install prometheus)').toBeDefined();
      const exprs = panels.flatMap((p) =>
        (p.targets ?? []).map((t) => ({ what: `${p.title} ${t.refId}`, expr: t.expr })),
      );
      expect(exprs.length).toBeGreaterThanOrEqual(panels.length);
      expect(promtoolCheckExprs(exprs.map((e) => e.expr))).toEqual({ ok: true, out: expect.stringMatching(/SUCCESS/) });
      // The check fails on a broken query (so the pass above means something).
      const broken = promtoolCheckExprs([...exprs.map((e) => e.expr), 'sum by (le (rate(x[1m]))']);
      expect(broken.ok).toBe(false);
    },
  );

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
