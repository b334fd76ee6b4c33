// Linux network namespaces for multi-host tests. A lab is a private bridge namespace plus one
// namespace per "host", each joined to the bridge by a veth pair and given a private address.
// Nothing is created in the root namespace, so no lab traffic can reach any other address.
// Everything is named `bltest-<pid>-…`; leftovers of dead test processes are removed first.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { CLI, cleanEnv } from './cli.js';

const execFileAsync = promisify(execFile);

/** Every namespace a test creates starts with this, then the test process's pid and a dash. */
export const NETNS_PREFIX = 'bltest-';

function firstLine(error: unknown): string {
  const e = error as { stderr?: Buffer | string; message?: string };
  const text = (e.stderr ? e.stderr.toString() : '') || e.message || String(error);
  return text.trim().split('\n')[0]!;
}

/** Runs `ip …` or `tc …` and returns its stdout; the error names the command and its stderr. */
export async function sh(command: 'ip' | 'tc', args: string[]): Promise<string> {
  try {
    return (await execFileAsync(command, args)).stdout;
  } catch (error) {
    throw new Error(`${command} ${args.join(' ')}: ${firstLine(error)}`, { cause: error });
  }
}

function shSync(command: 'ip' | 'tc', args: string[]): string {
  return execFileSync(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/**
 * Why this machine cannot run a namespace lab, or null when it can. Probes, in a throwaway
 * namespace, every feature a lab uses: `ip netns add/exec`, a bridge, a veth pair, `tc tbf`.
 */
export function netnsUnavailableReason(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const probe = `${NETNS_PREFIX}${process.pid}-probe`;
  const steps: [what: string, command: 'ip' | 'tc', args: string[]][] = [
    ['`ip netns add`', 'ip', ['netns', 'add', probe]],
    ['`ip netns exec`', 'ip', ['netns', 'exec', probe, 'true']],
    ['creating a bridge', 'ip', ['-n', probe, 'link', 'add', 'name', 'br0', 'type', 'bridge']],
    ['creating a veth pair', 'ip', ['-n', probe, 'link', 'add', 'name', 'va', 'type', 'veth', 'peer', 'name', 'vb']],
    [
      '`tc qdisc add … tbf`',
      'tc',
      ['-n', probe, 'qdisc', 'add', 'dev', 'va', 'root', 'tbf', 'rate', '20mbit', 'burst', '32kbit', 'latency', '50ms'],
    ],
  ];
  try {
    for (const [what, command, args] of steps) {
      try {
        shSync(command, args);
      } catch (error) {
        return `${what} failed: ${firstLine(error)}`;
      }
    }
    return null;
  } finally {
    try {
      shSync('ip', ['netns', 'del', probe]);
    } catch {
      // never created
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills what still runs inside namespace `ns` (only test namespaces reach here) and deletes it. */
function deleteNamespace(ns: string): void {
  try {
    for (const pid of shSync('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  } catch {
    // no such namespace or no pids
  }
  try {
    shSync('ip', ['netns', 'del', ns]);
  } catch {
    // already gone
  }
}

/** Deletes `bltest-<pid>-…` namespaces whose test process is gone; returns their names. */
export function removeLeftoverNamespaces(): string[] {
  let listing: string;
  try {
    listing = shSync('ip', ['netns', 'list']);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of listing.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '')) {
    const m = new RegExp(`^${NETNS_PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    const owner = Number(m[1]);
    if (owner !== process.pid && isAlive(owner)) continue; // another test run, still going
    deleteNamespace(name);
    removed.push(name);
  }
  return removed;
}

/** A line of a child's output and when the test saw it (performance.now(), ms). */
export interface TimedLine {
  atMs: number;
  text: string;
}

/** Collects a stream's lines with their arrival times, and waits for patterns. */
export class LineLog {
  readonly lines: TimedLine[] = [];
  private partial = '';
  private readonly waiters = new Set<(line: TimedLine) => void>();

  constructor(stream: Readable) {
    stream.on('data', (chunk: Buffer) => {
      const atMs = performance.now();
      const parts = (this.partial + chunk.toString()).split('\n');
      this.partial = parts.pop()!;
      for (const text of parts) {
        const line = { atMs, text };
        this.lines.push(line);
        for (const waiter of [...this.waiters]) waiter(line);
      }
    });
  }

  text(): string {
    return this.lines.map((l) => l.text).join('\n') + (this.partial ? `\n${this.partial}` : '');
  }

  /** The first line (already seen or still to come) that matches `pattern`. */
  waitFor(
    pattern: RegExp,
    timeoutMs: number,
    what = String(pattern),
  ): Promise<TimedLine & { match: RegExpMatchArray }> {
    for (const line of this.lines) {
      const match = line.text.match(pattern);
      if (match) return Promise.resolve({ ...line, match });
    }
    return new Promise((resolve, reject) => {
      const waiter = (line: TimedLine): void => {
        const match = line.text.match(pattern);
        if (!match) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve({ ...line, match });
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no ${what} within ${timeoutMs} ms; output so far:\n${this.text().slice(-3000)}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }
}

/** A child process with its output lines and exit code. */
export interface LabProcess {
  child: ChildProcess;
  stdout: LineLog;
  stderr: LineLog;
  exit: Promise<number | null>;
}

/** Wraps a spawned child: timestamps its lines and resolves its exit code. */
export function track(child: ChildProcess): LabProcess {
  return {
    child,
    stdout: new LineLog(child.stdout!),
    stderr: new LineLog(child.stderr!),
    exit: new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null)))),
  };
}

/** A host of the lab: its namespace and its address on the lab's bridge. */
export interface LabHost {
  name: string;
  ns: string;
  address: string;
  /** The veth end on the bridge (in the bridge namespace); the host's own end is `eth0`. */
  bridgePort: string;
}

/** Resolves with `p`'s exit code, or 'timeout' after `ms`. */
export async function exitWithin(p: LabProcess, ms: number): Promise<number | null | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([p.exit, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A small TCP proxy that delays every chunk by `delayMs` in each direction, in order: latency
 * for a kernel without netem. Runs as `node -e` inside a namespace.
 */
const DELAY_PROXY_SOURCE = `
const net = require('node:net');
const [listenHost, listenPort, targetHost, targetPort, delayMs] = process.argv.slice(1);
const delay = Number(delayMs);
const later = (f) => setTimeout(f, delay);
net.createServer((client) => {
  const upstream = net.connect({ host: targetHost, port: Number(targetPort) });
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  for (const [from, to] of [[client, upstream], [upstream, client]]) {
    from.on('data', (chunk) => later(() => to.write(chunk)));
    from.on('end', () => later(() => to.end()));
    from.on('error', () => later(() => to.destroy()));
  }
}).listen(Number(listenPort), listenHost, () => console.log('delay proxy listening on ' + listenHost + ':' + listenPort));
`;

export class NetnsLab {
  readonly prefix = `${NETNS_PREFIX}${process.pid}-`;
  readonly bridgeNs = `${this.prefix}br`;
  readonly hosts = new Map<string, LabHost>();
  private readonly namespaces: string[] = [];
  private readonly processes: LabProcess[] = [];

  /** `subnet` is the first three octets of a private /24 used only inside the lab. */
  constructor(private readonly subnet = '10.213.0') {}

  private async addNamespace(ns: string): Promise<void> {
    await sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  /** Creates the bridge namespace and one namespace per host (`hostId` is the address's last octet). */
  async create(hosts: { name: string; hostId: number }[]): Promise<void> {
    await this.addNamespace(this.bridgeNs);
    await sh('ip', ['-n', this.bridgeNs, 'link', 'add', 'name', 'br0', 'type', 'bridge']);
    await sh('ip', ['-n', this.bridgeNs, 'link', 'set', 'br0', 'up']);
    for (const { name, hostId } of hosts) {
      const ns = `${this.prefix}${name}`;
      const bridgePort = `p-${name}`;
      const address = `${this.subnet}.${hostId}`;
      await this.addNamespace(ns);
      await sh('ip', [
        '-n',
        this.bridgeNs,
        'link',
        'add',
        'name',
        bridgePort,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        ns,
      ]);
      await sh('ip', ['-n', this.bridgeNs, 'link', 'set', bridgePort, 'master', 'br0']);
      await sh('ip', ['-n', this.bridgeNs, 'link', 'set', bridgePort, 'up']);
      await sh('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      await sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      this.hosts.set(name, { name, ns, address, bridgePort });
    }
  }

  host(name: string): LabHost {
    const host = this.hosts.get(name);
    if (!host) throw new Error(`no lab host ${name}`);
    return host;
  }

  /** `tc tbf` on both directions of `host`'s link (its eth0 and its bridge port). */
  async limitBandwidth(host: LabHost, rate = '20mbit', burst = '32kbit', latency = '50ms'): Promise<string> {
    const tbf = ['root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency];
    await sh('tc', ['-n', host.ns, 'qdisc', 'add', 'dev', 'eth0', ...tbf]);
    await sh('tc', ['-n', this.bridgeNs, 'qdisc', 'add', 'dev', host.bridgePort, ...tbf]);
    return (await sh('tc', ['-n', host.ns, 'qdisc', 'show', 'dev', 'eth0'])).trim();
  }

  /** Takes `host`'s own end of its link down: a partition, silent to both sides. */
  async linkDown(host: LabHost): Promise<void> {
    await sh('ip', ['-n', host.ns, 'link', 'set', 'eth0', 'down']);
  }

  /** Runs `command…` inside `host`'s namespace (`ip netns exec` execs it: the child's pid is the command's). */
  spawn(host: LabHost, command: string[], env: Record<string, string> = {}): LabProcess {
    const p = track(
      spawn('ip', ['netns', 'exec', host.ns, ...command], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    this.processes.push(p);
    return p;
  }

  /** `batchlab args…` inside `host`'s namespace. */
  batchlab(host: LabHost, args: string[], env: Record<string, string> = {}): LabProcess {
    return this.spawn(host, [process.execPath, CLI, ...args], env);
  }

  /** Starts a delaying TCP proxy in `host`'s namespace; resolves once it listens. */
  async delayProxy(
    host: LabHost,
    listen: string,
    listenPort: number,
    target: string,
    targetPort: number,
    delayMs: number,
  ): Promise<LabProcess> {
    const p = this.spawn(host, [
      process.execPath,
      '-e',
      DELAY_PROXY_SOURCE,
      listen,
      String(listenPort),
      target,
      String(targetPort),
      String(delayMs),
    ]);
    await p.stdout.waitFor(/delay proxy listening/, 15_000, 'delay proxy start');
    return p;
  }

  /** Kills every process the lab started, then deletes every namespace (and so every link). */
  async destroy(): Promise<void> {
    for (const p of this.processes)
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all(this.processes.map((p) => exitWithin(p, 5000)));
    this.destroySync();
  }

  /** The synchronous part of destroy, also safe from a process 'exit' handler. */
  destroySync(): void {
    for (const ns of this.namespaces.splice(0).reverse()) deleteNamespace(ns);
  }
}
