// deploy/slurm/batchlab.sbatch: valid bash, and a real run of it on this machine with
// stand-ins for `scontrol` and `srun`: the coordinator starts on the first node of the
// allocation, the srun tasks find it through MASTER_ADDR/MASTER_PORT with a token generated
// for the job, and the run trains. A coordinator that fails stops the workers at once.

import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI } from '../support/cli.js';
import { freePort } from '../support/prometheus.js';
import { DEPLOY, inCi, itPassesShellcheck } from './support.js';

const SCRIPT = join(DEPLOY, 'slurm/batchlab.sbatch');
const tmp = mkdtempSync(join(tmpdir(), 'batchlab-slurm-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// `scontrol show hostnames LIST` prints one node per line; the first is where sbatch runs the script.
const SCONTROL = `#!/bin/bash
[ "$1 $2" = "show hostnames" ] || { echo "scontrol stand-in: unsupported: $*" >&2; exit 2; }
printf '127.0.0.1\\n127.0.0.2\\n'
`;
// srun: run the command once per task with SLURM_PROCID/SLURM_LOCALID and slurmd's SLURMD_NODENAME
// (this machine: 127.0.0.1), forward TERM like srun does.
const SRUN = `#!/bin/bash
printf '%s\\n' "$*" >> "$SRUN_LOG"
n=1
while [[ $# -gt 0 && $1 == -* ]]; do case $1 in --ntasks=*) n=\${1#*=};; esac; shift; done
pids=()
trap 'kill "\${pids[@]}" 2>/dev/null; wait; exit 143' TERM INT
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i SLURMD_NODENAME=127.0.0.1 "$@" & pids+=($!); done
rc=0
for p in "\${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
`;

interface Job {
  code: number | null;
  output: string;
  srunLog: string;
  seconds: number;
}

/** Runs the batch script as sbatch would on the first node, with the stand-ins on PATH. */
async function runJob(name: string, args: string[], env: Record<string, string> = {}): Promise<Job> {
  const dir = join(tmp, name);
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'scontrol'), SCONTROL);
  writeFileSync(join(bin, 'srun'), SRUN);
  chmodSync(join(bin, 'scontrol'), 0o755);
  chmodSync(join(bin, 'srun'), 0o755);
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (
      v !== undefined &&
      !k.startsWith('BATCHLAB') &&
      !k.startsWith('SLURM_') &&
      !k.startsWith('SLURMD_') &&
      k !== 'MASTER_ADDR' &&
      k !== 'MASTER_PORT'
    )
      base[k] = v;
  const start = Date.now();
  const child = spawn('bash', [SCRIPT, ...args], {
    cwd: dir,
    env: {
      ...base,
      PATH: `${bin}:${process.env.PATH}`,
      SRUN_LOG: join(dir, 'srun.log'),
      SLURM_JOB_ID: '4242',
      SLURM_JOB_NODELIST: 'node[01-02]',
      SLURM_NTASKS: '2',
      SLURM_SUBMIT_DIR: dir,
      RUN_BATCHLAB: `${process.execPath} ${CLI}`,
      COORDINATOR_HOST: '127.0.0.1',
      MASTER_PORT: String(await freePort()),
      METRICS_PORT: '0',
      WORKER_BACKEND: 'cpu',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  const log = join(dir, 'srun.log');
  return {
    code,
    output,
    srunLog: existsSync(log) ? readFileSync(log, 'utf8') : '',
    seconds: (Date.now() - start) / 1000,
  };
}

const built = existsSync(CLI);
const runTitle = (title: string): string =>
  built || inCi ? title : `${title} (skipped: ${CLI} is missing; npm run build)`;

/** A 3-step synthetic job small enough for a test, reporting to `report`. */
const tinyJob = (report: string): string[] => [
  ...['--dataset', 'synthetic', '--hidden', '16', '--global-batch', '32', '--micro-batch', '16'],
  ...['--steps', '3', '--eval-every', '0', '--report', report],
];

describe('deploy/slurm/batchlab.sbatch', () => {
  it('passes bash -n', () => {
    execFileSync('bash', ['-n', SCRIPT]);
  });

  itPassesShellcheck(SCRIPT);

  it('takes the coordinator host from the first node of SLURM_JOB_NODELIST and exports MASTER_ADDR/MASTER_PORT', () => {
    const text = readFileSync(SCRIPT, 'utf8');
    expect(text).toMatch(/scontrol show hostnames "\$SLURM_JOB_NODELIST" \| head -n1/);
    expect(text).toMatch(/^export MASTER_ADDR MASTER_PORT$/m);
    expect(text).toMatch(/^#SBATCH --gpus-per-task=1$/m);
    expect(text).toMatch(/^srun .*bash -c/m);
  });

  it.skipIf(!built && !inCi)(
    runTitle(
      'trains with a coordinator on the first node and one srun worker per task, sharing a token generated for the job',
    ),
    async () => {
      const report = join(tmp, 'ok-report.json');
      const job = await runJob('ok', tinyJob(report));
      expect(job.code, job.output.slice(-3000)).toBe(0);
      expect(job.output).toMatch(/coordinator on 127\.0\.0\.1:\d+, 2 workers/);
      const summary = JSON.parse(readFileSync(report, 'utf8'));
      expect(summary).toMatchObject({ steps: 3, workers: 2, samples: 96 });
      // Two tasks, named after host and local rank, joined; the token was never on a command line.
      expect(job.srunLog.split('\n')[0]).toMatch(/^--ntasks=2 /);
      expect(job.output).toMatch(/joined \([^,]+-0,/);
      expect(job.output).toMatch(/joined \([^,]+-1,/);
      expect(summary.command).not.toMatch(/--token/);
      expect(job.srunLog).not.toMatch(/--token/);
      // The coordinator kept a Prometheus file_sd list for the job and the script removed it at the end.
      expect(job.output).toMatch(/Prometheus targets in .*prometheus-targets\/batchlab-4242\.json/);
      expect(readdirSync(join(tmp, 'ok', 'prometheus-targets'))).toEqual([]);
    },
    60_000,
  );

  it.skipIf(!built && !inCi)(
    runTitle(
      'trains with --reducer sharded: each worker listens on PEER_HOST and advertises its node name, and the workers reach each other',
    ),
    async () => {
      const report = join(tmp, 'sharded-report.json');
      const job = await runJob('sharded', ['--reducer', 'sharded', ...tinyJob(report)]);
      expect(job.code, job.output.slice(-3000)).toBe(0);
      expect(JSON.parse(readFileSync(report, 'utf8'))).toMatchObject({ steps: 3, workers: 2 });
      // Both workers: listening on the default PEER_HOST, any free port, advertised at SLURMD_NODENAME.
      const advertised = [...job.output.matchAll(/peer server on 0\.0\.0\.0:(\d+), advertised as 127\.0\.0\.1:(\d+)/g)];
      expect(advertised.length, job.output.slice(-3000)).toBe(2);
      for (const [, listening, port] of advertised) expect(port).toBe(listening);
      expect(job.output).not.toMatch(/falling back to the star reducer/);
    },
    60_000,
  );

  it("exits with the coordinator's code and stops the workers still waiting for it when the coordinator fails", async () => {
    // A stand-in batchlab: once both workers run, the coordinator refuses an option; the workers
    // would wait for it (600 s in the real one).
    const fake = join(tmp, 'fake-batchlab');
    const pids = join(tmp, 'fake-worker-pids');
    writeFileSync(
      fake,
      `#!/bin/bash\ncase $1 in\n  coordinator) while [ $(wc -l < ${pids} 2>/dev/null || echo 0) -lt 2 ]; do sleep 0.05; done; echo "batchlab coordinator: --global-batch: got 0" >&2; exit 2 ;;\n  worker) echo $$ >> ${pids}; exec sleep 300 ;;\nesac\n`,
    );
    chmodSync(fake, 0o755);
    const job = await runJob('fail', ['--global-batch', '0'], { RUN_BATCHLAB: fake });
    expect(job.code, job.output).toBe(2);
    expect(job.output).toMatch(/the coordinator exited with 2; stopping the workers/);
    expect(job.seconds).toBeLessThan(20); // not the workers' connect timeout
    const workerPids = readFileSync(pids, 'utf8').trim().split('\n').map(Number);
    expect(workerPids.length).toBe(2);
    for (const pid of workerPids) expect(() => process.kill(pid, 0), `worker ${pid} still runs`).toThrow();
  }, 30_000);
});
