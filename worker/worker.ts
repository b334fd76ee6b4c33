// The worker process: connects, handshakes, loads the same dataset as the coordinator, then
// computes each micro-batch it is handed and replies with its gradient sum and statistics.

import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { createAugmenter, type Augmenter } from '../shared/augment.js';
import { authorizationHeader } from '../shared/auth.js';
import { selectBackend, type BackendChoice, type BackendName } from '../shared/backend.js';
import { startMetricsServer, type MetricsServer } from '../shared/metrics-server.js';
import { createRegistry, defineWorkerMetrics, type WorkerMetrics } from '../shared/metrics.js';
import { decodeFrame, encodeFrame, FrameEncoder, type BodyFrame, type PooledFrame } from '../shared/codec.js';
import { useZeroMask, zeroMask, type ClientMask } from '../shared/transport.js';
import { gatherSamples, type Dataset, type DatasetName } from '../shared/data/dataset.js';
import { firstDifferingFile } from '../shared/data/fingerprint.js';
import { describeDataset, loadDataset } from '../shared/data/index.js';
import {
  BatchlabError,
  closeCodeFor,
  describeError,
  exitCodeFor,
  exitCodeForCode,
  ProtocolError,
} from '../shared/errors.js';
import { modelFromTopology } from '../shared/models/index.js';
import {
  createOptimizer,
  DEFAULT_OPTIMIZER_CONFIG,
  OPTIMIZER_NAMES,
  type Optimizer,
  type OptimizerName,
} from '../shared/optimizers/index.js';
import { assertLayout, countParams, writeWeights } from '../shared/param-layout.js';
import {
  PROTOCOL_VERSION,
  type CommitMessage,
  type Message,
  type WelcomeMessage,
  type WorkMessage,
} from '../shared/protocol.js';
import { EpochSampler } from '../shared/sampler.js';
import { packState, unpackState } from '../shared/state-body.js';
import { batchNormLayersOf } from '../shared/batch-norm.js';
import { computeMicroBatchYielding, type GradientModel } from './gradient.js';
import {
  isAllocationFailure,
  measured,
  needs,
  probeBudget,
  probeMaxChunk,
  releaseAfterFailure,
  startMemoryMeter,
  wasmHeapBytes,
} from './memory.js';
import { PeerLinks } from './peer-links.js';
import { ShardExchange } from './shard-exchange.js';

/** A worker's validated configuration (what `batchlab worker` options parse into). */
export interface WorkerConfig {
  connect: string;
  token: string | null;
  backend: BackendName;
  dataDir?: string;
  /** Most samples computed at once; 'auto': probed after each welcome (worker/memory.ts). */
  maxChunk: number | 'auto';
  /** Bytes of live tensors this worker allows itself (--memory-limit); null: no budget of its own. */
  memoryLimit?: number | null;
  name?: string;
  connectTimeoutMs: number;
  /** null: no /metrics endpoint; 0: any free port. */
  metricsPort: number | null;
  metricsHost: string;
  /** PEM file of certificates to trust for wss://. */
  ca?: string;
  /** Client masking key: all-zero ('zero'), random, or zero only on loopback/wss ('auto'). */
  clientMask: ClientMask;
  /** Most micro-batches per step this worker takes (reported in hello); null: no limit. */
  maxMicroBatches: number | null;
  /** Port of the peer server for the sharded reducer (0: any free port). */
  peerPort: number;
  /** Address the peer server listens on; default: the local address of the coordinator connection. */
  peerHost?: string;
  /** PEM certificate and key of the peer server (peers then use wss://). */
  peerTlsCert?: string;
  peerTlsKey?: string;
  /** Address peers reach this worker at; default: the peer host. */
  advertiseAddress?: string;
  /** >= 1: sleep (factor − 1) × compute time after each micro-batch, to test load balancing. */
  debugSlowdown: number;
}

export interface WorkerOptions extends WorkerConfig {
  log: (line: string) => void;
}

/** State built from the welcome: what a worker needs to compute micro-batches. */
interface RunState {
  welcome: WelcomeMessage;
  dataset: Dataset;
  sampler: EpochSampler;
  /** Transforms gathered training samples (`--augment`); null: none. */
  augmenter: Augmenter | null;
  gm: GradientModel;
  paramCount: number;
  /** Most samples computed at once: --max-chunk, or what auto probed for this run. */
  maxChunk: number;
  weightsStep: number;
  /** With the sharded reducer: this worker's copy of the weights, its optimizer and its exchange. */
  sharded: ShardedState | null;
}

