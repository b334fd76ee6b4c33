// Helpers for the deploy/ tests: file listing, YAML loading as Compose and Kubernetes read it,
// Compose-style variable interpolation, and the options each batchlab command accepts.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { it } from 'vitest';
import { parseAllDocuments } from 'yaml';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DEPLOY = join(ROOT, 'deploy');

/** Every file below `dir`, as absolute paths, sorted. */
export function walk(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...walk(path));
    else out.push(path);
  }
  return out;
}

/** Path relative to the repository root, for messages. */
export const rel = (path: string): string => relative(ROOT, path);

/** Every YAML file under deploy/. */
export function deployYamlFiles(): string[] {
  return walk(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
}

/**
 * Every document of a YAML text as written, empty ones (null) included, with merge keys
 * (`<<: *anchor`) resolved as Compose does. Throws on any parse error or warning, duplicate
 * keys included.
 */
export function parseYamlDocuments(text: string, name = 'yaml'): unknown[] {
  const docs = parseAllDocuments(text, { merge: true, uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) throw new Error(`${name}: not a YAML stream`);
  const problems = docs.flatMap((d) => [...d.errors, ...d.warnings].map((e) => e.message));
  if (problems.length > 0) throw new Error(`${name}: ${problems.join('\n')}`);
  return docs.map((d) => d.toJS({ maxAliasCount: 1000 }));
}

/** The non-empty documents of a YAML text (as kubectl and Compose read a stream); see parseYamlDocuments. */
export function parseYamlText(text: string, name = 'yaml'): unknown[] {
  return parseYamlDocuments(text, name).filter((d) => d !== null && d !== undefined);
}

export function readYaml(path: string): unknown[] {
  return parseYamlText(readFileSync(path, 'utf8'), rel(path));
}

/** Parsed YAML/JSON: loosely typed on purpose; the tests assert on it and the schemas validate it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the one place parsed documents are typed
export type Json = any;

export function readYamlOne(path: string): Json {
  const docs = readYaml(path);
  if (docs.length !== 1) throw new Error(`${rel(path)}: expected one document, found ${docs.length}`);
  return docs[0];
}

/** KEY=VALUE lines of an env file (comments and blank lines skipped), as Compose reads deploy/.env. */
export function readEnvFile(path: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m) env[m[1]!] = m[2]!.trim().replace(/^(['"])(.*)\1$/, '$2');
  }
  return env;
}

const VARIABLE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;

/** The variable names a text refers to with ${NAME...} or $NAME ($$ is an escaped dollar). */
export function variablesIn(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(VARIABLE)) if (m[1] ?? m[4]) names.add((m[1] ?? m[4])!);
  return names;
}

/**
 * Compose interpolation of one string: ${VAR}, $VAR, ${VAR:-default}, ${VAR-default},
 * ${VAR:?message}, ${VAR?message}, and $$ for a literal dollar. An unset variable without a
 * default becomes "" (Compose warns); ":?" and "?" throw with their message.
 */
export function interpolate(text: string, env: Record<string, string | undefined>): string {
  return text.replace(VARIABLE, (match, braced?: string, op?: string, arg?: string, bare?: string) => {
    if (match === '$$') return '$';
    const name = (braced ?? bare)!;
    const value = env[name];
    const empty = value === undefined || value === '';
    switch (op) {
      case ':-':
        return empty ? (arg ?? '') : value;
      case '-':
        return value === undefined ? (arg ?? '') : value;
      case ':?':
        if (empty) throw new Error(`required variable ${name} is missing a value: ${arg}`);
        return value;
      case '?':
        if (value === undefined) throw new Error(`required variable ${name} is missing a value: ${arg}`);
        return value;
      case undefined:
      default:
        return value ?? '';
    }
  });
}

/** Interpolates every string (values, not keys) of a parsed YAML tree. */
export function interpolateTree(node: Json, env: Record<string, string | undefined>): Json {
  if (typeof node === 'string') return interpolate(node, env);
  if (Array.isArray(node)) return node.map((n) => interpolateTree(n, env));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateTree(v, env)]));
  return node;
}

/** A Compose file parsed (merge keys resolved) and interpolated with `env`. */
export function loadCompose(path: string, env: Record<string, string | undefined>): Json {
  return interpolateTree(readYamlOne(path), env);
}

/** `environment:` of a Compose service as a map, whichever of the two forms it uses. */
export function serviceEnvironment(service: Json): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((e: string) => {
        const i = e.indexOf('=');
        return i < 0 ? [e, ''] : [e.slice(0, i), e.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(
    Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v as string | number | boolean)]),
  );
}

/** The option a BATCHLAB_* variable sets, as batchlab maps it (cli/option-declarations.ts): BATCHLAB_GLOBAL_BATCH → global-batch. */
export function optionOfVariable(name: string): string {
  return name
    .replace(/^BATCHLAB_/, '')
    .toLowerCase()
    .replaceAll('_', '-');
}

/** Where an npm package is installed (its directory), resolved from the repository root. */
export function packageDir(name: string): string {
  const require = createRequire(join(ROOT, 'package.json'));
  return dirname(require.resolve(`${name}/package.json`));
}

/** The executable `name` on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

export const inCi = process.env.CI === 'true';

/** A test that `script` passes shellcheck as bash; skipped with the reason without shellcheck, a failure under CI=true. */
export function itPassesShellcheck(script: string): void {
  const shellcheck = which('shellcheck');
  it.skipIf(!shellcheck && !inCi)(
    shellcheck || inCi
      ? 'passes shellcheck'
      : 'passes shellcheck (skipped: shellcheck not installed; apt-get install shellcheck)',
    () => {
      if (!shellcheck) throw new Error('shellcheck is not installed (apt-get install shellcheck); .ci/run installs it');
      execFileSync(shellcheck, ['-s', 'bash', script], { encoding: 'utf8' });
    },
  );
}
