// Prometheus file-based service discovery: the coordinator keeps a file_sd JSON of its own and
// every live worker's /metrics endpoint, rewritten atomically as workers join and leave.
// Prometheus re-reads it by itself (file_sd_configs), which suits Slurm and bare hosts.

import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface ScrapeTarget {
  /** host:port */
  address: string;
  role: 'coordinator' | 'worker';
  worker?: string;
}

/**
 * The file_sd document: one target group per endpoint. Workers carry a `worker` label (the id the
 * coordinator's per-worker series use); `role` is not set here because every process already
 * exports it as a default label, and a target label of the same name would rename it.
 */
export function targetGroups(
  targets: readonly ScrapeTarget[],
): { targets: string[]; labels: Record<string, string> }[] {
  return targets.map((t) => {
    const labels: Record<string, string> = t.worker ? { worker: t.worker } : {};
    return { targets: [t.address], labels };
  });
}

/** Writes the targets to `path` (temp file + rename, so Prometheus never reads half a file). */
export function writeTargetsFile(path: string, targets: readonly ScrapeTarget[]): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.tmp`, `${JSON.stringify(targetGroups(targets), null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}
