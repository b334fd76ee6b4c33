#!/usr/bin/env bash
# Checks that batchlab's WebGPU backend runs on this machine's GPU, not on a software adapter:
#   1. a one-step run on `--backend webgpu` and the adapter it reports (every process logs
#      `backend webgpu (adapter <name>, hardware)` or `..., software fallback)`);
#   2. `batchlab bench --only backends --quick`: every backend side by side, webgpu included;
#   3. a two-worker training run on `--backend webgpu`.
# Exits 0 when all of it ran on a hardware adapter; 3 when the adapter is a software fallback
# (Mesa's llvmpipe: the GPU's Vulkan driver is missing or not mounted), unless --allow-fallback;
# 1 when a step fails; 2 on a bad argument.
#
#   scripts/gpu-check.sh                   # from a checkout after `npm ci && npm run build`
#   BATCHLAB='docker run --rm --gpus "device=0" batchlab:webgpu' scripts/gpu-check.sh
#   docker run --rm --gpus '"device=0"' --entrypoint gpu-check batchlab:webgpu
#
# BATCHLAB is the command that runs batchlab (a shell command line, arguments are appended).
# Without it: dist/cli/batchlab.js of the checkout this script is in, else `batchlab` on the
# PATH, else `npx batchlab`.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: gpu-check.sh [--allow-fallback] [--steps N]
  --allow-fallback  run everything on a software (CPU) adapter too and exit 0; for trying the
                    script on a machine without a GPU
  --steps N         steps of the two-worker run (default 50)
USAGE
}

allow_fallback=0
steps=50
while [ "$#" -gt 0 ]; do
  case "$1" in
    --allow-fallback) allow_fallback=1 ;;
    --steps)
      if [ "$#" -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "gpu-check: --steps ${2-}: expected a positive whole number" >&2
        exit 2
      fi
      steps="$2"
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "gpu-check: unknown argument $1 (accepted: --allow-fallback, --steps N, --help)" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${BATCHLAB:-}" ]; then
  if [ -f "$root/dist/cli/batchlab.js" ]; then
    BATCHLAB="node $(printf '%q' "$root/dist/cli/batchlab.js")"
  elif command -v batchlab >/dev/null 2>&1; then
    BATCHLAB=batchlab
  else
    BATCHLAB="npx --no-install batchlab"
  fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Dawn and the Vulkan loader want a writable runtime directory.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR}" ]; then
  XDG_RUNTIME_DIR="$work/xdg"
  mkdir -m 0700 "$XDG_RUNTIME_DIR"
  export XDG_RUNTIME_DIR
fi

# batchlab ARGS...: runs $BATCHLAB with ARGS appended, output to the terminal and to $work/out.
batchlab() {
  echo "+ $BATCHLAB $*" >&2
  bash -c "$BATCHLAB"' "$@"' batchlab "$@" 2>&1 | tee "$work/out"
}

fail() {
  echo "gpu-check: FAILED: $*" >&2
  exit 1
}

# The adapter lines of $work/out; exits 3 on a software adapter unless --allow-fallback.
check_adapter() {
  local lines
  lines="$(grep -E 'backend webgpu \(adapter .*, (hardware|software fallback)\)' "$work/out" || true)"
  [ -n "$lines" ] || fail "$1: no 'backend webgpu (adapter ..., hardware)' line in the output"
  if grep -q 'software fallback' <<<"$lines"; then
    if [ "$allow_fallback" = 1 ]; then
      echo "gpu-check: $1 ran on a software fallback adapter (allowed by --allow-fallback; these are CPU numbers, not GPU ones)" >&2
      fallback_seen=1
    else
      echo "gpu-check: $1 ran on a software fallback adapter, not on a GPU:" >&2
      echo "$lines" >&2
      echo "gpu-check: check the GPU's Vulkan driver (in a container: NVIDIA_DRIVER_CAPABILITIES must include graphics; see docs/DEPLOY.md)" >&2
      exit 3
    fi
  fi
}

fallback_seen=0
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L || true; fi

echo "== 1/3 adapter: one step on --backend webgpu" >&2
batchlab local --workers 1 --steps 1 --eval-every 0 --backend webgpu --dataset synthetic ||
  fail "the one-step run on --backend webgpu"
check_adapter "the one-step run"
adapter="$(grep -m1 -oE 'backend webgpu \(adapter .*\)' "$work/out")"

echo "== 2/3 batchlab bench --only backends --quick" >&2
batchlab bench --only backends --quick || fail "batchlab bench --only backends --quick"

echo "== 3/3 two workers on --backend webgpu, $steps steps" >&2
batchlab local --workers 2 --steps "$steps" --backend webgpu --dataset synthetic ||
  fail "the two-worker run on --backend webgpu"
check_adapter "the two-worker run"

if [ "$fallback_seen" = 1 ]; then
  echo "gpu-check: passed on a SOFTWARE adapter (--allow-fallback): $adapter" >&2
else
  echo "gpu-check: passed on the GPU: $adapter" >&2
fi
