// Compute backend selection: `auto` tries tfjs-node-gpu, WebGPU on a hardware adapter, tfjs-node,
// wasm, then the pure-JS cpu backend. The native and WebGPU packages are optional dependencies
// whose install may have failed; each failure is one line saying which, and `auto` goes on.

import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { OptionError } from './errors.js';

export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'webgpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** The WebGPU adapter a `webgpu` backend runs on, as Dawn describes it. */
export interface GpuAdapter {
  vendor: string;
  architecture: string;
  description: string;
  /** A software adapter (Mesa's llvmpipe, SwiftShader): correct but slower than wasm. */
  fallback: boolean;
}

/** The backend in use and the device it runs on, as reported in `hello` and in metrics. */
export interface BackendChoice {
  backend: Exclude<BackendName, 'auto'>;
  device: string;
  /** The WebGPU adapter (`webgpu` only), else null. */
  adapter: GpuAdapter | null;
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
  const { registerWasmConvInputGrad } = await import('./wasm-conv-input-grad.js');
  registerWasmConvInputGrad();
  const { registerWasmTile } = await import('./wasm-tile.js');
  registerWasmTile();
  if (!(await tf.setBackend('wasm'))) throw new Error("the 'wasm' backend did not initialize");
}

/**
 * WebGPU through Dawn's Node bindings (the `webgpu` package): its globals and `navigator.gpu`
 * must exist before tfjs-backend-webgpu is imported, which registers the backend only then.
 * Dawn needs a Vulkan driver: the GPU vendor's, or Mesa's llvmpipe (a software adapter).
 * `hardwareOnly` (for `auto`) refuses a software adapter, which is slower than wasm.
 */
async function tryWebgpu(hardwareOnly: boolean): Promise<GpuAdapter> {
  // Dawn's Vulkan loader warns without one; a private, writable directory silences it.
  if (!process.env.XDG_RUNTIME_DIR) {
    const dir = join(tmpdir(), `batchlab-xdg-${process.getuid?.() ?? 'user'}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    process.env.XDG_RUNTIME_DIR = dir;
  }
  const { create, globals } = (await import('webgpu')) as {
    create: (flags: string[]) => GPU;
    globals: Record<string, unknown>;
  };
  const scope = globalThis as unknown as { navigator?: { gpu?: GPU } };
  if (!scope.navigator?.gpu) {
    Object.assign(globalThis, globals);
    const gpu = create([]);
    if (scope.navigator) Object.defineProperty(scope.navigator, 'gpu', { value: gpu, configurable: true });
    else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });
  }
  // The same request tfjs-backend-webgpu makes, so this is the adapter it will use.
  const adapter = await scope.navigator!.gpu!.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter)
    throw new Error(
      'no WebGPU adapter: Dawn found no Vulkan driver it accepts (install the GPU driver, or Mesa 25 from bookworm-backports for a software adapter)',
    );
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const found: GpuAdapter = {
    vendor: info.vendor || 'unknown',
    architecture: info.architecture || 'unknown',
    description: info.description || info.device || 'unknown',
    fallback:
      info.isFallbackAdapter === true ||
      (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
      /llvmpipe|lavapipe|swiftshader|software/i.test(`${info.architecture} ${info.description}`),
  };
  if (hardwareOnly && found.fallback)
    throw new Error(`only a software adapter (${found.description}), slower than wasm; name it with --backend webgpu`);
  // tfjs-backend-webgpu has its own Conv2DBackpropFilter kernel, so the wasm one (registered for
  // the wasm backend only, where tfjs has none) is not needed here.
  await import('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu'))) throw new Error("the 'webgpu' backend did not initialize");
  return found;
}

/** Each backend's set-up; webgpu's returns its adapter. */
const ATTEMPTS: Record<Exclude<BackendName, 'auto'>, (auto: boolean) => Promise<GpuAdapter | void>> = {
  'tensorflow-gpu': () => tryNative('@tensorflow/tfjs-node-gpu'),
  webgpu: (auto) => tryWebgpu(auto),
  tensorflow: () => tryNative('@tensorflow/tfjs-node'),
  wasm: tryWasm,
  cpu: async () => {
    const { registerCpuConvFilterGrad } = await import('./cpu-conv-filter-grad.js');
    registerCpuConvFilterGrad();
    await tf.setBackend('cpu');
  },
};

/** "adapter llvmpipe: Mesa 25.0.7 …, software fallback", or "gpu"/"cpu" for the other backends. */
function deviceOf(backend: Exclude<BackendName, 'auto'>, adapter: GpuAdapter | null): string {
  if (adapter) return `adapter ${adapter.description}, ${adapter.fallback ? 'software fallback' : 'hardware'}`;
  return backend === 'tensorflow-gpu' ? 'gpu' : 'cpu';
}

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
  const order = name === 'auto' ? (['tensorflow-gpu', 'webgpu', 'tensorflow', 'wasm', 'cpu'] as const) : [name];
  const skipped: string[] = [];
  for (const candidate of order) {
    try {
      const adapter = (await ATTEMPTS[candidate](name === 'auto')) ?? null;
      await tf.ready();
      return { backend: candidate, device: deviceOf(candidate, adapter), adapter, skipped };
    } catch (error) {
      if (name !== 'auto')
        throw new OptionError('backend', name, `a backend that loads here (${firstLine(error)}); try --backend auto`);
      skipped.push(`${candidate}: ${firstLine(error)}`);
    }
  }
  throw new Error(`no backend could be loaded: ${skipped.join('; ')}`);
}
