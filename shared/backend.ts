// Compute backend selection: `auto` tries tfjs-node-gpu, tfjs-node, wasm, then the pure-JS cpu
// backend. The native packages are optional dependencies whose install may have failed.

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { OptionError } from './errors.js';

export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** The backend in use and the device it runs on, as reported in `hello` and in metrics. */
export interface BackendChoice {
  backend: Exclude<BackendName, 'auto'>;
  device: string;
  /** Why earlier candidates were passed over (for the log line). */
  skipped: string[];
}

async function tryNative(pkg: string): Promise<void> {
  // The package registers the 'tensorflow' backend on import and fails here if its binding is missing.
  await import(pkg);
  if (!(await tf.setBackend('tensorflow')))
    throw new Error(`${pkg} loaded but the 'tensorflow' backend did not initialize`);
}

async function tryWasm(): Promise<void> {
  await import('@tensorflow/tfjs-backend-wasm');
  const { registerWasmConvFilterGrad } = await import('./wasm-conv-filter-grad.js');
  registerWasmConvFilterGrad();
  if (!(await tf.setBackend('wasm'))) throw new Error("the 'wasm' backend did not initialize");
}

const ATTEMPTS: Record<Exclude<BackendName, 'auto'>, () => Promise<void>> = {
  'tensorflow-gpu': () => tryNative('@tensorflow/tfjs-node-gpu'),
  tensorflow: () => tryNative('@tensorflow/tfjs-node'),
  wasm: tryWasm,
  cpu: async () => {
    await tf.setBackend('cpu');
  },
};

function firstLine(error: unknown): string {
  if ((error as { code?: string })?.code === 'ERR_MODULE_NOT_FOUND') return 'not installed';
  return String((error as Error)?.message ?? error)
    .split('\n')[0]!
    .slice(0, 160);
}

/**
 * Activates the requested backend (or the first that works, for `auto`). An explicitly named
 * backend that fails is an error naming the option and the reason.
 */
export async function selectBackend(name: BackendName): Promise<BackendChoice> {
  // Silence tfjs's "install the node backend" banner: we log our own choice.
  tf.env().set('PROD', true);
  const order = name === 'auto' ? (['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const) : [name];
  const skipped: string[] = [];
  for (const candidate of order) {
    try {
      await ATTEMPTS[candidate]();
      await tf.ready();
      return { backend: candidate, device: candidate === 'tensorflow-gpu' ? 'gpu' : 'cpu', skipped };
    } catch (error) {
      if (name !== 'auto')
        throw new OptionError('backend', name, `a backend that loads here (${firstLine(error)}); try --backend auto`);
      skipped.push(`${candidate}: ${firstLine(error)}`);
    }
  }
  throw new Error(`no backend could be loaded: ${skipped.join('; ')}`);
}
