// The variables launchers set (torchrun, Slurm recipes, Kubeflow's PyTorchJob), read as defaults
// below BATCHLAB_<OPTION>: WORLD_SIZE → the coordinator's --min-workers, MASTER_PORT → its
// --port, RANK → a worker's --name, LOCAL_RANK → the GPU a worker uses. batchlab's coordinator
// holds the rendezvous, as torchrun's store at MASTER_ADDR:MASTER_PORT does, and trains on no
// device: WORLD_SIZE counts the workers only, ranks 0 to WORLD_SIZE − 1.

import { BatchlabError, OptionError } from '../shared/errors.js';

/** An option whose default a launcher variable gives when neither the command line nor BATCHLAB_<OPTION> does. */
export interface LauncherDefault {
  variable: string;
  option: string;
  /** The option's text for the variable's value; throws OptionError naming the variable when it is bad. */
  read: (value: string) => string;
}

/** A refusal of a variable that sets no option (LOCAL_RANK): exit 2, like a bad option. */
function badVariable(variable: string, value: string, accepted: string): BatchlabError {
  return new BatchlabError('BAD_OPTION', `${variable}: got ${JSON.stringify(value)}; expected ${accepted}`);
}

/** A rank or local rank: a non-negative integer. */
function readRank(value: string): number | null {
  const text = value.trim();
  return /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : null;
}

/** The coordinator: WORLD_SIZE workers are waited for, and MASTER_PORT is where it listens. */
export const COORDINATOR_LAUNCHER: readonly LauncherDefault[] = [
  // Checked by --min-workers' own parser (the error names WORLD_SIZE).
  { variable: 'WORLD_SIZE', option: 'min-workers', read: (value) => value },
  { variable: 'MASTER_PORT', option: 'port', read: (value) => value },
];

/** A worker: RANK names it rank-<RANK>. */
export const WORKER_LAUNCHER: readonly LauncherDefault[] = [
  {
    variable: 'RANK',
    option: 'name',
    read: (value) => {
      const rank = readRank(value);
      if (rank === null) throw new OptionError('name', value, 'an integer from 0 up', 'RANK');
      return `rank-${rank}`;
    },
  },
];

/** What LOCAL_RANK does to a worker: the CUDA_VISIBLE_DEVICES to set (if any) and the line to log. */
export interface LocalDevice {
  cudaVisibleDevices: string | null;
  line: string;
}

/**
 * The device of a worker with LOCAL_RANK, or null without it. With CUDA_VISIBLE_DEVICES unset,
 * the worker sees only GPU LOCAL_RANK; with a list of several, only the LOCAL_RANK-th of them;
 * with one device or none (empty), the launcher has already chosen and nothing changes.
 * TensorFlow reads the variable when the native GPU backend loads, so it is set before.
 * WebGPU cannot be pointed at a device this way (Dawn's requestAdapter takes no index; its
 * `adapter=` option matches a name, which identical GPUs share): the line says so.
 */
export function localDevice(env: NodeJS.ProcessEnv, backend: string): LocalDevice | null {
  const given = env.LOCAL_RANK;
  if (given === undefined) return null;
  const rank = readRank(given);
  if (rank === null) throw badVariable('LOCAL_RANK', given, 'an integer from 0 up');
  const visible = env.CUDA_VISIBLE_DEVICES;
  let cudaVisibleDevices: string | null = null;
  let mapping: string;
  if (visible === undefined) {
    cudaVisibleDevices = String(rank);
    mapping = `CUDA_VISIBLE_DEVICES=${cudaVisibleDevices}`;
  } else {
    const devices = visible.split(',').map((d) => d.trim());
    if (visible.trim() === '' || devices.length === 1) {
      mapping = `CUDA_VISIBLE_DEVICES=${visible} kept (set by the launcher)`;
    } else {
      if (rank >= devices.length) {
        const accepted = `an index into CUDA_VISIBLE_DEVICES=${visible} (0 to ${devices.length - 1})`;
        throw badVariable('LOCAL_RANK', given, accepted);
      }
      cudaVisibleDevices = devices[rank]!;
      mapping = `CUDA_VISIBLE_DEVICES=${cudaVisibleDevices} (entry ${rank} of ${visible})`;
    }
  }
  const webgpu =
    backend === 'webgpu' || backend === 'auto'
      ? '; webgpu cannot select an adapter by LOCAL_RANK and uses the one Dawn picks'
      : '';
  return { cudaVisibleDevices, line: `LOCAL_RANK=${rank}: ${mapping} for tensorflow-gpu${webgpu}` };
}

/**
 * Applies {@link localDevice} to `env` (the process's, before the backend loads): sets
 * CUDA_VISIBLE_DEVICES when LOCAL_RANK picks a device, and logs the mapping in one line.
 */
export function selectLocalDevice(env: NodeJS.ProcessEnv, backend: string, log: (line: string) => void): void {
  const device = localDevice(env, backend);
  if (!device) return;
  if (device.cudaVisibleDevices !== null) env.CUDA_VISIBLE_DEVICES = device.cudaVisibleDevices;
  log(device.line);
}
