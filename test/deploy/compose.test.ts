// deploy/compose.yaml, compose.gpu.yaml and compose.webgpu.yaml: valid against the Compose
// Specification schema, interpolated as Compose does, and wired together: Prometheus finds the
// services it scrapes, Grafana gets the repository's provisioning, GPU workers get distinct GPUs,
// and the WebGPU layer turns every GPU worker into a WebGPU one with the graphics capability.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { composeErrors, composeSchemaPath } from './schemas.js';
import {
  DEPLOY,
  interpolate,
  loadCompose,
  readEnvFile,
  readYamlOne,
  serviceEnvironment,
  variablesIn,
  type Json,
} from './support.js';

const COMPOSE = join(DEPLOY, 'compose.yaml');
const GPU = join(DEPLOY, 'compose.gpu.yaml');
const WEBGPU = join(DEPLOY, 'compose.webgpu.yaml');
const ENV_EXAMPLE = join(DEPLOY, '.env.example');
const TOKEN = 'test-token-0123456789abcdef';

/** deploy/.env as a user makes it from the example: the example with a token filled in. */
const exampleEnv = (): Record<string, string> => ({ ...readEnvFile(ENV_EXAMPLE), BATCHLAB_TOKEN: TOKEN });
const clone = (x: Json): Json => structuredClone(x);

