// Runs the built `batchlab` command as a real process (npm test builds first).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = `${ROOT}dist/cli/batchlab.js`;
export const SUBSET_DIR = `${ROOT}assets/fashion-mnist-subset`;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Launcher variables batchlab reads (cli/launcher.ts). */
const LAUNCHER_VARIABLES = ['MASTER_ADDR', 'MASTER_PORT', 'WORLD_SIZE', 'RANK', 'LOCAL_RANK'];

/** Environment for a child: the caller's, minus BATCHLAB_* and launcher settings that would leak into the test. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('BATCHLAB_') && !LAUNCHER_VARIABLES.includes(k)) env[k] = v;
  return { ...env, ...extra };
}

/** Starts `batchlab args…`; the caller owns the process. */
export function startCli(args: string[], env: Record<string, string> = {}): ChildProcess {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (npm test does it first)`);
  return spawn(process.execPath, [CLI, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs `batchlab args…` to completion, killing it after `timeoutMs`. */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<CliResult> {
  const child = startCli(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Resolves with the first match of `pattern` in the process's stderr. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`no ${pattern} within ${timeoutMs} ms; output so far:\n${seen}`)),
      timeoutMs,
    );
    const onData = (d: Buffer): void => {
      seen += d.toString();
      const m = seen.match(pattern);
      if (m) {
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        resolve(m);
      }
    };
    child.stderr!.on('data', onData);
  });
}
