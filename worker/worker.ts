// The worker process: connects, handshakes, loads the same dataset as the coordinator, then
// computes each micro-batch it is handed and replies with its gradient sum and statistics.

import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { authorizationHeader } from '../shared/auth.js';
import { selectBackend, type BackendChoice, type BackendName } from '../shared/backend.js';
import { startMetricsServer, type MetricsServer } from '../shared/metrics-server.js';
import { createRegistry, defineWorkerMetrics, type WorkerMetrics } from '../shared/metrics.js';
import { decodeFrame, encodeFrame } from '../shared/codec.js';
import { gatherSamples, type Dataset, type DatasetName } from '../shared/data/dataset.js';
import { describeDataset, loadDataset } from '../shared/data/index.js';
import { BatchlabError, closeCodeFor, describeError, ProtocolError } from '../shared/errors.js';
import { modelFromTopology } from '../shared/models/index.js';
import { assertLayout, countParams, writeWeights } from '../shared/param-layout.js';
import { PROTOCOL_VERSION, type Message, type WelcomeMessage, type WorkMessage } from '../shared/protocol.js';
import { EpochSampler } from '../shared/sampler.js';
import { computeMicroBatch, type GradientModel } from './gradient.js';

export interface WorkerOptions {
  connect: string;
  token: string | null;
  backend: BackendName;
  dataDir?: string;
  maxChunk: number;
  name?: string;
  connectTimeoutMs: number;
  /** null: no /metrics endpoint; 0: any free port. */
  metricsPort: number | null;
  metricsHost: string;
  log: (line: string) => void;
}

/** State built from the welcome: what a worker needs to compute micro-batches. */
interface RunState {
  welcome: WelcomeMessage;
  dataset: Dataset;
  sampler: EpochSampler;
  gm: GradientModel;
  paramCount: number;
  weightsStep: number;
}

/** Runs until the coordinator says shutdown (exit code 0) or the connection fails (non-zero). */
export async function runWorker(options: WorkerOptions): Promise<number> {
  const { log } = options;
  const choice = await selectBackend(options.backend);
  log(`backend ${choice.backend} (${choice.device})${choice.skipped.length ? `; skipped ${choice.skipped.join('; ')}` : ''}`);
  const registry = createRegistry('worker');
  const metrics = defineWorkerMetrics(registry, choice);
  let metricsServer: MetricsServer | null = null;
  let state: RunState | null = null;
  if (options.metricsPort !== null) {
    metricsServer = await startMetricsServer(registry, options.metricsPort, options.metricsHost, () => ({ role: 'worker', step: state?.weightsStep ?? null }));
    log(`metrics at ${metricsServer.url}`);
  }
  try {
    return await serve(options, choice, metrics, metricsServer?.port, (s) => (state = s));
  } finally {
    await metricsServer?.close();
  }
}

/** The connection's life: handshake, then work frames in order until shutdown or loss. */
async function serve(options: WorkerOptions, choice: BackendChoice, metrics: WorkerMetrics, metricsPort: number | undefined, onState: (s: RunState) => void): Promise<number> {
  const { log } = options;
  const socket = await openSocket(options);
  log(`connected to ${options.connect}`);
  let state: RunState | null = null;
  let finished = false;
  // Frames are handled strictly in arrival order, one at a time.
  let queue = Promise.resolve();

  const send = (message: Message, body: Float32Array | null = null): void => {
    if (socket.readyState !== WebSocket.OPEN) return;
    const frame = encodeFrame(message, body);
    metrics.wireBytes.inc({ direction: 'out' }, frame.length);
    socket.send(frame, { binary: true });
  };

  const handle = async (data: Buffer): Promise<void> => {
    const { message, body } = decodeFrame(data);
    switch (message.type) {
      case 'welcome':
        state = await prepare(message, options);
        onState(state);
        send({ type: 'ready', datasetFingerprint: state.dataset.fingerprint });
        return;
      case 'work':
        if (!state) throw new ProtocolError('BAD_MESSAGE', 'work before welcome');
        computeWork(state, message, body, options.maxChunk, send, metrics);
        return;
      case 'shutdown':
        finished = true;
        log(`coordinator says: ${message.reason}`);
        socket.close(1000, 'bye');
        return;
      case 'error':
        log(`coordinator reported [${message.code}] ${message.message}`);
        return;
      default:
        throw new ProtocolError('BAD_MESSAGE', `unexpected ${message.type} from the coordinator`);
    }
  };

  return await new Promise<number>((resolve) => {
    let failure: unknown = null;
    socket.on('message', (data: Buffer) => {
      metrics.wireBytes.inc({ direction: 'in' }, data.length);
      queue = queue.then(() => handle(data)).catch((error) => {
        failure = error;
        log(describeError(error));
        const code = error instanceof BatchlabError ? error.code : 'BAD_MESSAGE';
        send({ type: 'error', code, message: String((error as Error).message ?? error) });
        socket.close(closeCodeFor(code), code);
      });
    });
    socket.on('close', (code, reason) => {
      if (finished) return resolve(0);
      log(`connection closed by the coordinator (code ${code}${reason.length ? `, ${reason.toString()}` : ''})`);
      resolve(failure ? 3 : 4);
    });
    socket.on('error', (error) => log(`socket error: ${error.message}`));
    send({ type: 'hello', protocolVersion: PROTOCOL_VERSION, workerName: options.name ?? `${hostname()}:${process.pid}`, backend: choice.backend, device: choice.device, maxChunk: options.maxChunk, ...(metricsPort ? { metricsPort } : {}) });
  });
}

