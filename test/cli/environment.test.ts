// Which BATCHLAB_* variables a process accepts, how a misspelt one is refused, how a bad value
// names its variable, and the launcher variables (WORLD_SIZE, MASTER_PORT, RANK, LOCAL_RANK):
// in process through real yargs parsing, then through the built CLI.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import yargs, { type Options } from 'yargs';
import { describe, expect, it } from 'vitest';
import {
  checkVariableNames,
  closestVariable,
  editDistance,
  isServiceLink,
  UnknownVariableError,
} from '../../cli/environment-names.js';
import {
  COORDINATOR_LAUNCHER,
  localDevice,
  selectLocalDevice,
  WORKER_LAUNCHER,
  type LauncherDefault,
} from '../../cli/launcher.js';
import { nameVariableOf, OPTION_VARIABLES, withEnvironmentDefaults } from '../../cli/option-declarations.js';
import {
  COORDINATOR_OPTIONS,
  LOCAL_OPTIONS,
  parseCoordinatorSettings,
  parseLocalSettings,
  parseWorkerSettings,
  WORKER_OPTIONS,
} from '../../cli/options.js';
import { OptionError } from '../../shared/errors.js';
import { ROOT, runCli } from '../support/cli.js';

/** argv as `batchlab <command>` sees it: strict yargs over the declarations with `env`'s defaults. */
function parseArgv(
  options: Record<string, Options>,
  args: string[],
  env: NodeJS.ProcessEnv,
  launcher: readonly LauncherDefault[] = [],
): Record<string, unknown> {
  const declared = withEnvironmentDefaults(options, env, launcher);
  return yargs(args).options(declared).strict().help(false).version(false).parseSync();
}

/** The error `check` throws, or null. */
function thrown(check: () => unknown): unknown {
  try {
    check();
    return null;
  } catch (error) {
    return error;
  }
}

/** Every variable Kubernetes injects into a pod for a Service `name` with the given ports. */
function serviceLinks(name: string, ports: [name: string, port: number][]): Record<string, string> {
  const svc = name.toUpperCase().replaceAll('-', '_');
  const [first] = ports;
  const env: Record<string, string> = {
    [`${svc}_SERVICE_HOST`]: '10.96.0.12',
    [`${svc}_SERVICE_PORT`]: String(first![1]),
    [`${svc}_PORT`]: `tcp://10.96.0.12:${first![1]}`,
  };
  for (const [portName, port] of ports) {
    env[`${svc}_SERVICE_PORT_${portName.toUpperCase().replaceAll('-', '_')}`] = String(port);
    const p = `${svc}_PORT_${port}_TCP`;
    Object.assign(env, {
      [p]: `tcp://10.96.0.12:${port}`,
      [`${p}_PROTO`]: 'tcp',
      [`${p}_PORT`]: String(port),
      [`${p}_ADDR`]: '10.96.0.12',
    });
  }
  return env;
}