interface ShardedState {
  weights: Float32Array;
  optimizer: Optimizer;
  exchange: ShardExchange;
}

/** How a connection ended. */
type Ending =
  | { kind: 'shutdown'; code?: string }
  | { kind: 'stopped' }
  | { kind: 'refused'; error: unknown }
  | { kind: 'lost'; why: string };

/**
 * Runs until the coordinator says shutdown (exit 0 when the run completed; when it failed or was
 * interrupted, the exit status of the code it sent), a signal stops the worker (exit 0), or the
 * coordinator cannot be reached for `connectTimeoutMs` (exit 5). A lost connection is retried
 * with backoff and jitter, so workers ride out a coordinator restart. A refusal (bad token,
 * version, dataset) is final (exit 3).
 */
export async function runWorker(options: WorkerOptions): Promise<number> {
  const { log } = options;
  const choice = await selectBackend(options.backend);
  log(
    `backend ${choice.backend} (${choice.device})${choice.skipped.length ? `; skipped ${choice.skipped.join('; ')}` : ''}`,
  );
  const registry = createRegistry('worker');
  const metrics = defineWorkerMetrics(registry, { ...choice, wasmHeapBytes });
  startMemoryMeter(options.memoryLimit ?? null);
  if (options.maxChunk !== 'auto') metrics.maxChunk.set(options.maxChunk);
  const session: Session = {
    state: null,
    datasets: new Map(),
    stopping: false,
    socket: null,
    peers: null,
    link: { state: 'connecting', sinceMs: performance.now() },
  };
  let metricsServer: MetricsServer | null = null;
  if (options.metricsPort !== null) {
    metricsServer = await startMetricsServer(registry, options.metricsPort, options.metricsHost, {
      details: () => ({ role: 'worker', connection: session.link.state, step: session.state?.weightsStep ?? null }),
      live: [() => connectionProblem(session.link, options.connectTimeoutMs)],
      ready: () => (session.link.state === 'ready' ? null : `not ready: ${session.link.state}`),
    });
    log(`metrics at ${metricsServer.url}`);
  }
  const stop = (signal: NodeJS.Signals): void => {
    log(`${signal}: abandoning current work and leaving (the coordinator re-issues it)`);
    session.stopping = true;
    session.socket?.close(1001, 'worker stopping');
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    for (;;) {
      const socket = await openSocket(options, () => session.stopping);
      if (!socket) return 0;
      session.socket = socket;
      setLink(session, 'connected');
      log(`connected to ${options.connect}`);
      session.peers ??= await startPeerLinks(socket, options, metrics);
      const ending = await serve(socket, options, choice, metrics, metricsServer?.port, session);
      session.socket = null;
      setLink(session, 'reconnecting');
      if (ending.kind === 'shutdown' && ending.code !== undefined) return exitCodeForCode(ending.code);
      if (ending.kind === 'shutdown' || ending.kind === 'stopped') return 0;
      if (ending.kind === 'refused') return exitCodeFor(ending.error) || 3;
      log(`connection lost (${ending.why}); reconnecting for up to ${Math.round(options.connectTimeoutMs / 1000)} s`);
    }
  } catch (error) {
    log(describeError(error));
    return exitCodeFor(error);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await session.peers?.links.close();
    await metricsServer?.close();
  }
}

/** The coordinator connection as /healthz and /readyz see it, and since when (performance.now()). */
export interface Link {
  state: 'connecting' | 'connected' | 'ready' | 'reconnecting';
  sinceMs: number;
}

/** Time a connection may stay down beyond --connect-timeout (after which the worker exits) before /healthz fails. */
export const RECONNECT_MARGIN_MS = 30_000;

function setLink(session: Session, state: Link['state']): void {
  if (session.link.state !== state) session.link = { state, sinceMs: performance.now() };
}

/**
 * null while connected, or while (re)connecting within --connect-timeout (plus a margin): a worker
 * gives up and exits after that time, so one still without a connection is not re-establishing it.
 */
