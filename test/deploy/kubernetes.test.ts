// deploy/k8s: every manifest validates offline against the Kubernetes schemas, the
// kustomization references only files that exist and renders with the settings in one place,
// and the pieces fit: workers dial the coordinator's Service, the token comes from a Secret,
// GPUs are limits, Prometheus finds the metrics ports, workers serve and advertise a peer port.

import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TRAINING_TABLE } from '../../cli/option-table.js';
import { REDUCERS } from '../../coordinator/reducer.js';
import { COORDINATOR_OPTIONS } from '../../cli/options.js';
import { jobSetErrors, kubernetesErrors } from './schemas.js';
import { DEPLOY, parseYamlText, readYaml, readYamlOne, rel, walk, which, type Json } from './support.js';

const K8S = join(DEPLOY, 'k8s');
const KUBECTL = which('kubectl');
const tmp = mkdtempSync(join(tmpdir(), 'batchlab-k8s-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const isKustomization = (d: Json): boolean => d.kind === 'Kustomization' || d.kind === 'Component';
const isLocalConfig = (d: Json): boolean => d.metadata?.annotations?.['config.kubernetes.io/local-config'] === 'true';

/** Every object of every YAML file under deploy/k8s, with its file. */
function manifests(): { file: string; doc: Json }[] {
  return walk(K8S)
    .filter((f) => /\.ya?ml$/.test(f))
    .flatMap((file) => readYaml(file).map((doc) => ({ file, doc: doc as Json })));
}
/** The objects sent to a cluster (no kustomizations, no local config). */
const objects = (): Json[] =>
  manifests()
    .map((m) => m.doc)
    .filter((d) => !isKustomization(d) && !isLocalConfig(d));

function find(docs: Json[], kind: string, name: string): Json {
  const found = docs.find((d) => d.kind === kind && d.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found;
}
const container = (podOwner: Json, name: string): Json =>
  podOwner.spec.template.spec.containers.find((c: Json) => c.name === name);
const envOf = (c: Json): Record<string, Json> => Object.fromEntries(c.env.map((e: Json) => [e.name, e]));
const settings = (): Json => readYamlOne(join(K8S, 'settings.yaml')).spec;

/** `kubectl kustomize DIR`, parsed. */
function render(dir: string): Json[] {
  return parseYamlText(
    execFileSync(KUBECTL!, ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
    `kubectl kustomize ${dir}`,
  );
}
const kubectlTitle = (title: string): string =>
  KUBECTL ? title : `${title} (skipped: kubectl not installed; the file-reference check above still runs)`;

describe('deploy/k8s manifests', () => {
  it('every object validates against the Kubernetes schemas, offline (kubernetes-models)', () => {
    const checked = objects();
    expect(checked.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
      'DaemonSet/batchlab-dcgm-exporter',
      'Job/batchlab-coordinator',
      'Job/batchlab-workers',
      'PersistentVolumeClaim/batchlab-checkpoints',
      'PodMonitor/batchlab',
      'Service/batchlab-coordinator',
    ]);
    for (const doc of checked) expect(kubernetesErrors(doc), `${doc.kind}/${doc.metadata.name}`).toEqual([]);
  });

  it('the schema check rejects broken manifests (so the pass above means something)', () => {
    const docs = objects();
    const workers = find(docs, 'Job', 'batchlab-workers');
    const broken: [string, (j: Json) => void, RegExp][] = [
      [
        'misspelled completion mode',
        (j) => (j.spec.completionMode = 'Indexd'),
        /completionMode must be equal to one of the allowed values/,
      ],
      ['parallelism as text', (j) => (j.spec.parallelism = 'two'), /parallelism must be integer/],
      [
        'secretKeyRef without key',
        (j) =>
          delete container(j, 'worker').env.find((e: Json) => e.name === 'BATCHLAB_TOKEN').valueFrom.secretKeyRef.key,
        /secretKeyRef must have required property key/,
      ],
      [
        'GPU count that is no quantity',
        (j) => (container(j, 'worker').resources.limits['nvidia.com/gpu'] = 'one'),
        /nvidia\.com~1gpu must match format "quantity"/,
      ],
      [
        'containerPort as text',
        (j) => (container(j, 'worker').ports[0].containerPort = '9401x'),
        /containerPort must be integer/,
      ],
      [
        'pod template without containers',
        (j) => delete j.spec.template.spec.containers,
        /must have required property containers/,
      ],
    ];
    for (const [what, mutate, error] of broken) {
      const copy = structuredClone(workers);
      mutate(copy);
      expect(kubernetesErrors(copy).join('\n'), what).toMatch(error);
    }
    const service = structuredClone(find(docs, 'Service', 'batchlab-coordinator'));
    service.spec.ports[0].port = '7070';
    expect(kubernetesErrors(service).join('\n')).toMatch(/port must be integer/);
    const podMonitor = structuredClone(find(docs, 'PodMonitor', 'batchlab'));
    podMonitor.spec.podMetricsEndpoints = { port: 'metrics' };
    expect(kubernetesErrors(podMonitor).join('\n')).toMatch(/podMetricsEndpoints must be array/);
    expect(kubernetesErrors({ apiVersion: 'batch/v2', kind: 'Job', metadata: { name: 'x' } }).join('\n')).toMatch(
      /no schema/,
    );
  });

  it('every kustomization references only files and directories that exist', () => {
    const kustomizations = manifests().filter((m) => isKustomization(m.doc));
    expect(kustomizations.map((k) => rel(k.file)).sort()).toEqual([
      'deploy/k8s/dcgm/kustomization.yaml',
      'deploy/k8s/kustomization.yaml',
      'deploy/k8s/podmonitor/kustomization.yaml',
      'deploy/k8s/webgpu/kustomization.yaml',
    ]);
    for (const { file, doc } of kustomizations) {
      const refs = [
        ...(doc.resources ?? []),
        ...(doc.components ?? []),
        ...(doc.patches ?? []).map((p: Json) => p.path).filter(Boolean),
      ];
      const inlinePatches = (doc.patches ?? []).filter((p: Json) => p.patch).length;
      expect(refs.length + inlinePatches, rel(file)).toBeGreaterThan(0);
      for (const ref of refs) expect(existsSync(join(dirname(file), ref)), `${rel(file)} → ${ref}`).toBe(true);
    }
    // Every manifest file is reachable from a kustomization (none is forgotten).
    const referenced = new Set(
      kustomizations.flatMap(({ file, doc }) => (doc.resources ?? []).map((r: string) => join(dirname(file), r))),
    );
    for (const { file } of manifests().filter((m) => !isKustomization(m.doc)))
      expect(referenced.has(file), rel(file)).toBe(true);
  });

  it.skipIf(!KUBECTL)(
    kubectlTitle('kubectl kustomize renders deploy/k8s: images set, settings applied, local config dropped, all valid'),
    () => {
      const out = render(K8S);
      expect(out.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
        'Job/batchlab-coordinator',
        'Job/batchlab-workers',
        'PersistentVolumeClaim/batchlab-checkpoints',
        'Service/batchlab-coordinator',
      ]);
      for (const doc of out) {
        expect(kubernetesErrors(doc), `${doc.kind}/${doc.metadata.name}`).toEqual([]);
        expect(doc.metadata.labels['app.kubernetes.io/part-of']).toBe('batchlab');
      }
      const { workers, gpusPerWorker } = settings();
      const job = find(out, 'Job', 'batchlab-workers');
      expect([job.spec.parallelism, job.spec.completions]).toEqual([workers, workers]);
      expect(container(job, 'worker').resources.limits['nvidia.com/gpu']).toBe(gpusPerWorker);
      expect(container(job, 'worker').image).toMatch(/batchlab-gpu:/);
      const coordinator = find(out, 'Job', 'batchlab-coordinator');
      expect(envOf(container(coordinator, 'coordinator')).BATCHLAB_MIN_WORKERS.value).toBe(String(workers));
      expect(envOf(container(coordinator, 'coordinator')).BATCHLAB_REDUCER.value).toBe(settings().reducer);
      expect(container(coordinator, 'coordinator').image).toMatch(/batchlab-cpu:/);
    },
  );

  it.skipIf(!KUBECTL)(
    kubectlTitle('settings.yaml is the one place for worker count, GPUs and reducer: changing it changes every use'),
    () => {
      const copy = join(tmp, 'k8s');
      cpSync(K8S, copy, { recursive: true });
      const path = join(copy, 'settings.yaml');
      writeFileSync(
        path,
        readFileSync(path, 'utf8')
          .replace(/workers: \d+/, 'workers: 7')
          .replace(/gpusPerWorker: \d+/, 'gpusPerWorker: 2')
          .replace(/reducer: \w+/, 'reducer: sharded'),
      );
      const out = render(copy);
      const job = find(out, 'Job', 'batchlab-workers');
      expect([
        job.spec.parallelism,
        job.spec.completions,
        container(job, 'worker').resources.limits['nvidia.com/gpu'],
      ]).toEqual([7, 7, 2]);
      const coordinatorEnv = envOf(container(find(out, 'Job', 'batchlab-coordinator'), 'coordinator'));
      expect([coordinatorEnv.BATCHLAB_MIN_WORKERS.value, coordinatorEnv.BATCHLAB_REDUCER.value]).toEqual([
        '7',
        'sharded',
      ]);
      for (const doc of out) expect(kubernetesErrors(doc)).toEqual([]);
    },
  );

  it.skipIf(!KUBECTL)(
    kubectlTitle(
      'the webgpu component turns the workers into WebGPU ones (image, backend, graphics capability, XDG_RUNTIME_DIR) and nothing else',
    ),
    () => {
      const copy = join(tmp, 'k8s-webgpu');
      cpSync(K8S, copy, { recursive: true });
      const path = join(copy, 'kustomization.yaml');
      const text = readFileSync(path, 'utf8');
      // The documented switch: the commented-out component list in kustomization.yaml.
      expect(text).toMatch(/^# components:\n# {3}- webgpu$/m);
      writeFileSync(path, text.replace(/^# components:\n# {3}- webgpu$/m, 'components:\n  - webgpu'));
      const out = render(copy);
      const plain = render(K8S);
      for (const doc of out) expect(kubernetesErrors(doc), `${doc.kind}/${doc.metadata.name}`).toEqual([]);
      const worker = container(find(out, 'Job', 'batchlab-workers'), 'worker');
      expect(worker.image).toBe('registry.example.com/batchlab/batchlab-webgpu:0.1.0');
      const env = envOf(worker);
      expect(env.BATCHLAB_BACKEND.value).toBe('webgpu');
      expect(env.NVIDIA_DRIVER_CAPABILITIES.value.split(',')).toContain('graphics');
      expect(worker.env.filter((e: Json) => e.name === 'BATCHLAB_BACKEND')).toHaveLength(1);
      // The image's XDG_RUNTIME_DIR is under /tmp, which the pod mounts an emptyDir over: it gets its own.
      const xdg = /XDG_RUNTIME_DIR=(\S+)/.exec(readFileSync(join(DEPLOY, 'Dockerfile.webgpu'), 'utf8'))![1]!;
      const mount = worker.volumeMounts.find((m: Json) => m.mountPath === xdg);
      expect(mount, `a volume at ${xdg}`).toBeDefined();
      const pod = find(out, 'Job', 'batchlab-workers').spec.template.spec;
      expect(pod.volumes.find((v: Json) => v.name === mount.name).emptyDir).toEqual({});
      // $(POD_IP) still comes before its use, the GPU limit still from settings.yaml.
      const order = worker.env.map((e: Json) => e.name);
      expect(order.indexOf('POD_IP')).toBeLessThan(order.indexOf('BATCHLAB_ADVERTISE_ADDRESS'));
      expect(worker.resources.limits['nvidia.com/gpu']).toBe(settings().gpusPerWorker);
      // Everything else as without the component.
      const strip = (docs: Json[]): Json[] =>
        docs.map((d) => {
          const c = structuredClone(d);
          const w = c.kind === 'Job' && c.metadata.name === 'batchlab-workers' ? c.spec.template.spec : null;
          if (w) {
            const wc = w.containers.find((x: Json) => x.name === 'worker');
            delete wc.image;
            wc.env = wc.env.filter((e: Json) => !['BATCHLAB_BACKEND', 'NVIDIA_DRIVER_CAPABILITIES'].includes(e.name));
            wc.volumeMounts = wc.volumeMounts.filter((m: Json) => m.mountPath !== xdg);
            w.volumes = w.volumes.filter((v: Json) => v.name !== mount.name);
          }
          return c;
        });
      expect(strip(out)).toEqual(strip(plain));
      expect(envOf(container(find(plain, 'Job', 'batchlab-workers'), 'worker')).BATCHLAB_BACKEND.value).toBe(
        'tensorflow-gpu',
      );
    },
  );

  it.skipIf(!KUBECTL)(
    kubectlTitle(
      'the dcgm component adds a dcgm-exporter DaemonSet on GPU nodes that takes no GPU, and Prometheus has a job for it',
    ),
    () => {
      const copy = join(tmp, 'k8s-dcgm');
      cpSync(K8S, copy, { recursive: true });
      const path = join(copy, 'kustomization.yaml');
      const text = readFileSync(path, 'utf8');
      expect(text).toMatch(/^# components:\n# {3}- dcgm$/m);
      writeFileSync(path, text.replace(/^# components:\n# {3}- dcgm$/m, 'components:\n  - dcgm'));
      const out = render(copy);
      const plain = render(K8S);
      for (const doc of out) expect(kubernetesErrors(doc), `${doc.kind}/${doc.metadata.name}`).toEqual([]);
      expect(out.filter((d) => !plain.some((p) => p.kind === d.kind && p.metadata.name === d.metadata.name))).toEqual([
        find(out, 'DaemonSet', 'batchlab-dcgm-exporter'),
      ]);
      const daemonSet = find(out, 'DaemonSet', 'batchlab-dcgm-exporter');
      const exporter = daemonSet.spec.template.spec.containers[0];
      expect(exporter.image).toMatch(/^nvcr\.io\/nvidia\/k8s\/dcgm-exporter:\S+-ubuntu\d+\.04$/);
      expect(JSON.stringify(exporter.resources)).not.toContain('nvidia.com/gpu');
      expect(envOf(exporter).NVIDIA_VISIBLE_DEVICES.value).toBe('all');
      const port = exporter.ports.find((p: Json) => p.name === 'metrics');
      expect(daemonSet.spec.template.metadata.annotations['prometheus.io/port']).toBe(String(port.containerPort));
      expect(daemonSet.spec.template.spec.tolerations).toContainEqual({
        key: 'nvidia.com/gpu',
        operator: 'Exists',
        effect: 'NoSchedule',
      });
      // deploy/prometheus-kubernetes.yml keeps its port named metrics, by its label.
      const config = readYamlOne(join(DEPLOY, 'prometheus-kubernetes.yml'));
      const job = config.scrape_configs.find((j: Json) => j.job_name === 'dcgm');
      const label = job.kubernetes_sd_configs[0].selectors[0].label;
      const [k, v] = label.split('=');
      expect(daemonSet.spec.template.metadata.labels[k]).toBe(v);
      expect(job.relabel_configs).toContainEqual(
        expect.objectContaining({ source_labels: ['__meta_kubernetes_pod_container_port_name'], regex: 'metrics' }),
      );
      // Everything else as without the component.
      expect(out.filter((d) => d.kind !== 'DaemonSet')).toEqual(plain);
    },
  );

  it.skipIf(!KUBECTL)(kubectlTitle('the optional PodMonitor kustomization renders and validates'), () => {
    const out = render(join(K8S, 'podmonitor'));
    expect(out.map((d) => d.kind)).toEqual(['PodMonitor']);
    expect(kubernetesErrors(out[0])).toEqual([]);
  });
});

describe('deploy/k8s wiring', () => {
  const docs = objects();
  const coordinatorJob = find(docs, 'Job', 'batchlab-coordinator');
  const workersJob = find(docs, 'Job', 'batchlab-workers');
  const service = find(docs, 'Service', 'batchlab-coordinator');
  const coordinator = container(coordinatorJob, 'coordinator');
  const worker = container(workersJob, 'worker');

  it('workers are an Indexed Job that finds the coordinator by its Service DNS name and port', () => {
    expect(workersJob.spec.completionMode).toBe('Indexed');
    expect(worker.args).toEqual(['worker']);
    const env = envOf(worker);
    expect(env.MASTER_ADDR.value).toBe(service.metadata.name);
    const wsPort = service.spec.ports.find((p: Json) => p.name === 'ws');
    expect(env.MASTER_PORT.value).toBe(String(wsPort.port));
    // The Service routes that port to the coordinator's WebSocket port, on the coordinator's pods.
    const target = coordinator.ports.find((p: Json) => p.name === wsPort.targetPort);
    expect(String(target.containerPort)).toBe(envOf(coordinator).BATCHLAB_PORT.value);
    // An empty selector would select every pod in the namespace (and make the loop below check nothing).
    expect(Object.keys(service.spec.selector ?? {}), 'the Service selector').toEqual(
      expect.arrayContaining(['app.kubernetes.io/component']),
    );
    for (const [k, v] of Object.entries(service.spec.selector))
      expect(coordinatorJob.spec.template.metadata.labels[k], k).toBe(v);
    expect(workersJob.spec.template.metadata.labels['app.kubernetes.io/component']).not.toBe(
      service.spec.selector['app.kubernetes.io/component'],
    );
  });

  it('settings.yaml names a real reducer and ships the code default (star), which the coordinator gets', () => {
    expect(REDUCERS).toContain(settings().reducer);
    expect(settings().reducer).toBe(TRAINING_TABLE.reducer.default);
    expect(envOf(coordinator).BATCHLAB_REDUCER.value).toBe(settings().reducer);
  });

  it('workers serve the peer port they declare on every interface and advertise their pod IP (downward API)', () => {
    const env = envOf(worker);
    const peer = worker.ports.find((p: Json) => p.name === 'peer');
    expect(peer, 'a container port named peer').toBeDefined();
    expect(env.BATCHLAB_PEER_PORT.value).toBe(String(peer.containerPort));
    expect(peer.containerPort).not.toBe(worker.ports.find((p: Json) => p.name === 'metrics').containerPort);
    expect(env.BATCHLAB_PEER_HOST.value).toBe('0.0.0.0');
    // Listening on 0.0.0.0 would otherwise be advertised as such: the pod IP must be given.
    expect(env.POD_IP.valueFrom.fieldRef.fieldPath).toBe('status.podIP');
    expect(env.BATCHLAB_ADVERTISE_ADDRESS.value).toBe('$(POD_IP)');
    // $(VAR) expands only variables defined earlier in the list.
    const order = worker.env.map((e: Json) => e.name);
    expect(order.indexOf('POD_IP')).toBeLessThan(order.indexOf('BATCHLAB_ADVERTISE_ADDRESS'));
  });

  it('both sides take the token from the same Secret key (secretKeyRef), never from a literal', () => {
    const refs = [coordinator, worker].map((c) => envOf(c).BATCHLAB_TOKEN);
    for (const ref of refs) {
      expect(ref.value).toBeUndefined();
      expect(ref.valueFrom.secretKeyRef).toEqual({ name: 'batchlab-token', key: 'token' });
    }
    expect(
      docs.some((d) => d.kind === 'Secret'),
      'no Secret with a token is committed',
    ).toBe(false);
  });

  it('workers request nvidia.com/gpu as a limit (GPUs are never overcommitted) and tolerate the GPU taint', () => {
    expect(worker.resources.limits['nvidia.com/gpu']).toBe(settings().gpusPerWorker);
    expect(worker.resources.requests['nvidia.com/gpu']).toBeUndefined();
    expect(envOf(worker).BATCHLAB_BACKEND.value).toBe('tensorflow-gpu');
    expect(workersJob.spec.template.spec.tolerations).toContainEqual({
      key: 'nvidia.com/gpu',
      operator: 'Exists',
      effect: 'NoSchedule',
    });
    expect(coordinator.resources.limits?.['nvidia.com/gpu']).toBeUndefined();
  });

  it('every container requests CPU and memory and has a memory limit', () => {
    for (const c of [coordinator, worker]) {
      expect(c.resources.requests.cpu, c.name).toBeDefined();
      expect(c.resources.requests.memory, c.name).toBeDefined();
      expect(c.resources.limits.memory, c.name).toBeDefined();
    }
  });

  it("every pod runs as the image's non-root user and turns off service links (nothing needs BATCHLAB_COORDINATOR_*, and a Service named batchlab would set BATCHLAB_PORT)", () => {
    for (const job of [coordinatorJob, workersJob]) {
      const pod = job.spec.template.spec;
      expect(pod.enableServiceLinks, job.metadata.name).toBe(false);
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
      for (const c of pod.containers) expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    }
    // The Dockerfiles' user is the one the pods run as.
    for (const f of ['Dockerfile.cpu', 'Dockerfile.gpu', 'Dockerfile.webgpu'])
      expect(readFileSync(join(DEPLOY, f), 'utf8')).toMatch(/^USER 10001:10001$/m);
  });

  it('the coordinator survives a crash: retried (OnFailure, backoffLimit > 0) and resumed from checkpoints on a PersistentVolumeClaim', () => {
    expect(coordinatorJob.spec.backoffLimit).toBeGreaterThan(0);
    expect(coordinatorJob.spec.template.spec.restartPolicy).toBe('OnFailure');
    expect(workersJob.spec.template.spec.restartPolicy).toBe('OnFailure');
    // --resume auto: the newest valid checkpoint, else a fresh start (so the first run starts too).
    const args: string[] = coordinator.args;
    expect(args[0]).toBe('coordinator');
    expect(args[args.indexOf('--resume') + 1]).toBe('auto');
    // Checkpoints, events and report all on the claimed volume.
    const pvc = find(docs, 'PersistentVolumeClaim', 'batchlab-checkpoints');
    const volumes = coordinatorJob.spec.template.spec.volumes;
    const claimed = volumes.find((v: Json) => v.persistentVolumeClaim?.claimName === pvc.metadata.name);
    expect(claimed, 'a volume from the claim').toBeDefined();
    const mount = coordinator.volumeMounts.find((m: Json) => m.name === claimed.name);
    const onVolume = (path: string): boolean => path.startsWith(`${mount.mountPath}/`);
    const env = envOf(coordinator);
    const paths = {
      'checkpoint-dir': env.BATCHLAB_CHECKPOINT_DIR?.value,
      report: env.BATCHLAB_REPORT?.value,
      events: args[args.indexOf('--events') + 1],
    };
    for (const [option, path] of Object.entries(paths)) expect(onVolume(path ?? ''), `--${option} ${path}`).toBe(true);
    expect(new Set(Object.values(paths)).size).toBe(3);
    expect(pvc.spec.accessModes).toEqual(['ReadWriteOnce']);
    expect(pvc.spec.resources.requests.storage).toMatch(/^\d+Gi$/);
    // No other pod mounts it (ReadWriteOnce: one node).
    expect(JSON.stringify(workersJob)).not.toContain(pvc.metadata.name);
  });

  it("the coordinator's command-line options are options of batchlab coordinator", () => {
    const names = (coordinator.args as string[]).filter((a) => a.startsWith('--')).map((a) => a.slice(2));
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect(Object.keys(COORDINATOR_OPTIONS), `--${name}`).toContain(name);
  });

  it('probes: startup and liveness on /healthz, readiness on /readyz, all on the metrics port, slow to restart', () => {
    for (const c of [coordinator, worker]) {
      for (const [probe, path] of [
        ['startupProbe', '/healthz'],
        ['livenessProbe', '/healthz'],
        ['readinessProbe', '/readyz'],
      ] as const) {
        expect(c[probe]?.httpGet, `${c.name} ${probe}`).toEqual({ path, port: 'metrics' });
        expect(c[probe].timeoutSeconds, `${c.name} ${probe}`).toBeGreaterThanOrEqual(5);
      }
      const window = (p: Json): number => p.periodSeconds * p.failureThreshold;
      // A liveness restart mid-evaluation or mid-JIT costs a resume: only after minutes of silence.
      expect(window(c.livenessProbe), `${c.name} liveness`).toBeGreaterThanOrEqual(180);
      // The startup probe covers loading the backend (and, for the coordinator, preparing the run).
      expect(window(c.startupProbe), `${c.name} startup`).toBeGreaterThanOrEqual(300);
    }
    expect(window(coordinator.startupProbe)).toBeGreaterThanOrEqual(600);
    // Readiness gates no worker connection: the Service publishes a coordinator that is not ready.
    expect(service.spec.publishNotReadyAddresses).toBe(true);
    function window(p: Json): number {
      return p.periodSeconds * p.failureThreshold;
    }
  });

  it('Prometheus annotations and the PodMonitor point at the port each container serves /metrics on', () => {
    for (const [job, c] of [
      [coordinatorJob, coordinator],
      [workersJob, worker],
    ] as const) {
      const annotations = job.spec.template.metadata.annotations;
      const metricsPort = envOf(c).BATCHLAB_METRICS_PORT.value;
      expect(annotations['prometheus.io/scrape']).toBe('true');
      expect(annotations['prometheus.io/port']).toBe(metricsPort);
      expect(annotations['prometheus.io/path']).toBe('/metrics');
      expect(String(c.ports.find((p: Json) => p.name === 'metrics').containerPort)).toBe(metricsPort);
      expect(c.readinessProbe?.httpGet?.port ?? 'metrics').toBe('metrics');
    }
    const podMonitor = find(docs, 'PodMonitor', 'batchlab');
    expect(podMonitor.spec.podMetricsEndpoints.map((e: Json) => e.port)).toEqual(['metrics']);
    // An empty matchLabels would select every pod (and make the loop below check nothing).
    expect(Object.keys(podMonitor.spec.selector.matchLabels ?? {}), 'the PodMonitor selector').toContain(
      'app.kubernetes.io/name',
    );
    for (const job of [coordinatorJob, workersJob]) {
      for (const [k, v] of Object.entries(podMonitor.spec.selector.matchLabels))
        expect(job.spec.template.metadata.labels[k]).toBe(v);
    }
  });
});

describe('deploy/k8s-jobset: the same run as a JobSet', () => {
  const JOBSET = join(DEPLOY, 'k8s-jobset');
  const jobSetTitle = (title: string): string =>
    kubectlTitle(`${title} (JobSet's CRD schema is not available offline: checked by jobSetErrors in schemas.ts)`);

  it('every kustomization there references only files and directories that exist', () => {
    const kustomizations = walk(JOBSET).filter((f) => f.endsWith('kustomization.yaml'));
    expect(kustomizations.map(rel).sort()).toEqual([
      'deploy/k8s-jobset/assemble/kustomization.yaml',
      'deploy/k8s-jobset/kustomization.yaml',
    ]);
    for (const file of kustomizations) {
      const doc = readYamlOne(file);
      for (const ref of doc.resources ?? [])
        expect(existsSync(join(dirname(file), ref)), `${rel(file)} → ${ref}`).toBe(true);
    }
  });

  it('the structure check rejects broken JobSets (so a pass means something)', () => {
    const jobSet = readYamlOne(join(JOBSET, 'assemble/jobset.yaml'));
    const filled = structuredClone(jobSet);
    const plain = objects();
    filled.spec.replicatedJobs[0].template.spec = find(plain, 'Job', 'batchlab-coordinator').spec;
    filled.spec.replicatedJobs[1].template.spec = find(plain, 'Job', 'batchlab-workers').spec;
    expect(jobSetErrors(filled)).toEqual([]);
    const broken: [string, (j: Json) => void, RegExp][] = [
      ['v1alpha1', (j) => (j.apiVersion = 'jobset.x-k8s.io/v1alpha1'), /not a jobset\.x-k8s\.io\/v1alpha2 JobSet/],
      ['no template', (j) => (j.spec.replicatedJobs[1].template = {}), /replicatedJobs\[1\]\.template/],
      ['replicas 0', (j) => (j.spec.replicatedJobs[0].replicas = 0), /replicas must be an integer >= 1/],
      ['duplicate name', (j) => (j.spec.replicatedJobs[1].name = 'coordinator'), /names must be unique/],
      [
        'unknown success target',
        (j) => (j.spec.successPolicy.targetReplicatedJobs = ['trainer']),
        /names no replicated Job trainer/,
      ],
      ['success operator', (j) => (j.spec.successPolicy.operator = 'Some'), /operator must be All or Any/],
      ['maxRestarts text', (j) => (j.spec.failurePolicy.maxRestarts = '3'), /maxRestarts must be an integer/],
      [
        'a Job field of the wrong type',
        (j) => (j.spec.replicatedJobs[1].template.spec.parallelism = 'two'),
        /parallelism must be integer/,
      ],
    ];
    for (const [what, mutate, error] of broken) {
      const copy = structuredClone(filled);
      mutate(copy);
      expect(jobSetErrors(copy).join('\n'), what).toMatch(error);
    }
  });

  it.skipIf(!KUBECTL)(
    jobSetTitle(
      'renders a JobSet whose coordinator and workers are exactly the plain Jobs, with the Service and the checkpoint volume, and no plain Job',
    ),
    () => {
      const out = render(JOBSET);
      const plain = render(K8S);
      expect(out.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
        'JobSet/batchlab',
        'PersistentVolumeClaim/batchlab-checkpoints',
        'Service/batchlab-coordinator',
      ]);
      const jobSet = find(out, 'JobSet', 'batchlab');
      expect(jobSetErrors(jobSet)).toEqual([]);
      for (const doc of out.filter((d) => d.kind !== 'JobSet')) {
        expect(kubernetesErrors(doc)).toEqual([]);
        expect(doc).toEqual(find(plain, doc.kind, doc.metadata.name));
      }
      expect(jobSet.metadata.labels['app.kubernetes.io/part-of']).toBe('batchlab');
      const replicated = Object.fromEntries(jobSet.spec.replicatedJobs.map((j: Json) => [j.name, j]));
      expect(Object.keys(replicated)).toEqual(['coordinator', 'workers']);
      expect(replicated.coordinator.replicas).toBe(1);
      expect(replicated.workers.replicas).toBe(1);
      // The pods are the plain manifests' (settings.yaml applied: worker count, GPUs, reducer).
      expect(replicated.coordinator.template.spec).toEqual(find(plain, 'Job', 'batchlab-coordinator').spec);
      expect(replicated.workers.template.spec).toEqual(find(plain, 'Job', 'batchlab-workers').spec);
      expect(replicated.workers.template.spec.parallelism).toBe(settings().workers);
      // Done when the coordinator is; a failed set restarts and resumes (--resume auto on the claim).
      expect(jobSet.spec.successPolicy).toEqual({ operator: 'All', targetReplicatedJobs: ['coordinator'] });
      expect(jobSet.spec.failurePolicy.maxRestarts).toBeGreaterThan(0);
      expect(jobSet.spec.network.enableDNSHostnames).toBe(true);
      // Workers still find the coordinator through the Service, which selects its pod labels.
      const service = find(out, 'Service', 'batchlab-coordinator');
      const podLabels = replicated.coordinator.template.spec.template.metadata.labels;
      for (const [k, v] of Object.entries(service.spec.selector)) expect(podLabels[k], k).toBe(v);
      const worker = replicated.workers.template.spec.template.spec.containers[0];
      expect(envOf(worker).MASTER_ADDR.value).toBe(service.metadata.name);
    },
  );

  it.skipIf(!KUBECTL)(
    jobSetTitle('settings.yaml changes reach the JobSet too (it copies the Jobs after they are set)'),
    () => {
      const copy = join(tmp, 'jobset-settings');
      cpSync(K8S, join(copy, 'k8s'), { recursive: true });
      cpSync(JOBSET, join(copy, 'k8s-jobset'), { recursive: true });
      const path = join(copy, 'k8s', 'settings.yaml');
      writeFileSync(path, readFileSync(path, 'utf8').replace(/workers: \d+/, 'workers: 5'));
      const jobSet = find(render(join(copy, 'k8s-jobset')), 'JobSet', 'batchlab');
      const workers = jobSet.spec.replicatedJobs.find((j: Json) => j.name === 'workers').template.spec;
      expect([workers.parallelism, workers.completions]).toEqual([5, 5]);
      expect(jobSetErrors(jobSet)).toEqual([]);
    },
  );
});