describe('BATCHLAB_* names', () => {
  it.each([
    ['BATCHLAB_GLOBAL_BATCHSIZE', 'BATCHLAB_GLOBAL_BATCH'],
    ['BATCHLAB_GLOBALBATCH', 'BATCHLAB_GLOBAL_BATCH'],
    ['BATCHLAB_DATADIR', 'BATCHLAB_DATA_DIR'],
    ['BATCHLAB_STPES', 'BATCHLAB_STEPS'],
    ['BATCHLAB_MIN_WORKER', 'BATCHLAB_MIN_WORKERS'],
    ['BATCHLAB_TOKN', 'BATCHLAB_TOKEN'],
    ['BATCHLAB_CHECKPOINT_DIRECTORY', 'BATCHLAB_CHECKPOINT_DIR'],
    ['BATCHLAB_global-batch', 'BATCHLAB_GLOBAL_BATCH'],
  ])('refuse %s and suggest %s', (name, suggestion) => {
    const error = thrown(() => checkVariableNames({ [name]: '1' }, OPTION_VARIABLES));
    expect(error).toBeInstanceOf(UnknownVariableError);
    expect((error as Error).message).toBe(`${name} is not a batchlab variable; did you mean ${suggestion}?`);
  });

  it('refuse a name close to nothing, and suggest nothing for it', () => {
    expect(closestVariable('BATCHLAB_BATCH_SIZE_PER_GPU', OPTION_VARIABLES)).toBeNull();
    expect(() => checkVariableNames({ BATCHLAB_BATCH_SIZE_PER_GPU: '64' }, OPTION_VARIABLES)).toThrow(
      /^BATCHLAB_BATCH_SIZE_PER_GPU is not a batchlab variable; options are set by BATCHLAB_<OPTION>/,
    );
  });

  it('count swaps of neighbours as one edit', () => {
    expect(editDistance('STPES', 'STEPS')).toBe(1);
    expect(editDistance('GLOBAL_BATCHSIZE', 'GLOBAL_BATCH')).toBe(4);
    expect(editDistance('', 'AB')).toBe(2);
  });

  it("accept every command's option variables in every command (a pod may carry another's), and variables of other commands set nothing", () => {
    const env = { BATCHLAB_CONNECT: 'ws://h:1', BATCHLAB_WORKERS: '3', BATCHLAB_QUICK: '1', BATCHLAB_HTML: 'x.html' };
    expect(() => checkVariableNames(env, OPTION_VARIABLES)).not.toThrow();
    const settings = parseCoordinatorSettings(parseArgv(COORDINATOR_OPTIONS, ['--insecure'], env));
    expect(settings.minWorkers).toBe(1);
    expect(parseWorkerSettings(parseArgv(WORKER_OPTIONS, [], env), {}).connect).toBe('ws://h:1');
  });

  it('recognise the variables Kubernetes injects for any Service named batchlab-*, and only by their shape', () => {
    const env = {
      ...serviceLinks('batchlab-coordinator', [
        ['workers', 7070],
        ['metrics', 9400],
      ]),
      ...serviceLinks('batchlab-foo', [['http-api', 8080]]),
      ...serviceLinks('batchlab-global-batch', [['a', 1]]),
    };
    expect(Object.keys(env).length).toBeGreaterThan(20);
    expect(() => checkVariableNames(env, OPTION_VARIABLES)).not.toThrow();
    expect(parseCoordinatorSettings(parseArgv(COORDINATOR_OPTIONS, ['--insecure'], env)).globalBatchSize).toBe(128);
    // A bare <SVC>_PORT is a Service's only with a tcp:// value: BATCHLAB_METRIC_PORT=9400 is a typo.
    expect(isServiceLink('BATCHLAB_FOO_PORT', 'tcp://10.0.0.1:80')).toBe(true);
    expect(isServiceLink('BATCHLAB_METRIC_PORT', '9400')).toBe(false);
    expect(() => checkVariableNames({ BATCHLAB_METRIC_PORT: '9400' }, OPTION_VARIABLES)).toThrow(
      /did you mean BATCHLAB_METRICS_PORT\?/,
    );
    expect(isServiceLink('BATCHLAB_FOO_SERVICE_HOSTS', '10.0.0.1')).toBe(false);
  });

  it('accept every BATCHLAB_* name the code, scripts and deployment files use', () => {
    const names = new Map<string, string>();
    const visit = (path: string): void => {
      if (statSync(path).isDirectory()) {
        for (const entry of readdirSync(path)) visit(join(path, entry));
        return;
      }
      for (const m of readFileSync(path, 'utf8').matchAll(/\bBATCHLAB_[A-Z0-9_]+\b/g))
        if (!m[0].endsWith('_')) names.set(m[0], path);
    };
    for (const dir of ['cli', 'coordinator', 'worker', 'shared', 'bench', 'scripts', 'deploy', 'grafana'])
      visit(join(ROOT, dir));
    expect(names.size).toBeGreaterThan(20);
    for (const [name, path] of names) {
      // Service links are recognised by their values; give the one a Service would.
      const value = name.endsWith('_PORT') ? 'tcp://10.0.0.1:7070' : '1';
      expect(() => checkVariableNames({ [name]: value }, OPTION_VARIABLES), `${name} in ${path}`).not.toThrow();
    }
  });
});

