#!/usr/bin/env python3
"""Peer benchmark: PyTorch DDP (gloo, CPU) training batchlab's default model.

The model is batchlab's default MLP (shared/models/mlp.ts, hidden [256, 128]):
784-256-128-10 with ReLU, softmax cross-entropy on the logits, Adam with lr 1e-3.
Data: the Fashion-MNIST training images scaled to [0, 1], read straight from the IDX
files (gzip'd or plain; no torchvision). Every process loads the whole training split
as one tensor and takes its slice of each global batch from a seeded permutation, so
all processes see disjoint samples and the global batch is the same at every worker
count, as in batchlab.

One spawn of torch.multiprocessing serves every point: max(N) processes (one thread
each, gloo on 127.0.0.1 at a free port) import torch and load the data once, then measure
the points in the order given. For a point (global batch B, workers N), ranks 0..N-1 form
a process group of exactly N ranks and train a fresh model (same seed), a fresh Adam and
a fresh batch sequence, as N freshly spawned processes would; each takes B/N samples per
step and runs forward, backward (DDP all-reduces the gradients) and the optimizer step.
The ranks >= N sleep on a multiprocessing condition until the point is done, so they use
no CPU. `--warmup-steps` steps are not timed; the timed steps run between two barriers on
the point's group and rank 0 reports. With --json, one JSON line per point goes to stdout
as soon as the point is done:

  {"globalBatchSize": B, "workers": N, "samplesPerSecond": ..., "stepsTimed": ..., "seconds": ...}

If a process fails, the parent stops the others and exits with that process's error.
Progress and losses go to stderr.

Examples:
  python3 bench/ddp_peer.py --data-dir /usr/share/datasets/fashion-mnist \
      --global-batch 64,512 --workers 1,2 --steps 100 --warmup-steps 10 --json
  python3 bench/ddp_peer.py --points 32:1,64:1,64:2 --steps 100 --json
"""

import argparse
import gzip
import json
import os
import queue
import socket
import struct
import sys
import time

# One thread per process, set before torch loads its thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# Gloo otherwise picks the address the host name resolves to, which need not be loopback.
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.multiprocessing.spawn import ProcessException  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
SEED = 1234


def find_idx_file(data_dir, base):
    """The path of `base` in data_dir, `.gz` preferred (as batchlab's loader does)."""
    for name in (base + ".gz", base):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{os.path.join(data_dir, base)}[.gz] not found")


