// The Prometheus configurations under deploy/ besides deploy/prometheus.yml (which
// test/grafana/dashboards.test.ts checks): the compose one (DNS service discovery) and the
// Kubernetes one (pod discovery). promtool checks them where it can.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEPLOY, inCi, readYaml, readYamlOne, type Json } from './support.js';

const PROMTOOL = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p)) ?? null;
const tmp = mkdtempSync(join(tmpdir(), 'batchlab-promtool-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Whether this promtool knows kubernetes_sd_configs (Debian builds Prometheus without it). */
function promtoolHasKubernetesSd(): boolean {
  if (!PROMTOOL) return false;
  const probe = join(tmp, 'probe.yml');
  writeFileSync(probe, 'scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n      - role: pod\n');
  return spawnSync(PROMTOOL, ['check', 'config', probe], { encoding: 'utf8' }).status === 0;
}
const K8S_SD = promtoolHasKubernetesSd();

describe('deploy/prometheus-compose.yml', () => {
  it.skipIf(!PROMTOOL && !inCi)(
    PROMTOOL || inCi
      ? 'passes promtool check config'
      : 'passes promtool check config (skipped: promtool not installed; apt-get install prometheus)',
    () => {
      expect(PROMTOOL, 'promtool is required under CI=true (apt-get install prometheus)').not.toBeNull();
      expect(
        execFileSync(PROMTOOL!, ['check', 'config', join(DEPLOY, 'prometheus-compose.yml')], { encoding: 'utf8' }),
      ).toMatch(/SUCCESS/);
    },
  );

  it.skipIf(!PROMTOOL && !inCi)(
    PROMTOOL || inCi
      ? 'promtool rejects a broken copy of it (an unknown DNS record type)'
      : 'promtool rejects a broken copy of it (skipped: promtool not installed; apt-get install prometheus)',
    () => {
      expect(PROMTOOL, 'promtool is required under CI=true (apt-get install prometheus)').not.toBeNull();
      const broken = join(tmp, 'broken-compose.yml');
      writeFileSync(
        broken,
        JSON.stringify({
          ...readYamlOne(join(DEPLOY, 'prometheus-compose.yml')),
          scrape_configs: [{ job_name: 'b', dns_sd_configs: [{ names: ['worker'], type: 'AAAAX', port: 9401 }] }],
        }),
      );
      expect(spawnSync(PROMTOOL!, ['check', 'config', broken], { encoding: 'utf8' }).status).not.toBe(0);
    },
  );
});

describe('deploy/prometheus-kubernetes.yml', () => {
  const title = 'passes promtool check config';
  it.skipIf(!K8S_SD)(
    K8S_SD
      ? title
      : `${title} (skipped: ${PROMTOOL ? "this promtool is built without Kubernetes service discovery (Debian's package)" : 'promtool not installed'})`,
    () => {
      expect(
        execFileSync(PROMTOOL!, ['check', 'config', join(DEPLOY, 'prometheus-kubernetes.yml')], { encoding: 'utf8' }),
      ).toMatch(/SUCCESS/);
    },
  );

  it('keeps the port named "metrics" of pods labelled app.kubernetes.io/name=batchlab, as the manifests name them', () => {
    const job = readYamlOne(join(DEPLOY, 'prometheus-kubernetes.yml')).scrape_configs[0];
    expect(job.kubernetes_sd_configs[0].selectors[0].label).toBe('app.kubernetes.io/name=batchlab');
    const keep = job.relabel_configs.filter((r: Json) => r.action === 'keep');
    expect(keep).toContainEqual({
      source_labels: ['__meta_kubernetes_pod_container_port_name'],
      regex: 'metrics',
      action: 'keep',
    });
    for (const file of ['coordinator.yaml', 'workers.yaml']) {
      const pod = (readYaml(join(DEPLOY, 'k8s', file)) as Json[]).find((d) => d.kind === 'Job').spec.template;
      expect(pod.metadata.labels['app.kubernetes.io/name']).toBe('batchlab');
      expect(pod.spec.containers[0].ports.map((p: Json) => p.name)).toContain('metrics');
    }
  });
});