describe('deploy/compose.yaml', () => {
  it('validates against the Compose Specification schema once .env.example (plus a token) is interpolated', () => {
    expect(existsSync(composeSchemaPath()), composeSchemaPath()).toBe(true);
    expect(composeErrors(loadCompose(COMPOSE, exampleEnv()))).toEqual([]);
  });

  it('also validates with no .env at all: a token from the shell is the only thing it needs', () => {
    const model = loadCompose(COMPOSE, { BATCHLAB_TOKEN: TOKEN });
    expect(composeErrors(model)).toEqual([]);
    expect(model.services.worker.deploy.replicas).toBe('2');
    expect(model.services.grafana.image).toMatch(/^grafana\/grafana:\d+\.\d+\.\d+$/);
    expect(model.services.prometheus.image).toMatch(/^prom\/prometheus:v\d+\.\d+\.\d+$/);
  });

  it('refuses to start without a token, naming BATCHLAB_TOKEN', () => {
    expect(() => loadCompose(COMPOSE, { ...readEnvFile(ENV_EXAMPLE), BATCHLAB_TOKEN: '' })).toThrow(/BATCHLAB_TOKEN/);
    expect(() => loadCompose(COMPOSE, {})).toThrow(/BATCHLAB_TOKEN/);
  });

  it('the schema check rejects broken compose files (so the passes above mean something)', () => {
    const good = loadCompose(COMPOSE, exampleEnv());
    const misspelled = clone(good);
    misspelled.services.worker.comand = ['worker'];
    expect(composeErrors(misspelled).join('\n')).toMatch(/\/services\/worker must NOT have additional properties/);
    const badReplicas = clone(good);
    badReplicas.services.worker.deploy.replicas = { count: 2 };
    expect(composeErrors(badReplicas).join('\n')).toMatch(/replicas/);
    const badPorts = clone(good);
    badPorts.services.grafana.ports = 3000;
    expect(composeErrors(badPorts).join('\n')).toMatch(/\/services\/grafana\/ports must be array/);
    const badCondition = clone(good);
    badCondition.services.worker.depends_on.coordinator.condition = 'service_ready';
    expect(composeErrors(badCondition).join('\n')).toMatch(
      /depends_on\/coordinator\/condition must be equal to one of the allowed values/,
    );
    const unknownTop = clone(good);
    unknownTop.service = {};
    expect(composeErrors(unknownTop)).not.toEqual([]);
  });

  it('names in .env.example every variable the compose files use (BATCHLAB_TOKEN left empty)', () => {
    const example = readEnvFile(ENV_EXAMPLE);
    for (const file of [COMPOSE, GPU, WEBGPU]) {
      const used = variablesIn(readFileSync(file, 'utf8'));
      // Each file takes the token or its image from the environment: none found would mean a broken scan.
      expect([...used], file).toContain(file === WEBGPU ? 'BATCHLAB_WEBGPU_IMAGE' : 'BATCHLAB_TOKEN');
      for (const name of used) expect(Object.keys(example), `${name} (${file})`).toContain(name);
    }
    expect(example.BATCHLAB_TOKEN).toBe('');
  });

  it('runs coordinator and workers from the CPU image built from deploy/Dockerfile.cpu with the repository root as context', () => {
    const model = loadCompose(COMPOSE, exampleEnv());
    for (const name of ['coordinator', 'worker']) {
      const service = model.services[name];
      expect(service.build).toEqual({ context: '..', dockerfile: 'deploy/Dockerfile.cpu' });
      expect(existsSync(join(DEPLOY, service.build.context, service.build.dockerfile))).toBe(true);
      expect(service.command).toEqual([name]);
    }
  });

  it('scales workers with WORKERS, and the coordinator waits for that many', () => {
    const model = loadCompose(COMPOSE, { ...exampleEnv(), WORKERS: '5' });
    expect(model.services.worker.deploy.replicas).toBe('5');
    expect(serviceEnvironment(model.services.coordinator).BATCHLAB_MIN_WORKERS).toBe('5');
  });

  it('lets workers find the coordinator through MASTER_ADDR/MASTER_PORT with the same token', () => {
    const model = loadCompose(COMPOSE, exampleEnv());
    const coordinator = serviceEnvironment(model.services.coordinator);
    const worker = serviceEnvironment(model.services.worker);
    expect(Object.keys(model.services)).toContain(worker.MASTER_ADDR);
    expect(worker.MASTER_PORT).toBe(coordinator.BATCHLAB_PORT);
    expect(worker.BATCHLAB_TOKEN).toBe(TOKEN);
    expect(coordinator.BATCHLAB_TOKEN).toBe(TOKEN);
    expect(model.services.worker.depends_on.coordinator.condition).toBe('service_healthy');
    expect(model.services.coordinator.healthcheck.test.join(' ')).toContain(
      `127.0.0.1:${coordinator.BATCHLAB_METRICS_PORT}/healthz`,
    );
  });

  it('passes the reducer (default star) to the coordinator and gives every worker a peer port on its own address', () => {
    expect(
      serviceEnvironment(loadCompose(COMPOSE, { BATCHLAB_TOKEN: TOKEN }).services.coordinator).BATCHLAB_REDUCER,
    ).toBe('star');
    expect(
      serviceEnvironment(loadCompose(COMPOSE, { ...exampleEnv(), BATCHLAB_REDUCER: 'sharded' }).services.coordinator)
        .BATCHLAB_REDUCER,
    ).toBe('sharded');
    const workers: [string, Json][] = [
      ['worker', loadCompose(COMPOSE, exampleEnv()).services.worker],
      ...(Object.entries(loadCompose(GPU, exampleEnv()).services).filter(
        ([name]) => name === 'worker' || name.startsWith('worker-gpu'),
      ) as [string, Json][]),
    ];
    for (const [name, service] of workers) {
      const env = serviceEnvironment(service);
      expect(env.BATCHLAB_PEER_PORT, name).toBe('7071');
      expect(env.BATCHLAB_PEER_PORT, name).not.toBe(env.BATCHLAB_METRICS_PORT);
      // Neither set: the worker listens on and advertises its container IP, which the others reach.
      // A listen address of 0.0.0.0 without an advertised address would be advertised as 0.0.0.0.
      expect(env.BATCHLAB_PEER_HOST, name).toBeUndefined();
      expect(env.BATCHLAB_ADVERTISE_ADDRESS, name).toBeUndefined();
    }
    expect(workers.length).toBe(9);
  });

  it('has Prometheus find the coordinator and every worker by service name on the metrics ports the services fix', () => {
    const model = loadCompose(COMPOSE, exampleEnv());
    const mount = model.services.prometheus.volumes.find((v: string) =>
      v.endsWith(':/etc/prometheus/prometheus.yml:ro'),
    );
    const configPath = join(DEPLOY, mount.split(':')[0]);
    expect(existsSync(configPath)).toBe(true);
    const config = readYamlOne(configPath);
    const sd = config.scrape_configs.flatMap((job: Json) => job.dns_sd_configs ?? []);
    const byName = Object.fromEntries(sd.map((s: Json) => [s.names[0], s]));
    expect(Object.keys(byName).sort()).toEqual(['coordinator', 'worker']);
    for (const name of ['coordinator', 'worker']) {
      expect(byName[name].type).toBe('A');
      expect(String(byName[name].port)).toBe(serviceEnvironment(model.services[name]).BATCHLAB_METRICS_PORT);
    }
  });

  it('mounts grafana/provisioning and grafana/dashboards where the provisioning expects them, with the datasource on the prometheus service', () => {
    const model = loadCompose(COMPOSE, exampleEnv());
    const grafana = model.services.grafana;
    const mounts = Object.fromEntries(
      grafana.volumes.filter((v: string) => v.startsWith('../')).map((v: string) => v.split(':').slice(0, 2).reverse()),
    );
    expect(mounts['/etc/grafana/provisioning']).toBe('../grafana/provisioning');
    expect(existsSync(join(DEPLOY, mounts['/etc/grafana/provisioning'], 'datasources'))).toBe(true);
    const provider = readYamlOne(join(DEPLOY, '../grafana/provisioning/dashboards/batchlab.yaml'));
    const dashboardsPath = provider.providers[0].options.path;
    expect(mounts[dashboardsPath]).toBe('../grafana/dashboards');
    expect(existsSync(join(DEPLOY, '../grafana/dashboards/batchlab.json'))).toBe(true);
    expect(serviceEnvironment(grafana).GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH).toBe(
      `${dashboardsPath}/batchlab.json`,
    );
    // The datasource file reads its URL from BATCHLAB_PROMETHEUS_URL: point it at the prometheus service.
    const datasource = readFileSync(join(DEPLOY, '../grafana/provisioning/datasources/prometheus.yaml'), 'utf8');
    expect(datasource).toContain('BATCHLAB_PROMETHEUS_URL');
    const prometheusUrl = serviceEnvironment(grafana).BATCHLAB_PROMETHEUS_URL;
    expect(prometheusUrl, 'BATCHLAB_PROMETHEUS_URL in the grafana service environment').toBeDefined();
    const url = new URL(prometheusUrl!);
    expect(Object.keys(model.services)).toContain(url.hostname);
    expect(url.port).toBe('9090');
  });

  it('publishes Prometheus, Grafana and the coordinator on 127.0.0.1 unless told otherwise', () => {
    const model = loadCompose(COMPOSE, { BATCHLAB_TOKEN: TOKEN });
    for (const name of ['coordinator', 'prometheus', 'grafana']) {
      expect(model.services[name].ports, name).toHaveLength(1);
      for (const port of model.services[name].ports) expect(port, name).toMatch(/^127\.0\.0\.1:/);
    }
    expect(loadCompose(COMPOSE, { BATCHLAB_TOKEN: TOKEN, GRAFANA_BIND: '0.0.0.0' }).services.grafana.ports[0]).toBe(
      '0.0.0.0:3000:3000',
    );
  });
});