def read_idx(path, expected_magic):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: magic {magic:#x}, expected {expected_magic:#x}")
    ndims = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    offset = 4 + 4 * ndims
    count = int(np.prod(dims))
    if len(data) - offset != count:
        raise ValueError(f"{path}: {len(data) - offset} data bytes, header says {count}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_train(data_dir):
    """(images float32 [n, 784] in [0, 1], labels int64 [n]) of the training split."""
    images = read_idx(find_idx_file(data_dir, TRAIN_IMAGES), 0x00000803)
    labels = read_idx(find_idx_file(data_dir, TRAIN_LABELS), 0x00000801)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"unexpected shapes: images {images.shape}, labels {labels.shape}")
    x = torch.from_numpy(images.reshape(images.shape[0], 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def build_mlp():
    """batchlab's default model: flatten → 256 relu → 128 relu → 10 logits."""
    return nn.Sequential(
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GlobalBatches:
    """Indices of successive global batches from seeded permutations of the training set;
    a new permutation each epoch (a short tail that does not fill a batch is dropped)."""

    def __init__(self, n, batch, seed):
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.gen), 0

    def next(self):
        if self.pos + self.batch > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx


class PointDone:
    """Where all ranks meet after each point, so that the next point starts with every rank
    free. A rank that is idle for a point (not in its group), or done with it, sleeps on a
    multiprocessing condition: a semaphore wait, which takes no CPU and sends nothing over
    gloo while the others run their timed steps. The wait wakes every few seconds only to
    check that the parent is still there: the parent stops every rank as soon as one fails,
    so a vanished parent is the one way left to wait forever."""

    def __init__(self, ctx, world):
        self.world = world
        self.arrived = ctx.Value("q", 0, lock=False)  # arrivals over all points; guarded by cond
        self.cond = ctx.Condition()

    def wait(self, points_done, parent):
        """Blocks until every rank has finished `points_done` points."""
        with self.cond:
            self.arrived.value += 1
            self.cond.notify_all()
            while self.arrived.value < self.world * points_done:
                if not self.cond.wait(timeout=5.0) and os.getppid() != parent:
                    raise RuntimeError("the parent process exited; giving up")


def measure_point(rank, group, x, y, global_batch, workers, steps, warmup):
    """Trains at one point on ranks 0..workers-1 (`group`); rank 0 returns the result."""
    if global_batch > x.shape[0]:
        raise ValueError(f"global batch {global_batch} exceeds the {x.shape[0]} training samples")
    local = global_batch // workers
    # Everything a point trains is built afresh, so it computes exactly what a fresh spawn did.
    torch.manual_seed(SEED)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    model = DDP(build_mlp(), process_group=group)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = GlobalBatches(x.shape[0], global_batch, SEED)

    def step():
        idx = batches.next()[rank * local : (rank + 1) * local]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        opt.step()
        return loss

    first = None
    for i in range(warmup):
        loss = step()
        if i == 0:
            first = loss.item()
    dist.barrier(group=group)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step()
        if first is None:
            first = loss.item()  # no warm-up: costs one sync inside the timed steps
    dist.barrier(group=group)
    seconds = time.perf_counter() - t0
    last = loss.item()
    return {
        "globalBatchSize": global_batch,
        "workers": workers,
        "samplesPerSecond": steps * global_batch / seconds,
        "stepsTimed": steps,
        "seconds": seconds,
        "firstLoss": first,
        "lastLoss": last,
    }


def run_worker(rank, world, port, parent, data_dir, points, steps, warmup, done, results):
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y = load_train(data_dir)
        # new_group is collective over all ranks, members or not, so every rank creates every
        # group, once, up front. Non-members get GroupMember.NON_GROUP_MEMBER.
        groups = {n: dist.new_group(ranks=list(range(n))) for n in sorted({n for _, n in points})}
        for i, (b, n) in enumerate(points):
            if rank < n:
                r = measure_point(rank, groups[n], x, y, b, n, steps, warmup)
                if rank == 0:
                    results.put(r)
            done.wait(i + 1, parent)
    finally:
        dist.destroy_process_group()


def measure(data_dir, points, steps, warmup):
    """Yields rank 0's result for each point, in order, as soon as the point is done.

    Spawns max(N) processes once. Rather than block on the result queue, the parent polls it
    once a second and, between polls, calls ProcessContext.join(timeout=0), which raises with
    the failing process's error (after terminating the others) as soon as one has exited with
    an error: a crashed rank cannot leave the rest blocked in a collective or in PointDone.
    """
    world = max(n for _, n in points)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    done = PointDone(ctx, world)
    args = (world, free_port(), os.getpid(), data_dir, points, steps, warmup, done, results)
    workers = mp.start_processes(run_worker, args=args, nprocs=world, join=False, start_method="spawn")
    try:
        for b, n in points:
            while True:
                try:
                    r = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    if workers.join(timeout=0) and results.empty():
                        raise RuntimeError(f"the workers exited without a result for B={b}, workers={n}")
            yield r
        while not workers.join():
            pass
    finally:
        # After a normal end none is alive. Any other way out (an error here, a broken stdout
        # pipe after the caller was stopped): the workers must not go on measuring unwatched.
        for p in workers.processes:
            if p.is_alive():
                p.terminate()


def int_list(text):
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values


def point_list(text):
    points = []
    for item in text.split(","):
        try:
            b, n = (int(v) for v in item.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected B:N[,B:N...], got {text!r}")
        if b < 1 or n < 1:
            raise argparse.ArgumentTypeError(f"batch and workers must be positive in {item!r}")
        points.append((b, n))
    return points


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"directory of the Fashion-MNIST IDX files (default {DEFAULT_DATA_DIR})")
    p.add_argument("--global-batch", type=int_list, default=[64, 512], help="global batch sizes, e.g. 64,512")
    p.add_argument("--workers", type=int_list, default=[1, 2], help="process counts, e.g. 1,2")
    p.add_argument("--points", type=point_list, help="explicit B:N points in this order, instead of --global-batch × --workers")
    p.add_argument("--steps", type=int, default=100, help="timed steps per point")
    p.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before timing")
    p.add_argument("--json", action="store_true", help="one JSON line per point on stdout")
    a = p.parse_args()
    if a.steps < 1 or a.warmup_steps < 0:
        p.error("--steps must be ≥ 1 and --warmup-steps ≥ 0")
    points = a.points or [(b, n) for b in a.global_batch for n in a.workers]
    for b, n in points:
        if b % n:
            p.error(f"global batch {b} is not divisible by {n} workers")
    # Fail early, in the parent, on a missing or malformed dataset.
    for base in (TRAIN_IMAGES, TRAIN_LABELS):
        find_idx_file(a.data_dir, base)

    measured = {}
    print(f"spawning {max(n for _, n in points)} processes for {len(points)} points", file=sys.stderr, flush=True)
    results = measure(a.data_dir, points, a.steps, a.warmup_steps)
    try:
        for b, n in points:
            print(f"measuring B={b} workers={n} ({a.warmup_steps} warm-up + {a.steps} timed steps)", file=sys.stderr, flush=True)
            r = next(results)
            measured[(b, n)] = r
            print(f"  {r['samplesPerSecond']:.0f} samples/s, loss {r['firstLoss']:.3f} → {r['lastLoss']:.3f}", file=sys.stderr, flush=True)
            out = {k: r[k] for k in ("globalBatchSize", "workers", "samplesPerSecond", "stepsTimed", "seconds")}
            if a.json:
                print(json.dumps(out), flush=True)
        next(results, None)  # runs measure() to its end: the workers exit
    except (ProcessException, RuntimeError) as e:
        sys.exit(f"ddp_peer.py: {str(e).strip()}")

    if not a.json:
        print(f"{'B':>6} {'workers':>7} {'samples/s':>10} {'efficiency':>10}")
        for (b, n), r in measured.items():
            base = measured.get((b // n, 1))
            eff = f"{r['samplesPerSecond'] / (n * base['samplesPerSecond']):.1%}" if base else "-"
            print(f"{b:>6} {n:>7} {r['samplesPerSecond']:>10.0f} {eff:>10}")


if __name__ == "__main__":
    main()