export function connectionProblem(link: Link, connectTimeoutMs: number, nowMs = performance.now()): string | null {
  if (link.state === 'connected' || link.state === 'ready') return null;
  const downMs = nowMs - link.sinceMs;
  if (downMs <= connectTimeoutMs + RECONNECT_MARGIN_MS) return null;
  return (
    `no coordinator connection for ${(downMs / 1000).toFixed(1)} s (${link.state}; ` +
    `limit --connect-timeout + ${RECONNECT_MARGIN_MS / 1000} s = ${(connectTimeoutMs + RECONNECT_MARGIN_MS) / 1000} s)`
  );
}

/** What outlives one connection: the run state and loaded datasets (reused after a reconnect). */
interface Session {
  /** The coordinator connection's state. */
  link: Link;
  state: RunState | null;
  datasets: Map<string, Dataset>;
  stopping: boolean;
  socket: WebSocket | null;
  /** The peer server and links (sharded reducer), started with the first connection; and the address peers use. */
  peers: { links: PeerLinks; address: string } | null;
}

/** Starts the peer server on --peer-host (default: the address this worker reaches the coordinator from). */
async function startPeerLinks(
  socket: WebSocket,
  options: WorkerOptions,
  metrics: WorkerMetrics,
): Promise<{ links: PeerLinks; address: string }> {
  const local = (
    (socket as unknown as { _socket?: { localAddress?: string } })._socket?.localAddress ?? '127.0.0.1'
  ).replace(/^::ffff:/, '');
  const host = options.peerHost ?? local;
  const links = await PeerLinks.listen(host, options.peerPort ?? 0, {
    token: options.token,
    ...(options.peerTlsCert && options.peerTlsKey
      ? { tls: { cert: options.peerTlsCert, key: options.peerTlsKey } }
      : {}),
    ...(options.ca ? { ca: options.ca } : {}),
    clientMask: options.clientMask ?? 'auto',
    onReject: (reason) => metrics.rejected.inc({ reason }),
    onBytes: (peer, direction, bytes) => metrics.peerBytes.inc({ peer: String(peer), direction }, bytes),
    onSendSeconds: (peer, seconds) => metrics.peerSendSeconds.inc({ peer: String(peer) }, seconds),
    log: options.log,
  });
  // A wildcard listen address is no address to give peers: then the one the coordinator sees is.
  const advertised = options.advertiseAddress ?? (host === '0.0.0.0' || host === '::' ? local : host);
  const address = links.addressFor(advertised);
  options.log(`peer server on ${host}:${links.port}${options.peerTlsCert ? ' (TLS)' : ''}, advertised as ${address}`);
  return { links, address };
}

