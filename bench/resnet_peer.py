#!/usr/bin/env python3
"""Peer benchmark: PyTorch's gradient computation of a CIFAR ResNet, one thread.

The model is batchlab's `resnet` (shared/models/resnet.ts): He et al.'s CIFAR ResNet of depth
6n + 2 (20 by default), a 3x3 conv, three stages of n basic blocks with 16, 32 and 64 filters,
option-B projection shortcuts (a strided 1x1 conv with batch norm) where a stage halves the map,
convolutions without bias, batch norm with eps 1e-5 and momentum 0.9 in Keras's convention
(0.1 in PyTorch's), global average pooling and a linear layer to the logits.

What is timed is what batchlab's backend benchmark times (computeMicroBatch in
worker/gradient.ts): one micro-batch's forward pass in training mode, the summed softmax
cross-entropy, the backward pass and the gradient as one flat vector. No optimizer step.
The data is random: a fixed 32x32x3 batch of uniform pixels and labels (the shape matters,
not the content). `--warmup` untimed calls, then timed calls until `--seconds` have passed
and at least two were timed, for each batch size of `--batch` in turn (a fresh model and batch
each). One JSON line per batch size on stdout with --json:

  {"torchVersion": ..., "threads": 1, "depth": 20, "batch": B, "samplesPerSecond": ...,
   "calls": ..., "seconds": ...}

Example:
  /usr/bin/python3 bench/resnet_peer.py --batch 4,32 --seconds 6 --warmup 2 --json
"""

import argparse
import json
import os
import sys
import time

# One thread, set before torch loads its thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SEED = 1234


def bn(channels):
    # PyTorch's momentum is Keras's 1 - momentum.
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class Block(nn.Module):
    """conv3x3-BN-relu-conv3x3-BN plus the shortcut, then relu."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = bn(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), bn(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class ResNet(nn.Module):
    def __init__(self, depth, widths, classes):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv0 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn0 = bn(widths[0])
        blocks, cin = [], widths[0]
        for s, cout in enumerate(widths):
            for b in range(n):
                blocks.append(Block(cin, cout, 2 if s > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.logits = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        x = self.blocks(x)
        return self.logits(torch.mean(x, dim=(2, 3)))


def gradient(model, x, y):
    """Forward in training mode, summed cross-entropy, backward, the gradient as one flat vector."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def positive_ints(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values


def measure(args, batch):
    """Samples/s of `gradient` at one batch size: a fresh model and batch, warm-up, timed calls."""
    torch.manual_seed(SEED)
    model = ResNet(args.depth, [16, 32, 64], 10).train()
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    params = sum(p.numel() for p in model.parameters())
    for _ in range(args.warmup):
        gradient(model, x, y)
    calls = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds or calls < 2:
        g = gradient(model, x, y)
        calls += 1
    seconds = time.perf_counter() - t0
    if g.numel() != params:
        raise RuntimeError(f"gradient has {g.numel()} values, the model {params} parameters")
    return {
        "torchVersion": torch.__version__,
        "threads": torch.get_num_threads(),
        "depth": args.depth,
        "params": params,
        "batch": batch,
        "samplesPerSecond": batch * calls / seconds,
        "calls": calls,
        "seconds": seconds,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=positive_ints, default=[32], help="samples per gradient computation, e.g. 4,32")
    p.add_argument("--depth", type=int, default=20, help="6n + 2")
    p.add_argument("--seconds", type=float, default=6.0, help="least time of the timed calls")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    p.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = p.parse_args()
    if args.warmup < 0 or args.seconds < 0:
        p.error("--warmup and --seconds must not be negative")
    torch.set_num_threads(1)
    for batch in args.batch:
        r = measure(args, batch)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"PyTorch {r['torchVersion']}, {r['threads']} thread, ResNet-{r['depth']} ({r['params']} parameters), "
                  f"batch {batch}: {r['samplesPerSecond']:.1f} samples/s ({r['calls']} calls in {r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
