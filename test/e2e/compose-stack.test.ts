// The deploy/compose.yaml scenario in real containers (testcontainers): the CPU image built
// from deploy/Dockerfile.cpu, a coordinator and two workers configured exactly as compose.yaml
// configures them, Prometheus with deploy/prometheus-compose.yml, and Grafana with the
// repository's provisioning. Prometheus must see every batchlab target up and the step count
// advance; Grafana must serve the dashboard and answer a query through its datasource.
//
// It needs a Docker engine. Where there is none (this machine and CI have only the docker
// client) it is skipped with the reason in its name, also under CI=true, and it finds that out
// within a few seconds. The same scenario with local processes instead of containers runs
// everywhere in test/integration/prometheus.test.ts.

import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEPLOY, loadCompose, readEnvFile, ROOT, serviceEnvironment, type Json } from '../deploy/support.js';

const ENGINE_CHECK_MS = 5_000;

/** Whether a Docker engine answers, and if not why; never waits longer than ENGINE_CHECK_MS. */
async function dockerEngine(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (process.env.SKIP_DOCKER_TESTS === '1')
    return { ok: false, reason: 'SKIP_DOCKER_TESTS=1 says to treat it as absent' };
  let timer: NodeJS.Timeout | undefined;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ENGINE_CHECK_MS / 1000} s`)), ENGINE_CHECK_MS);
    });
    await Promise.race([getContainerRuntimeClient(), timeout]);
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

const engine = await dockerEngine();
const SCENARIO =
  'compose stack in containers: Prometheus sees the coordinator and 2 workers up and the steps advance, Grafana serves the dashboard';
const title = engine.ok
  ? SCENARIO
  : `${SCENARIO} (skipped: no Docker engine: ${engine.reason}; without an engine this is a skip, not a failure, also under CI=true, because CI has no Docker engine)`;
if (!engine.ok)
  console.warn(
    `test/e2e/compose-stack.test.ts: skipped: no Docker engine (${engine.reason}). The same scenario runs on local processes in test/integration/prometheus.test.ts.`,
  );

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** The build context BuildKit would send for `docker build -f deploy/Dockerfile.cpu .`: the .dockerignore allowlist. */
function stageContext(dir: string): void {
  const allowlist = readFileSync(join(DEPLOY, 'Dockerfile.cpu.dockerignore'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('!'))
    .map((l) => l.slice(1).trim());
  for (const entry of allowlist)
    cpSync(join(ROOT, entry), join(dir, entry), { recursive: true, filter: (src) => !src.includes('node_modules') });
  cpSync(join(DEPLOY, 'Dockerfile.cpu'), join(dir, 'deploy/Dockerfile.cpu'));
}

describe('deploy/compose.yaml, in containers', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }, 120_000);

  it.skipIf(!engine.ok)(
    title,
    async () => {
      const { GenericContainer, Network, Wait } = await import('testcontainers');
      const token = randomBytes(24).toString('hex');
      // compose.yaml as `docker compose up` would read it, with a short synthetic run.
      const model = loadCompose(join(DEPLOY, 'compose.yaml'), {
        ...readEnvFile(join(DEPLOY, '.env.example')),
        BATCHLAB_TOKEN: token,
        WORKERS: '2',
        BATCHLAB_DATASET: 'synthetic',
        BATCHLAB_GLOBAL_BATCH: '64',
        BATCHLAB_MICRO_BATCH: '16',
        BATCHLAB_STEPS: '100000',
        BATCHLAB_EVAL_EVERY: '10',
      });
      const services: Record<string, Json> = model.services;

      // The image (E2E_BATCHLAB_IMAGE reuses one built before).
      let image = process.env.E2E_BATCHLAB_IMAGE;
      if (!image) {
        const context = mkdtempSync(join(tmpdir(), 'batchlab-e2e-context-'));
        cleanups.push(() => Promise.resolve(rmSync(context, { recursive: true, force: true })));
        stageContext(context);
        image = 'batchlab-e2e:cpu';
        await GenericContainer.fromDockerfile(context, 'deploy/Dockerfile.cpu').build(image, { deleteOnExit: true });
      }

      const network = await new Network().start();
      cleanups.push(() => network.stop());
      const start = async (container: InstanceType<typeof GenericContainer>) => {
        const started = await container.withNetwork(network).withStartupTimeout(180_000).start();
        cleanups.push(() => started.stop());
        return started;
      };
      const batchlab = (name: 'coordinator' | 'worker', port: number) =>
        new GenericContainer(image)
          .withNetworkAliases(name)
          .withCommand(services[name].command)
          .withEnvironment(serviceEnvironment(services[name]))
          .withExposedPorts(port)
          .withWaitStrategy(Wait.forHttp('/healthz', port));

      await start(batchlab('coordinator', 9400));
      await Promise.all([start(batchlab('worker', 9401)), start(batchlab('worker', 9401))]);

      const prometheus = await start(
        new GenericContainer(services.prometheus.image)
          .withNetworkAliases('prometheus')
          .withCommand(services.prometheus.command)
          .withCopyFilesToContainer([
            { source: join(DEPLOY, 'prometheus-compose.yml'), target: '/etc/prometheus/prometheus.yml' },
          ])
          .withExposedPorts(9090)
          .withWaitStrategy(Wait.forHttp('/-/ready', 9090)),
      );
      const promUrl = `http://${prometheus.getHost()}:${prometheus.getMappedPort(9090)}`;
      const query = async (expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
        const body = (await (
          await fetch(`${promUrl}/api/v1/query?${new URLSearchParams({ query: expr }).toString()}`)
        ).json()) as Json;
        if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
        return body.data.result;
      };

      // Every target found through DNS (one coordinator, two worker replicas) is up.
      await waitFor(
        async () => (await query('count(up{job="batchlab"} == 1)'))[0]?.value[1] === '3',
        'three batchlab targets up',
        120_000,
      );
      const byService = await query('count by (service) (up{job="batchlab"} == 1)');
      expect(byService.map((r) => `${r.metric.service} ${r.value[1]}`).sort()).toEqual(['coordinator 1', 'worker 2']);
      const roles = await query('count by (service, role) (batchlab_tensors)');
      expect(roles.map((r) => `${r.metric.service}/${r.metric.role} ${r.value[1]}`).sort()).toEqual([
        'coordinator/coordinator 1',
        'worker/worker 2',
      ]);

      // Training runs: the step count advances between scrapes.
      const steps = async (): Promise<number> => Number((await query('batchlab_steps_total'))[0]?.value[1] ?? 0);
      await waitFor(async () => (await steps()) > 0, 'a first step', 120_000);
      const first = await steps();
      await waitFor(async () => (await steps()) > first, 'the step count to advance', 60_000);
      expect(Number((await query('batchlab_workers_connected'))[0]!.value[1])).toBe(2);

      // Grafana with the repository's provisioning, its datasource on the prometheus service.
      const grafanaEnv = serviceEnvironment(services.grafana);
      const grafana = await start(
        new GenericContainer(services.grafana.image)
          .withNetworkAliases('grafana')
          .withEnvironment(grafanaEnv)
          .withCopyDirectoriesToContainer([
            { source: join(ROOT, 'grafana/provisioning'), target: '/etc/grafana/provisioning' },
            { source: join(ROOT, 'grafana/dashboards'), target: '/var/lib/grafana/dashboards' },
          ])
          .withExposedPorts(3000)
          .withWaitStrategy(Wait.forHttp('/api/health', 3000)),
      );
      const grafanaUrl = `http://${grafana.getHost()}:${grafana.getMappedPort(3000)}`;
      const auth = {
        authorization: `Basic ${Buffer.from(`${grafanaEnv.GF_SECURITY_ADMIN_USER}:${grafanaEnv.GF_SECURITY_ADMIN_PASSWORD}`).toString('base64')}`,
      };
      const dashboard = JSON.parse(readFileSync(join(ROOT, 'grafana/dashboards/batchlab.json'), 'utf8'));
      await waitFor(
        async () => (await fetch(`${grafanaUrl}/api/dashboards/uid/${dashboard.uid}`, { headers: auth })).ok,
        'the provisioned dashboard',
        60_000,
      );
      const viaGrafana = (await (
        await fetch(
          `${grafanaUrl}/api/datasources/proxy/uid/batchlab-prometheus/api/v1/query?query=batchlab_steps_total`,
          { headers: auth },
        )
      ).json()) as Json;
      expect(viaGrafana.status).toBe('success');
      expect(Number(viaGrafana.data.result[0].value[1])).toBeGreaterThan(0);
      // The provisioned dashboard queries its datasource variable, unresolved (${DS_PROMETHEUS} is
      // filled only by an import): Grafana then takes the first Prometheus datasource, which must
      // be the provisioned one, and the only one.
      const served = (await (
        await fetch(`${grafanaUrl}/api/dashboards/uid/${dashboard.uid}`, { headers: auth })
      ).json()) as Json;
      expect(served.dashboard.templating.list[0]).toMatchObject({ name: 'datasource', type: 'datasource' });
      const prometheusSources = (
        (await (await fetch(`${grafanaUrl}/api/datasources`, { headers: auth })).json()) as Json[]
      )
        .filter((d) => d.type === 'prometheus')
        .map((d) => d.uid);
      expect(prometheusSources).toEqual(['batchlab-prometheus']);
    },
    40 * 60_000,
  );
});