describe('deploy/compose.gpu.yaml', () => {
  const gpu = (env: Record<string, string> = exampleEnv()): Json => loadCompose(GPU, env);
  const gpuWorkers = (model: Json): [string, Json][] =>
    Object.entries(model.services).filter(([name]) => name === 'worker' || name.startsWith('worker-gpu')) as [
      string,
      Json,
    ][];

  it('validates against the Compose Specification schema', () => {
    expect(composeErrors(gpu())).toEqual([]);
  });

  it('the schema check rejects a GPU reservation without the capabilities list', () => {
    const broken = clone(gpu());
    broken.services.worker.deploy.resources.reservations.devices[0].capabilities = 'gpu';
    expect(composeErrors(broken).join('\n')).toMatch(/capabilities must be array/);
  });

  it('pins every GPU worker to its own device id (Docker would hand count: 1 replicas all GPU 0)', () => {
    const workers = gpuWorkers(gpu());
    expect(workers.length).toBe(8);
    const ids = workers.map(([, s]) => {
      const [device] = s.deploy.resources.reservations.devices;
      expect(device.driver).toBe('nvidia');
      expect(device.capabilities).toEqual(['gpu']);
      expect(device.count).toBeUndefined();
      return device.device_ids.join(',');
    });
    expect(ids).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
  });

  it('runs the GPU image on tensorflow-gpu, each worker answering to the DNS name Prometheus resolves (worker)', () => {
    for (const [name, service] of gpuWorkers(gpu())) {
      expect(service.build.dockerfile, name).toBe('deploy/Dockerfile.gpu');
      expect(existsSync(join(DEPLOY, service.build.context, service.build.dockerfile))).toBe(true);
      expect(serviceEnvironment(service).BATCHLAB_BACKEND).toBe('tensorflow-gpu');
      expect(service.networks.default.aliases).toContain('worker');
    }
  });

  it('adds 1, 3 and 7 GPU workers to the always-on one with the profiles gpus-2, gpus-4 and gpus-8', () => {
    const workers = gpuWorkers(gpu());
    for (const [profile, extra] of [
      ['gpus-2', 1],
      ['gpus-4', 3],
      ['gpus-8', 7],
    ] as const) {
      expect(workers.filter(([, s]) => s.profiles?.includes(profile)).length, profile).toBe(extra);
    }
    expect(workers.filter(([, s]) => !s.profiles).map(([n]) => n)).toEqual(['worker']);
  });

  it('runs NVIDIA dcgm-exporter only with --profile dcgm, on every GPU without taking one, scraped by Prometheus', () => {
    const exporter = gpu().services['dcgm-exporter'];
    expect(exporter.profiles).toEqual(['dcgm']);
    expect(exporter.image).toBe(exampleEnv().DCGM_EXPORTER_IMAGE);
    expect(exporter.image).toMatch(/^nvcr\.io\/nvidia\/k8s\/dcgm-exporter:\S+-ubuntu\d+\.04$/);
    expect(exporter.deploy.resources.reservations.devices).toEqual([
      { driver: 'nvidia', count: 'all', capabilities: ['gpu'] },
    ]);
    // Not a batchlab service: no token, no batchlab image.
    expect(JSON.stringify(exporter)).not.toMatch(/BATCHLAB_/);
    const config = readYamlOne(join(DEPLOY, 'prometheus-compose.yml'));
    const job = config.scrape_configs.find((j: Json) => j.job_name === 'dcgm');
    expect(job.static_configs[0].targets).toEqual(['dcgm-exporter:9400']);
  });

  it('makes the coordinator wait for WORKERS GPU workers (default 1)', () => {
    expect(serviceEnvironment(gpu({ BATCHLAB_TOKEN: TOKEN }).services.coordinator).BATCHLAB_MIN_WORKERS).toBe('1');
    expect(
      serviceEnvironment(gpu({ BATCHLAB_TOKEN: TOKEN, WORKERS: '4' }).services.coordinator).BATCHLAB_MIN_WORKERS,
    ).toBe('4');
  });
});