/** Opens the WebSocket, retrying a refused connection until `connectTimeoutMs`. */
async function openSocket(options: WorkerOptions): Promise<WebSocket> {
  const deadline = Date.now() + options.connectTimeoutMs;
  let delayMs = 100;
  for (;;) {
    try {
      return await new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(options.connect, {
          perMessageDeflate: false,
          maxPayload: 1024 * 1024 * 1024,
          headers: options.token ? { authorization: authorizationHeader(options.token) } : {},
        });
        socket.once('open', () => {
          socket.removeAllListeners('error');
          resolve(socket);
        });
        socket.once('unexpected-response', (_req, res) => {
          reject(new BatchlabError('AUTH_FAILED', `coordinator refused the connection: HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim() + (res.statusCode === 401 ? ' (check --token / BATCHLAB_TOKEN)' : '')));
          socket.terminate();
        });
        socket.once('error', reject);
      });
    } catch (error) {
      if (error instanceof BatchlabError || Date.now() + delayMs > deadline) {
        if (error instanceof BatchlabError) throw error;
        throw new BatchlabError('CONNECT_FAILED', `could not reach ${options.connect} within ${Math.round(options.connectTimeoutMs / 1000)} s: ${(error as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, delayMs * (0.5 + Math.random())));
      delayMs = Math.min(2000, delayMs * 2);
    }
  }
}

/** Loads the dataset and builds the model the welcome describes; checks both match. */
async function prepare(welcome: WelcomeMessage, options: WorkerOptions): Promise<RunState> {
  if (welcome.protocolVersion !== PROTOCOL_VERSION) {
    throw new ProtocolError('VERSION_MISMATCH', `coordinator speaks protocol ${welcome.protocolVersion}, this worker ${PROTOCOL_VERSION}`);
  }
  const dataset = await loadDataset({
    name: welcome.dataset.name as DatasetName,
    dataDir: options.dataDir,
    seed: welcome.seed,
    syntheticTrain: welcome.dataset.syntheticTrain,
    syntheticTest: welcome.dataset.syntheticTest,
  });
  if (dataset.fingerprint !== welcome.dataset.fingerprint) {
    throw new ProtocolError('DATASET_MISMATCH', `loaded ${describeDataset(dataset)} (fingerprint ${dataset.fingerprint}) but the coordinator has ${welcome.dataset.trainCount} train samples with fingerprint ${welcome.dataset.fingerprint}: point --data-dir at the same files`);
  }
  const model = await modelFromTopology(welcome.modelTopology);
  assertLayout(model, welcome.params);
  options.log(`worker ${welcome.workerId} of run ${welcome.runId}: ${describeDataset(dataset)}`);
  return {
    welcome,
    dataset,
    sampler: new EpochSampler(dataset.train.count, welcome.seed),
    gm: { model, sampleShape: dataset.sampleShape, numClasses: dataset.numClasses },
    paramCount: countParams(welcome.params),
    weightsStep: -1,
  };
}

/** Computes every micro-batch of a work message in order and sends one reply per micro-batch. */
function computeWork(state: RunState, work: WorkMessage, body: Float32Array | null, maxChunk: number, send: (m: Message, b: Float32Array) => void, metrics: WorkerMetrics): void {
  if (work.hasWeights) {
    if (!body || body.length !== state.paramCount) throw new ProtocolError('BAD_FRAME', `work: weights body has ${body?.length ?? 0} values, the model has ${state.paramCount}`);
    writeWeights(state.gm.model, body);
    state.weightsStep = work.weightsStep;
  }
  if (state.weightsStep !== work.weightsStep) throw new ProtocolError('BAD_MESSAGE', `work for step ${work.step} needs weights of step ${work.weightsStep}, worker holds step ${state.weightsStep}`);
  for (const spec of work.microBatches) {
    if (spec.end > work.globalBatchSize) throw new ProtocolError('BAD_MESSAGE', `micro-batch ${spec.id} ends at ${spec.end}, past the global batch of ${work.globalBatchSize}`);
    const t0 = performance.now();
    const indices = state.sampler.indicesFor(work.step, work.globalBatchSize, spec.start, spec.end);
    const { images, labels } = gatherSamples(state.dataset.train, state.dataset.sampleShape, indices);
    const result = computeMicroBatch(state.gm, images, labels, maxChunk);
    const computeMs = performance.now() - t0;
    metrics.microBatchesTotal.inc();
    metrics.microBatchSamplesTotal.inc(result.samples);
    metrics.microBatchCompute.observe(computeMs / 1000);
    metrics.step.set(work.step);
    send(
      { type: 'gradient', step: work.step, microBatchId: spec.id, samples: result.samples, lossSum: result.lossSum, correct: result.correct, computeMs, sqNorm: result.sqNorm },
      result.gradSum,
    );
  }
}
