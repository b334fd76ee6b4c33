// scripts/gpu-check.sh: shellcheck-clean bash, and run against a stand-in batchlab (BATCHLAB)
// that reports a hardware or a software adapter, or fails one command: the script passes only on
// a hardware adapter (or a software one with --allow-fallback), and its exit code says why not.
// A run against the real WebGPU backend needs a GPU; the backend's own tests cover the log line.

import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { itPassesShellcheck, ROOT } from './support.js';

const SCRIPT = join(ROOT, 'scripts/gpu-check.sh');
const tmp = mkdtempSync(join(tmpdir(), 'batchlab-gpu-check-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// Prints the adapter line every batchlab process logs at start (ADAPTER: hardware or software)
// and records its arguments; FAIL names a command (local, bench) that exits 1 instead. The
// environment given to the script has no XDG_RUNTIME_DIR.
const STAND_IN = join(tmp, 'batchlab-stand-in');
writeFileSync(
  STAND_IN,
  `#!/bin/bash
printf '%s\\n' "$*" >> "$CALLS"
# Dawn wants a writable XDG_RUNTIME_DIR: the script makes one when the environment has none.
[ -n "$XDG_RUNTIME_DIR" ] && [ -w "$XDG_RUNTIME_DIR" ] || { echo "stand-in: no writable XDG_RUNTIME_DIR" >&2; exit 1; }
[ "$1" = "$FAIL" ] && { echo "stand-in: $1 failed" >&2; exit 1; }
if [ "$ADAPTER" = software ]; then
  echo "backend webgpu (adapter llvmpipe (LLVM 19.1.7, 256 bits), software fallback)"
  echo "[worker 1] backend webgpu (adapter llvmpipe (LLVM 19.1.7, 256 bits), software fallback)"
else
  echo "backend webgpu (adapter NVIDIA H100 80GB HBM3, hardware)"
  echo "[worker 1] backend webgpu (adapter NVIDIA H100 80GB HBM3, hardware)"
fi
`,
);
chmodSync(STAND_IN, 0o755);

let runs = 0;
/** Runs the script with the stand-in; its exit code, output and the batchlab commands it ran. */
function check(
  args: string[],
  env: Record<string, string>,
): { status: number | null; output: string; calls: string[] } {
  const calls = join(tmp, `calls-${++runs}`);
  writeFileSync(calls, '');
  const r = spawnSync('bash', [SCRIPT, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, BATCHLAB: STAND_IN, CALLS: calls, ADAPTER: 'hardware', FAIL: '', ...env },
  });
  return {
    status: r.status,
    output: r.stdout + r.stderr,
    calls: readFileSync(calls, 'utf8').trim().split('\n').filter(Boolean),
  };
}

describe('scripts/gpu-check.sh', () => {
  it('is valid bash with set -euo pipefail', () => {
    execFileSync('bash', ['-n', SCRIPT]);
    expect(readFileSync(SCRIPT, 'utf8')).toMatch(/^set -euo pipefail$/m);
  });

  itPassesShellcheck(SCRIPT);

  it('on a hardware adapter: runs one step, the backends bench and a two-worker run on webgpu, exits 0 naming the adapter', () => {
    const r = check(['--steps', '7'], {});
    expect(r.status, r.output).toBe(0);
    expect(r.calls).toEqual([
      'local --workers 1 --steps 1 --eval-every 0 --backend webgpu --dataset synthetic',
      'bench --only backends --quick',
      'local --workers 2 --steps 7 --backend webgpu --dataset synthetic',
    ]);
    expect(r.output).toContain(
      'gpu-check: passed on the GPU: backend webgpu (adapter NVIDIA H100 80GB HBM3, hardware)',
    );
  });

  it('on a software fallback adapter: stops after the first run with exit 3 and says why', () => {
    const r = check([], { ADAPTER: 'software' });
    expect(r.status, r.output).toBe(3);
    expect(r.calls).toHaveLength(1);
    expect(r.output).toMatch(/ran on a software fallback adapter, not on a GPU/);
    expect(r.output).toMatch(/NVIDIA_DRIVER_CAPABILITIES must include graphics/);
  });

  it('with --allow-fallback: runs everything on the software adapter, exits 0 and says it was not a GPU', () => {
    const r = check(['--allow-fallback'], { ADAPTER: 'software' });
    expect(r.status, r.output).toBe(0);
    expect(r.calls).toHaveLength(3);
    expect(r.output).toMatch(/passed on a SOFTWARE adapter \(--allow-fallback\)/);
  });

  it('exits 1 when a step fails, or when no webgpu adapter line is logged', () => {
    for (const command of ['local', 'bench']) {
      const r = check([], { FAIL: command });
      expect(r.status, `${command}: ${r.output}`).toBe(1);
      expect(r.output).toMatch(/gpu-check: FAILED: /);
    }
    const silent = join(tmp, 'silent');
    writeFileSync(silent, '#!/bin/bash\necho "backend cpu (cpu)"\n');
    chmodSync(silent, 0o755);
    const r = check([], { BATCHLAB: silent });
    expect(r.status, r.output).toBe(1);
    expect(r.output).toMatch(/no 'backend webgpu \(adapter \.\.\., hardware\)' line/);
  });

  it('refuses an unknown argument or a bad --steps with exit 2, naming it', () => {
    const unknown = check(['--fallback'], {});
    expect(unknown.status).toBe(2);
    expect(unknown.output).toMatch(/unknown argument --fallback/);
    const steps = check(['--steps', '0'], {});
    expect(steps.status).toBe(2);
    expect(steps.output).toMatch(/--steps 0: expected a positive whole number/);
    expect([...unknown.calls, ...steps.calls]).toEqual([]);
  });
});