describe('deploy/compose.webgpu.yaml (on top of compose.yaml and compose.gpu.yaml)', () => {
  const webgpu = (env: Record<string, string> = exampleEnv()): Json => loadCompose(WEBGPU, env);
  /** The three files merged as `docker compose -f compose.yaml -f compose.gpu.yaml -f compose.webgpu.yaml` does. */
  const layered = (env: Record<string, string> = exampleEnv()): Json =>
    [COMPOSE, GPU, WEBGPU].map((f) => loadCompose(f, env)).reduce((a, b) => mergeCompose(a, b));

  it('validates against the Compose Specification schema, alone and merged with the files below it', () => {
    expect(composeErrors(webgpu())).toEqual([]);
    expect(composeErrors(layered())).toEqual([]);
  });

  it('overrides exactly the GPU workers of compose.gpu.yaml (a GPU worker added there must be added here too)', () => {
    const gpuWorkers = Object.keys(loadCompose(GPU, exampleEnv()).services).filter(
      (n) => n === 'worker' || n.startsWith('worker-gpu'),
    );
    expect(gpuWorkers).toHaveLength(8);
    expect(Object.keys(webgpu().services)).toEqual(gpuWorkers);
  });

  it('runs every GPU worker from the WebGPU image on --backend webgpu with the graphics driver capability, on its own GPU', () => {
    const model = layered();
    const ids: string[] = [];
    for (const [name, service] of Object.entries<Json>(model.services)) {
      if (name !== 'worker' && !name.startsWith('worker-gpu')) continue;
      expect(service.build, name).toEqual({ context: '..', dockerfile: 'deploy/Dockerfile.webgpu' });
      expect(existsSync(join(DEPLOY, service.build.context, service.build.dockerfile))).toBe(true);
      expect(service.image, name).toBe('batchlab:webgpu');
      const env = serviceEnvironment(service);
      expect(env.BATCHLAB_BACKEND, name).toBe('webgpu');
      expect(env.NVIDIA_DRIVER_CAPABILITIES!.split(','), name).toContain('graphics');
      // Still what compose.gpu.yaml gives: the worker command, the coordinator, a pinned GPU.
      expect(service.command, name).toEqual(['worker']);
      expect(env.MASTER_ADDR, name).toBe('coordinator');
      expect(env.BATCHLAB_TOKEN, name).toBe(TOKEN);
      const [device] = service.deploy.resources.reservations.devices;
      // Only `gpu`: a driver capability listed here would replace NVIDIA_DRIVER_CAPABILITIES.
      expect(device.capabilities, name).toEqual(['gpu']);
      ids.push(device.device_ids.join(','));
    }
    expect(ids).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
    expect(layered().services.coordinator.build.dockerfile).toBe('deploy/Dockerfile.cpu');
    expect(layered({ ...exampleEnv(), BATCHLAB_WEBGPU_IMAGE: 'r.example/w:1' }).services['worker-gpu3'].image).toBe(
      'r.example/w:1',
    );
  });
});

/**
 * Compose's merge of a later file into an earlier one, for what these files use: mappings merge
 * key by key (environment, build, deploy), anything else (scalars, lists) is replaced.
 */
function mergeCompose(base: Json, override: Json): Json {
  const isMap = (x: Json): boolean => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isMap(base) || !isMap(override)) return clone(override);
  const out = clone(base);
  for (const [k, v] of Object.entries<Json>(override)) out[k] = k in out ? mergeCompose(out[k], v) : clone(v);
  return out;
}

describe('Compose interpolation as these tests do it', () => {
  it('follows the Compose rules for defaults, required values and $$', () => {
    expect(interpolate('${A:-x} ${A-y} $$A ${B} $B', { A: '' })).toBe('x  $A  ');
    expect(interpolate('${A:-x}', { A: 'set' })).toBe('set');
    expect(() => interpolate('${A:?give A}', {})).toThrow(/give A/);
    expect(interpolate('${A?give A}', { A: '' })).toBe('');
  });
});