describe('a bad value from the environment names its variable', () => {
  it('names BATCHLAB_<OPTION> when the value came from it, and only then', () => {
    const env = { BATCHLAB_GLOBAL_BATCH: 'abc', BATCHLAB_MICRO_BATCH: '64' };
    const fromEnvironment = parseArgv(LOCAL_OPTIONS, [], env);
    const error = nameVariableOf(
      thrown(() => parseLocalSettings(fromEnvironment)),
      fromEnvironment,
      LOCAL_OPTIONS,
      env,
    );
    expect((error as Error).message).toBe(
      'BATCHLAB_GLOBAL_BATCH (--global-batch): got "abc"; expected an integer from 1 to 1000000',
    );
    // A check across options names the variable of the value it refuses.
    const crossed = parseArgv(LOCAL_OPTIONS, ['--global-batch', '32'], env);
    expect(
      (
        nameVariableOf(
          thrown(() => parseLocalSettings(crossed)),
          crossed,
          LOCAL_OPTIONS,
          env,
        ) as Error
      ).message,
    ).toBe('BATCHLAB_MICRO_BATCH (--micro-batch): got "64"; expected at most --global-batch (32)');
    // The command line's own value is its own.
    const given = parseArgv(LOCAL_OPTIONS, ['--global-batch', 'xyz'], env);
    const own = nameVariableOf(
      thrown(() => parseLocalSettings(given)),
      given,
      LOCAL_OPTIONS,
      env,
    );
    expect((own as OptionError).message).toMatch(/^--global-batch: got "xyz"/);
  });
});

