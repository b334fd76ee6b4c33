// Offline schema validators for the deploy/ files.
//
// Compose: the Compose Specification JSON schema (compose-spec/compose-spec, Apache-2.0) as the
// `dclint` package ships it in schemas/compose.schema.json (dclint is MIT; the file is read from
// node_modules, not copied), checked with ajv. No network at test time.
//
// Kubernetes: the `kubernetes-models` package (tommy351/kubernetes-models-ts, MIT) bundles
// validators compiled (ajv) from the Kubernetes OpenAPI schemas, one class per kind;
// `@kubernetes-models/prometheus-operator` does the same for the Operator's CRDs (PodMonitor).
// Like Kubernetes' own OpenAPI schemas (and kubeconform without -strict), they check types,
// required fields, enums and formats (quantities, int-or-string), not unknown field names: the
// tests assert the fields batchlab relies on by name.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { packageDir, type Json } from './support.js';

let composeValidator: ValidateFunction | null = null;

/** Path of the Compose Specification schema file used. */
export function composeSchemaPath(): string {
  return join(packageDir('dclint'), 'schemas', 'compose.schema.json');
}

/** Validates a parsed, interpolated Compose model; returns the schema errors ([] when valid). */
export function composeErrors(model: Json): string[] {
  if (!composeValidator) {
    // The file names draft-07 by an https URL ajv does not know; draft-07 is ajv's default.
    const { $schema: _draft, ...schema } = JSON.parse(readFileSync(composeSchemaPath(), 'utf8'));
    composeValidator = new Ajv({ allErrors: true, strict: false }).compile(schema);
  }
  return composeValidator(model)
    ? []
    : (composeValidator.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
}

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: Json) => Validatable;

/** The kinds deploy/ may use, by "apiVersion kind". A manifest of any other kind fails the test. */
const KUBERNETES_MODELS: Record<string, ModelClass> = {
  'v1 Service': Service,
  'v1 Secret': Secret,
  'v1 ConfigMap': ConfigMap,
  'v1 Namespace': Namespace,
  'v1 ServiceAccount': ServiceAccount,
  'v1 PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1 DaemonSet': DaemonSet,
  'apps/v1 Deployment': Deployment,
  'apps/v1 StatefulSet': StatefulSet,
  'batch/v1 Job': Job,
  'batch/v1 CronJob': CronJob,
  'monitoring.coreos.com/v1 PodMonitor': PodMonitor,
};

/** Validates one Kubernetes object against its schema; returns the errors ([] when valid). */
export function kubernetesErrors(object: Json): string[] {
  const key = `${object?.apiVersion} ${object?.kind}`;
  const Model = KUBERNETES_MODELS[key];
  if (!Model) return [`no schema for "${key}" (known: ${Object.keys(KUBERNETES_MODELS).join(', ')})`];
  try {
    new Model(object).validate();
    return [];
  } catch (error) {
    return [(error as Error).message];
  }
}

const DNS_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Checks a JobSet (jobset.x-k8s.io/v1alpha2) offline. No package ships its CRD schema, so these
 * are hand-written checks of the fields batchlab uses, after the v1alpha2 API types
 * (kubernetes-sigs/jobset, api/jobset/v1alpha2/jobset_types.go): replicatedJobs with unique
 * DNS-label names, integer replicas >= 1 and a Job template whose spec validates as a batch/v1
 * Job's (through kubernetes-models, as every other manifest); successPolicy.operator All or
 * Any naming only existing replicated Jobs; failurePolicy.maxRestarts an integer >= 0;
 * network.enableDNSHostnames a boolean. Returns the errors ([] when valid).
 */
export function jobSetErrors(object: Json): string[] {
  const errors: string[] = [];
  if (object?.apiVersion !== 'jobset.x-k8s.io/v1alpha2' || object?.kind !== 'JobSet')
    return [`not a jobset.x-k8s.io/v1alpha2 JobSet: ${object?.apiVersion} ${object?.kind}`];
  if (!DNS_LABEL.test(object.metadata?.name ?? '')) errors.push('metadata.name must be a DNS label');
  const spec = object.spec ?? {};
  const jobs: Json[] = Array.isArray(spec.replicatedJobs) ? spec.replicatedJobs : [];
  if (jobs.length === 0) errors.push('spec.replicatedJobs must be a non-empty array');
  const names = jobs.map((j) => j?.name);
  if (new Set(names).size !== names.length) errors.push('spec.replicatedJobs names must be unique');
  for (const [i, job] of jobs.entries()) {
    const where = `spec.replicatedJobs[${i}]`;
    if (typeof job?.name !== 'string' || !DNS_LABEL.test(job.name)) errors.push(`${where}.name must be a DNS label`);
    if (!Number.isInteger(job?.replicas) || job.replicas < 1) errors.push(`${where}.replicas must be an integer >= 1`);
    const jobErrors = kubernetesErrors({
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: `${object.metadata?.name}-${job?.name}`, ...(job?.template?.metadata ?? {}) },
      spec: job?.template?.spec,
    });
    for (const e of jobErrors) errors.push(`${where}.template: ${e}`);
    if (!job?.template?.spec?.template?.spec?.containers)
      errors.push(`${where}.template.spec.template has no containers`);
  }
  const success = spec.successPolicy;
  if (success !== undefined) {
    if (!['All', 'Any'].includes(success.operator)) errors.push('spec.successPolicy.operator must be All or Any');
    for (const target of success.targetReplicatedJobs ?? [])
      if (!names.includes(target))
        errors.push(`spec.successPolicy.targetReplicatedJobs names no replicated Job ${target}`);
  }
  const failure = spec.failurePolicy;
  if (failure !== undefined && (!Number.isInteger(failure.maxRestarts) || failure.maxRestarts < 0))
    errors.push('spec.failurePolicy.maxRestarts must be an integer >= 0');
  const network = spec.network;
  if (network !== undefined && typeof network.enableDNSHostnames !== 'boolean')
    errors.push('spec.network.enableDNSHostnames must be a boolean');
  return errors;
}