/** One connection's life: handshake, then work frames in order until it ends. */
async function serve(
  socket: WebSocket,
  options: WorkerOptions,
  choice: BackendChoice,
  metrics: WorkerMetrics,
  metricsPort: number | undefined,
  session: Session,
): Promise<Ending> {
  const { log } = options;
  let ending: Ending | null = null;
  // Frames are handled strictly in arrival order, one at a time.
  let queue = Promise.resolve();
  // The coordinator pings every heartbeat interval; silence for 2.5 intervals means it is gone.
  let watchdog: NodeJS.Timeout | null = null;
  let heartbeatMs = 0;
  const feedWatchdog = (): void => {
    if (!heartbeatMs) return;
    if (watchdog) clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      ending ??= { kind: 'lost', why: `no heartbeat for ${((2.5 * heartbeatMs) / 1000).toFixed(1)} s` };
      socket.terminate();
    }, 2.5 * heartbeatMs);
  };

  // Gradient frames are encoded into reused buffers, in the number format the welcome names.
  let encoder = new FrameEncoder('f32');
  /** Sends one frame; resolves once ws has passed it to the kernel (or the socket is gone). */
  const send = (message: Message, body: Float32Array | null = null): Promise<void> =>
    sendFrame(encoder.encode(message, body));
  /** Sends an encoded frame and releases it once written; released unsent if the socket is gone. */
  const sendFrame = (frame: PooledFrame): Promise<void> => {
    if (socket.readyState !== WebSocket.OPEN) {
      frame.release();
      return Promise.resolve();
    }
    metrics.wireBytes.inc({ direction: 'out' }, frame.bytes.length);
    return new Promise((resolve) => {
      socket.send(frame.bytes, { binary: true }, () => {
        frame.release();
        resolve();
      });
    });
  };

  const handle = async (data: Buffer): Promise<void> => {
    const { message, body } = decodeFrame(data);
    switch (message.type) {
      case 'welcome':
        // Loading the data and model can block the event loop for seconds, and the coordinator
        // does not expect pongs before `ready`: the watchdog (armed by pings once heartbeatMs is
        // set) starts only once the worker can listen again.
        session.state = await prepare(message, options, session.datasets);
        session.state.maxChunk = await chooseMaxChunk(session.state, options, choice.backend);
        metrics.maxChunk.set(session.state.maxChunk);
        if (message.sharded) session.state.sharded = shardedState(session.state, message, session, send, metrics);
        heartbeatMs = message.heartbeatIntervalMs;
        feedWatchdog();
        encoder = new FrameEncoder(message.wireDtype ?? 'f32');
        void send({
          type: 'ready',
          datasetFingerprint: session.state.dataset.fingerprint,
          ...(options.maxChunk === 'auto' ? { maxChunk: session.state.maxChunk } : {}),
        });
        setLink(session, 'ready');
        return;
      case 'work':
        if (!session.state) throw new ProtocolError('BAD_MESSAGE', 'work before welcome');
        await computeWork(
          session.state,
          message,
          body,
          options,
          { bodyFrame: (length) => encoder.bodyFrame(length), send: sendFrame },
          metrics,
          () => socket.readyState !== WebSocket.OPEN,
          choice.backend,
        );
        return;
      case 'commit':
        commit(requireSharded(session.state), session.state!, message);
        return;
      case 'probe': {
        const peers = session.peers;
        if (!peers) throw new ProtocolError('BAD_MESSAGE', 'probe, but this worker has no peer server');
        const unreachable = await peers.links.probe(message.peers, message.timeoutMs);
        for (const u of unreachable) log(`cannot reach peer worker ${u.workerId}: ${u.why}`);
        void send({ type: 'probe-result', unreachable });
        return;
      }
      case 'state-request': {
        const state = session.state;
        const sharded = requireSharded(state);
        const { body: stateBody, layout } = packState(sharded.weights, sharded.optimizer.state());
        void send({ type: 'state', step: state!.weightsStep, state: layout }, stateBody);
        return;
      }
      case 'shutdown':
        ending = message.code === undefined ? { kind: 'shutdown' } : { kind: 'shutdown', code: message.code };
        log(`coordinator says: ${message.code === undefined ? '' : `[${message.code}] `}${message.reason}`);
        socket.close(1000, 'bye');
        return;
      case 'error':
        log(`coordinator reported [${message.code}] ${message.message}`);
        return;
      case 'hello':
      case 'ready':
      case 'gradient':
      case 'reduced':
      case 'state':
      case 'probe-result':
      case 'peer-hello':
      case 'slice':
      case 'shard':
        throw new ProtocolError('BAD_MESSAGE', `unexpected ${message.type} from the coordinator`);
    }
  };

  return await new Promise<Ending>((resolve) => {
    socket.on('message', (data: Buffer) => {
      metrics.wireBytes.inc({ direction: 'in' }, data.length);
      queue = queue
        .then(() => handle(data))
        .catch((error) => {
          log(describeError(error));
          const code = error instanceof BatchlabError ? error.code : 'BAD_MESSAGE';
          ending ??= { kind: 'refused', error };
          void send({ type: 'error', code, message: String((error as Error).message ?? error) });
          socket.close(closeCodeFor(code), code);
        });
    });
    socket.on('ping', feedWatchdog);
    socket.on('close', (code, reason) => {
      if (watchdog) clearTimeout(watchdog);
      if (session.stopping) return resolve({ kind: 'stopped' });
      // The coordinator closes with a 44xx code when it refuses this worker: that is final.
      if (!ending && code >= 4400 && code < 4500) {
        const why = `coordinator closed the connection: ${reason.toString() || code}`;
        const error =
          code === closeCodeFor('EVICTED')
            ? new BatchlabError('EVICTED', why)
            : code === closeCodeFor('BAD_OPTION')
              ? new BatchlabError('BAD_OPTION', why)
              : new ProtocolError('BAD_MESSAGE', why);
        // Its `error` frame may still wait behind the work in progress: say here why this worker stops.
        log(describeError(error));
        ending = { kind: 'refused', error };
      }
      resolve(
        ending ?? { kind: 'lost', why: `closed with code ${code}${reason.length ? `, ${reason.toString()}` : ''}` },
      );
    });
    socket.on('error', (error) => log(`socket error: ${error.message}`));
    void send({
      type: 'hello',
      protocolVersion: PROTOCOL_VERSION,
      workerName: options.name ?? `${hostname()}:${process.pid}`,
      backend: choice.backend,
      device: choice.device,
      maxChunk: options.maxChunk === 'auto' ? 0 : options.maxChunk,
      ...(metricsPort ? { metricsPort } : {}),
      ...(options.maxMicroBatches ? { maxMicroBatches: options.maxMicroBatches } : {}),
      ...(session.peers ? { peerAddress: session.peers.address } : {}),
    });
  });
}