describe('launcher variables', () => {
  const coordinator = (args: string[], env: NodeJS.ProcessEnv) =>
    parseCoordinatorSettings(parseArgv(COORDINATOR_OPTIONS, ['--insecure', ...args], env, COORDINATOR_LAUNCHER));

  it('WORLD_SIZE is the number of workers a coordinator waits for, below --min-workers and BATCHLAB_MIN_WORKERS', () => {
    expect(coordinator([], { WORLD_SIZE: '4' }).minWorkers).toBe(4);
    expect(coordinator([], { WORLD_SIZE: '4', BATCHLAB_MIN_WORKERS: '3' }).minWorkers).toBe(3);
    expect(coordinator(['--min-workers', '2'], { WORLD_SIZE: '4', BATCHLAB_MIN_WORKERS: '3' }).minWorkers).toBe(2);
    expect(coordinator([], {}).minWorkers).toBe(1);
    // local starts its own workers: WORLD_SIZE is not read there.
    expect(parseLocalSettings(parseArgv(LOCAL_OPTIONS, ['--workers', '2'], { WORLD_SIZE: '4' })).minWorkers).toBe(2);
  });

  it('MASTER_PORT is where a coordinator listens, below --port and BATCHLAB_PORT', () => {
    expect(coordinator([], { MASTER_PORT: '29500' }).port).toBe(29500);
    expect(coordinator([], { MASTER_PORT: '29500', BATCHLAB_PORT: '7000' }).port).toBe(7000);
    expect(coordinator(['--port', '0'], { MASTER_PORT: '29500' }).port).toBe(0);
    expect(coordinator([], {}).port).toBe(7070);
  });

  it('RANK names a worker rank-<RANK>, below --name and BATCHLAB_NAME', () => {
    const worker = (args: string[], env: NodeJS.ProcessEnv) =>
      parseWorkerSettings(parseArgv(WORKER_OPTIONS, ['--connect', 'ws://h:1', ...args], env, WORKER_LAUNCHER), env);
    expect(worker([], { RANK: '3' }).name).toBe('rank-3');
    expect(worker([], { RANK: '3', BATCHLAB_NAME: 'w' }).name).toBe('w');
    expect(worker(['--name', 'n'], { RANK: '3' }).name).toBe('n');
    expect(worker([], {}).name).toBeUndefined();
  });

  it('a bad launcher value names the variable', () => {
    for (const [env, message] of [
      [{ WORLD_SIZE: 'two' }, 'WORLD_SIZE (--min-workers): got "two"; expected an integer from 1 to 10000'],
      [{ WORLD_SIZE: '0' }, 'WORLD_SIZE (--min-workers): got "0"; expected an integer from 1 to 10000'],
      [{ MASTER_PORT: '70000' }, 'MASTER_PORT (--port): got "70000"; expected an integer from 0 to 65535'],
    ] as const) {
      const argv = parseArgv(COORDINATOR_OPTIONS, ['--insecure'], env, COORDINATOR_LAUNCHER);
      const error = thrown(() => parseCoordinatorSettings(argv));
      expect((nameVariableOf(error, argv, COORDINATOR_OPTIONS, env, COORDINATOR_LAUNCHER) as Error).message).toBe(
        message,
      );
    }
    expect(() => parseArgv(WORKER_OPTIONS, [], { RANK: '-1' }, WORKER_LAUNCHER)).toThrow(
      'RANK (--name): got "-1"; expected an integer from 0 up',
    );
    expect(() => parseWorkerSettings({}, { MASTER_ADDR: 'h', MASTER_PORT: 'x' })).toThrow(
      'MASTER_PORT (--connect): got "x"; expected the coordinator port, an integer from 1 to 65535',
    );
  });

  it('LOCAL_RANK picks the GPU: CUDA_VISIBLE_DEVICES when unset, the entry of a list, kept when the launcher chose one', () => {
    expect(localDevice({}, 'cpu')).toBeNull();
    expect(localDevice({ LOCAL_RANK: '2' }, 'tensorflow-gpu')).toEqual({
      cudaVisibleDevices: '2',
      line: 'LOCAL_RANK=2: CUDA_VISIBLE_DEVICES=2 for tensorflow-gpu',
    });
    expect(localDevice({ LOCAL_RANK: '1', CUDA_VISIBLE_DEVICES: '4,6,7' }, 'tensorflow-gpu')).toEqual({
      cudaVisibleDevices: '6',
      line: 'LOCAL_RANK=1: CUDA_VISIBLE_DEVICES=6 (entry 1 of 4,6,7) for tensorflow-gpu',
    });
    expect(localDevice({ LOCAL_RANK: '1', CUDA_VISIBLE_DEVICES: '5' }, 'tensorflow-gpu')).toEqual({
      cudaVisibleDevices: null,
      line: 'LOCAL_RANK=1: CUDA_VISIBLE_DEVICES=5 kept (set by the launcher) for tensorflow-gpu',
    });
    expect(localDevice({ LOCAL_RANK: '0', CUDA_VISIBLE_DEVICES: '' }, 'cpu')?.cudaVisibleDevices).toBeNull();
    expect(localDevice({ LOCAL_RANK: '1' }, 'webgpu')?.line).toMatch(
      /; webgpu cannot select an adapter by LOCAL_RANK and uses the one Dawn picks$/,
    );
    expect(localDevice({ LOCAL_RANK: '1' }, 'auto')?.line).toMatch(/webgpu cannot select/);
    // The worker applies it to its own environment before the backend loads.
    const env: NodeJS.ProcessEnv = { LOCAL_RANK: '1', CUDA_VISIBLE_DEVICES: '2,3' };
    const lines: string[] = [];
    selectLocalDevice(env, 'cpu', (line) => lines.push(line));
    expect(env.CUDA_VISIBLE_DEVICES).toBe('3');
    expect(lines).toEqual(['LOCAL_RANK=1: CUDA_VISIBLE_DEVICES=3 (entry 1 of 2,3) for tensorflow-gpu']);
    const unset: NodeJS.ProcessEnv = { LOCAL_RANK: '0' };
    selectLocalDevice(unset, 'cpu', () => {});
    expect(unset.CUDA_VISIBLE_DEVICES).toBe('0');
    selectLocalDevice({}, 'cpu', (line) => lines.push(line));
    expect(lines).toHaveLength(1);
    expect(() => localDevice({ LOCAL_RANK: 'one' }, 'cpu')).toThrow(
      'LOCAL_RANK: got "one"; expected an integer from 0 up',
    );
    expect(() => localDevice({ LOCAL_RANK: '3', CUDA_VISIBLE_DEVICES: '0,1' }, 'cpu')).toThrow(
      'LOCAL_RANK: got "3"; expected an index into CUDA_VISIBLE_DEVICES=0,1 (0 to 1)',
    );
  });
});

