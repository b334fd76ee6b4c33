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
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
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