/**
 * Opens the WebSocket, retrying with exponential backoff and jitter until `connectTimeoutMs`.
 * A refusal at the upgrade (401) is final. Returns null when the worker is told to stop meanwhile.
 */
async function openSocket(options: WorkerOptions, isStopping: () => boolean): Promise<WebSocket | null> {
  const deadline = Date.now() + options.connectTimeoutMs;
  const ca = options.ca ? await readFile(options.ca) : undefined;
  let delayMs = 100;
  for (;;) {
    if (isStopping()) return null;
    try {
      return await new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(options.connect, {
          perMessageDeflate: false,
          maxPayload: 1024 * 1024 * 1024,
          headers: options.token ? { authorization: authorizationHeader(options.token) } : {},
          ...(ca ? { ca } : {}),
          // The all-zero key lets ws skip masking on both ends (see shared/transport.ts for when it is safe).
          ...(useZeroMask(options.clientMask ?? 'auto', options.connect) ? { generateMask: zeroMask } : {}),
        });
        socket.once('open', () => {
          socket.removeAllListeners('error');
          resolve(socket);
        });
        socket.once('unexpected-response', (_req, res) => {
          reject(
            new BatchlabError(
              'AUTH_FAILED',
              `coordinator refused the connection: HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim() +
                (res.statusCode === 401 ? ' (check --token / BATCHLAB_TOKEN)' : ''),
            ),
          );
          socket.terminate();
        });
        socket.once('error', reject);
      });
    } catch (error) {
      if (error instanceof BatchlabError) throw error;
      if (Date.now() + delayMs > deadline) {
        throw new BatchlabError(
          'CONNECT_FAILED',
          `could not reach ${options.connect} within ${Math.round(options.connectTimeoutMs / 1000)} s: ${(error as Error).message}`,
        );
      }
      await new Promise((r) => setTimeout(r, delayMs * (0.5 + Math.random())));
      delayMs = Math.min(2000, delayMs * 2);
    }
  }
}

/** Loads the dataset and builds the model the welcome describes; checks both match. */
async function prepare(
  welcome: WelcomeMessage,
  options: WorkerOptions,
  datasets: Map<string, Dataset>,
): Promise<RunState> {
  if (welcome.protocolVersion !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      'VERSION_MISMATCH',
      `coordinator speaks protocol ${welcome.protocolVersion}, this worker ${PROTOCOL_VERSION}`,
    );
  }
  // After a reconnect the same data is usually asked for again: keep it loaded.
  const key = JSON.stringify([welcome.dataset, welcome.seed]);
  let dataset = datasets.get(key);
  if (!dataset) {
    dataset = await loadDataset({
      name: welcome.dataset.name as DatasetName,
      dataDir: options.dataDir,
      seed: welcome.seed,
      syntheticTrain: welcome.dataset.syntheticTrain,
      syntheticTest: welcome.dataset.syntheticTest,
    });
    datasets.clear();
    datasets.set(key, dataset);
  }
  if (dataset.fingerprint !== welcome.dataset.fingerprint) {
    throw new ProtocolError('DATASET_MISMATCH', describeMismatch(dataset, welcome.dataset));
  }
  const model = await modelFromTopology(welcome.modelTopology);
  assertLayout(model, welcome.params);
  options.log(`worker ${welcome.workerId} of run ${welcome.runId}: ${describeDataset(dataset)}`);
  const paramCount = countParams(welcome.params);
  return {
    welcome,
    dataset,
    sampler: new EpochSampler(dataset.train.count, welcome.seed),
    augmenter: createAugmenter(welcome.augment ?? 'none', dataset.sampleShape, dataset.standardization, welcome.seed),
    gm: { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses },
    paramCount,
    maxChunk: options.maxChunk === 'auto' ? 1 : options.maxChunk,
    weightsStep: -1,
    sharded: null,
  };
}

/** How this worker's memory is bounded, for its log lines and errors. */
function describeMemory(options: Pick<WorkerOptions, 'memoryLimit'>, budget: number | null): string {
  if (options.memoryLimit) return `--memory-limit ${options.memoryLimit} bytes`;
  if (budget !== null) return `a budget of ${budget} bytes of tensors (the backend's default; --memory-limit sets it)`;
  return 'its device memory';
}

/**
 * --max-chunk as given, or for auto the largest chunk that fits (probed on the run's model and
 * first samples, up to the largest micro-batch the welcome announces), logged in one line.
 */
async function chooseMaxChunk(state: RunState, options: WorkerOptions, backend: string): Promise<number> {
  if (options.maxChunk !== 'auto') return options.maxChunk;
  const ceiling = Math.min(state.welcome.microBatch ?? AUTO_CEILING, state.dataset.train.count);
  const indices = Array.from({ length: ceiling }, (_, i) => i);
  const { images, labels } = gatherSamples(state.dataset.train, state.dataset.sampleShape, indices);
  const budget = probeBudget(backend, options.memoryLimit ?? null);
  const memory = describeMemory(options, budget);
  const probe = await probeMaxChunk(state.gm, images, labels, ceiling, budget, {
    backend,
    memory,
    emulated: (options.memoryLimit ?? null) !== null,
  });
  const tried = probe.tried
    .map((t) => `${t.chunk}: ${t.peakTensorBytes === null ? 'failed' : `${t.peakTensorBytes} B`}`)
    .join(', ');
  options.log(`max chunk auto: ${probe.maxChunk} samples (${probe.stoppedBy}; peak tensor bytes ${tried}; ${memory})`);
  return probe.maxChunk;
}

/** How far auto probes when the coordinator does not announce its micro-batch. */
const AUTO_CEILING = 1024;

/** Why this worker's data is not the coordinator's, naming the first file that differs. */
function describeMismatch(dataset: Dataset, theirs: WelcomeMessage['dataset']): string {
  const fix = 'give both the same dataset files (--data-dir)';
  const differing = theirs.files ? firstDifferingFile(dataset.files, theirs.files) : null;
  if (differing === null) {
    return `loaded ${describeDataset(dataset)} (fingerprint ${dataset.fingerprint}) but the coordinator has ${theirs.trainCount} train samples with fingerprint ${theirs.fingerprint}: ${fix}`;
  }
  const ours = differing.ours;
  const where = ours?.path ?? differing.name;
  const what =
    ours === null
      ? `this worker's ${dataset.name} data has no ${differing.name}`
      : differing.theirs === null
        ? `the coordinator's data has no ${differing.name} (this worker read ${where})`
        : `this worker's ${where} has SHA-256 ${ours.sha256}, the coordinator's ${differing.name} ${differing.theirs}`;
  return `dataset file ${differing.name} differs from the coordinator's: ${what}; ${fix}`;
}

/** The optimizer and exchange of a sharded run; peer frames go to the exchange from now on. */
function shardedState(
  state: RunState,
  welcome: WelcomeMessage,
  session: Session,
  send: (message: Message) => Promise<void>,
  metrics: WorkerMetrics,
): ShardedState {
  const spec = welcome.sharded!;
  if (!OPTIMIZER_NAMES.includes(spec.optimizer as OptimizerName))
    throw new ProtocolError('BAD_MESSAGE', `welcome.sharded.optimizer: unknown optimizer ${spec.optimizer}`);
  const optimizer = createOptimizer(
    spec.optimizer as OptimizerName,
    { ...DEFAULT_OPTIMIZER_CONFIG, ...spec.optimizerConfig },
    welcome.params,
  );
  const peers = session.peers;
  if (!peers) throw new ProtocolError('BAD_MESSAGE', 'sharded run but this worker has no peer server');
  const exchange = new ShardExchange(state.paramCount, {
    sendToPeer: (peer, message, body) => peers.links.send(peer, message, body),
    sendToCoordinator: (message) => void send(message),
    refused: (problem) => metrics.rejected.inc({ reason: problem }),
  });
  peers.links.bind(welcome.runId, welcome.workerId, state.paramCount, (from, message, body) =>
    exchange.receive(from, message, body),
  );
  return { weights: new Float32Array(state.paramCount), optimizer, exchange };
}

function requireSharded(state: RunState | null): ShardedState {
  if (!state?.sharded) throw new ProtocolError('BAD_MESSAGE', 'sharded-reducer message in a run without it');
  return state.sharded;
}

/** Applies the step's update once every peer holds the mean gradient (the coordinator says so). */
function commit(sharded: ShardedState, state: RunState, message: CommitMessage): void {
  const { exchange } = sharded;
  const plan = exchange.current;
  if (!plan || !exchange.isComplete(message.step, message.attempt))
    throw new ProtocolError(
      'BAD_MESSAGE',
      `commit of step ${message.step} attempt ${message.attempt}, but this worker has not got that mean gradient`,
    );
  sharded.optimizer.apply(sharded.weights, exchange.mean, plan.lr);
  writeWeights(state.gm.model, sharded.weights);
  state.weightsStep = message.step + 1;
  exchange.committed();
}

/**
 * Computes every micro-batch of a work message in order and sends one reply per micro-batch,
 * yielding to the event loop in between so heartbeats are answered and replies leave early.
 * The next micro-batch's samples are gathered while the previous gradient is being written, and
 * a new gradient waits until the previous one has left (backpressure: one frame queued at a time).
 */
async function computeWork(
  state: RunState,
  work: WorkMessage,
  body: Float32Array | null,
  options: WorkerOptions,
  out: { bodyFrame(length: number): BodyFrame; send(frame: PooledFrame): Promise<void> },
  metrics: WorkerMetrics,
  isClosed: () => boolean,
  backend: string,
): Promise<void> {
  if (work.hasWeights) loadWeights(state, work, body);
  if (state.weightsStep !== work.weightsStep)
    throw new ProtocolError(
      'BAD_MESSAGE',
      `work for step ${work.step} needs weights of step ${work.weightsStep}, worker holds step ${state.weightsStep}`,
    );
  for (const spec of work.microBatches) {
    if (spec.end > work.globalBatchSize)
      throw new ProtocolError(
        'BAD_MESSAGE',
        `micro-batch ${spec.id} ends at ${spec.end}, past the global batch of ${work.globalBatchSize}`,
      );
  }
  const gatherFor = (index: number): { images: Float32Array; labels: Int32Array; gatherMs: number } => {
    const t0 = performance.now();
    const spec = work.microBatches[index]!;
    const { indices, epochs } = state.sampler.samplesFor(work.step, work.globalBatchSize, spec.start, spec.end);
    const samples = gatherSamples(state.dataset.train, state.dataset.sampleShape, indices);
    state.augmenter?.apply(samples.images, indices, epochs);
    return { ...samples, gatherMs: performance.now() - t0 };
  };
  const sharded = work.exchange ? requireSharded(state) : null;
  if (sharded && work.exchange) sharded.exchange.begin(work.step, work.exchange, state.welcome.workerId);
  const slowdown = options.debugSlowdown ?? 1;
  let inFlight: Promise<void> = Promise.resolve();
  let next = work.microBatches.length > 0 ? gatherFor(0) : null;
  for (let i = 0; i < work.microBatches.length; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    if (isClosed()) return;
    const spec = work.microBatches[i]!;
    const { images, labels, gatherMs } = next!;
    const t0 = performance.now();
    // The gradient is computed straight into its frame's body: no model-sized copy to send it. With
    // the sharded reducer it goes to the shard owners instead, and the coordinator gets the statistics.
    const frame = sharded ? bodilessFrame(sharded.exchange.takeBuffer()) : out.bodyFrame(state.paramCount);
    let result;
    let memory;
    try {
      ({ result, memory } = await measured(() =>
        computeMicroBatchYielding(state.gm, images, labels, state.maxChunk, frame.body),
      ));
    } catch (error) {
      frame.release();
      if (!isAllocationFailure(error)) throw error;
      releaseAfterFailure();
      throw await outOfMemory(error, backend, options, state, images, labels);
    }
    metrics.peakTensorBytes.set(memory.peakTensorBytes);
    let computeMs = gatherMs + performance.now() - t0;
    if (slowdown > 1) {
      // A slower device: the extra time is spent idle, as a worker waiting on a slow GPU would.
      await new Promise((resolve) => setTimeout(resolve, (slowdown - 1) * computeMs));
      computeMs *= slowdown;
    }
    metrics.microBatchesTotal.inc();
    metrics.microBatchSamplesTotal.inc(result.samples);
    metrics.microBatchCompute.observe(computeMs / 1000);
    metrics.step.set(work.step);
    if (result.gradSum !== frame.body) frame.body.set(result.gradSum);
    if (sharded) sharded.exchange.contribute(spec.id, frame.body);
    await inFlight;
    let sealed;
    try {
      sealed = frame.seal({
        type: 'gradient',
        step: work.step,
        microBatchId: spec.id,
        samples: result.samples,
        lossSum: result.lossSum,
        correct: result.correct,
        computeMs,
        sqNorm: result.sqNorm,
        memory,
        ...(result.batchStats ? { batchStats: result.batchStats } : {}),
      });
    } catch (error) {
      frame.release();
      throw error;
    }
    inFlight = out.send(sealed);
    // Prefetch: gather the next micro-batch's samples while this gradient is on its way.
    next = i + 1 < work.microBatches.length ? gatherFor(i + 1) : null;
  }
}

/**
 * A micro-batch's allocation failed: OUT_OF_MEMORY, saying what did not fit, in what, and what to
 * lower. A batch-norm model computes the whole micro-batch in one pass whatever --max-chunk says
 * (and a --max-chunk below --micro-batch is refused at hello), so only the micro-batch can shrink.
 */
export async function outOfMemory(
  error: unknown,
  backend: string,
  options: Pick<WorkerOptions, 'memoryLimit'>,
  state: Pick<RunState, 'maxChunk' | 'gm'>,
  images: Float32Array,
  labels: Int32Array,
): Promise<BatchlabError> {
  const onePass = batchNormLayersOf(state.gm.model).length > 0;
  const chunk = onePass ? labels.length : Math.min(state.maxChunk, labels.length);
  let what = 'one sample';
  let hint = '';
  if (chunk > 1 && onePass) {
    what = `one micro-batch of ${chunk} samples (batch norm: computed in one pass)`;
    hint = "; lower the coordinator's --micro-batch";
  } else if (chunk > 1) {
    what = `a chunk of ${chunk} samples (--max-chunk ${state.maxChunk})`;
    hint = '; lower --max-chunk, or give --max-chunk auto';
  }
  // The only budget while computing is --memory-limit: `needs` may measure past it.
  const needed = await needs(error, state.gm, images, labels, chunk, true);
  return new BatchlabError(
    'OUT_OF_MEMORY',
    `backend ${backend} with ${describeMemory(options, null)} cannot hold ${what}: ${needed}${hint}`,
  );
}

/** A frame whose header alone is sent: the gradient computed into `body` stays with the worker (sharded). */
function bodilessFrame(body: Float32Array): BodyFrame {
  return { body, seal: (message) => ({ bytes: encodeFrame(message), release: () => {} }), release: () => {} };
}

/** Takes the weights a `work` carries (with the sharded reducer: the optimizer state after them). */
function loadWeights(state: RunState, work: WorkMessage, body: Float32Array | null): void {
  if (work.state) {
    const sharded = requireSharded(state);
    if (!body) throw new ProtocolError('BAD_FRAME', 'work: optimizer state without weights');
    const { weights, state: optimizerState } = unpackState(body, work.state, state.paramCount);
    sharded.optimizer.loadState(optimizerState);
    sharded.weights.set(weights);
    sharded.exchange.reset(work.weightsStep);
    writeWeights(state.gm.model, weights);
  } else {
    if (!body || body.length !== state.paramCount)
      throw new ProtocolError(
        'BAD_FRAME',
        `work: weights body has ${body?.length ?? 0} values, the model has ${state.paramCount}`,
      );
    writeWeights(state.gm.model, body);
  }
  state.weightsStep = work.weightsStep;
}