describe('the batchlab command refuses bad environment and input paths with exit code 2', () => {
  it('a misspelt variable, naming it and the variable meant', async () => {
    const result = await runCli(['local', '--steps', '1'], { BATCHLAB_GLOBAL_BATCHSIZE: '256' }, 30_000);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      'BATCHLAB_GLOBAL_BATCHSIZE is not a batchlab variable; did you mean BATCHLAB_GLOBAL_BATCH?',
    );
    expect(result.stdout).toBe('');
  });

  it('a bad value, naming the variable, the option, the value and what is accepted', async () => {
    const result = await runCli(['local', '--steps', '1'], { BATCHLAB_GLOBAL_BATCH: 'abc' }, 30_000);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      'BATCHLAB_GLOBAL_BATCH (--global-batch): got "abc"; expected an integer from 1 to 1000000',
    );
  });

  it('a --data-dir that does not exist or is a file, before any data loads', async () => {
    const missing = await runCli(['local', '--data-dir', '/nonexistent/fashion'], {}, 30_000);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(
      '--data-dir: got "/nonexistent/fashion"; expected a readable directory (not found)',
    );
    const file = await runCli(
      ['worker', '--connect', 'ws://127.0.0.1:1', '--data-dir', `${ROOT}package.json`],
      {},
      30_000,
    );
    expect(file.code).toBe(2);
    expect(file.stderr).toContain(
      `--data-dir: got "${ROOT}package.json"; expected a readable directory (not a directory)`,
    );
    expect(file.stderr).not.toMatch(/connect|backend/);
  });

  it('a missing --tls-cert, before the dataset loads', async () => {
    const result = await runCli(
      [
        'coordinator',
        '--insecure',
        '--port',
        '0',
        '--tls-cert',
        '/nonexistent/cert.pem',
        '--tls-key',
        `${ROOT}package.json`,
      ],
      {},
      30_000,
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--tls-cert: got "/nonexistent/cert.pem"; expected a readable file (not found)');
    // prepare-run logs the dataset once it has loaded; nothing got that far.
    expect(result.stderr).not.toMatch(/dataset|listening/);
  });

  it('a --checkpoint-dir whose parent is a file, before the dataset loads', async () => {
    const result = await runCli(
      ['coordinator', '--insecure', '--port', '0', '--checkpoint-dir', `${ROOT}package.json/checkpoints`],
      {},
      30_000,
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /--checkpoint-dir: got ".*package\.json\/checkpoints"; expected a directory path it can write \(.*package\.json is a file\)/,
    );
    expect(result.stderr).not.toMatch(/dataset|listening/);
  });

  it('a missing --ca or peer key of a worker', async () => {
    const base = ['worker', '--connect', 'wss://127.0.0.1:1', '--metrics-port', 'off'];
    const ca = await runCli([...base, '--ca', '/nonexistent/ca.pem'], {}, 30_000);
    expect(ca.code).toBe(2);
    expect(ca.stderr).toContain('--ca: got "/nonexistent/ca.pem"; expected a readable file (not found)');
    const peer = await runCli([...base, '--peer-tls-cert', `${ROOT}package.json`, '--peer-tls-key', ROOT], {}, 30_000);
    expect(peer.code).toBe(2);
    expect(peer.stderr).toContain(`--peer-tls-key: got "${ROOT}"; expected a readable file (it is a directory)`);
  });
});
