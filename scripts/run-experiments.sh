#!/usr/bin/env bash
# Runs the large-batch verification experiments of docs/EXPERIMENTS.md on the full Fashion-MNIST
# (Debian's dataset-fashion-mnist) and writes their reports to docs/experiments/. Then
# `node dist/scripts/summarize-experiments.js` prints the numbers the document quotes.
# Takes about 25 minutes on 2 cores. Usage: scripts/run-experiments.sh [sweep|temperature|goyal|anchor]...
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/experiments
mkdir -p "$out"
bl() { node dist/cli/batchlab.js "$@"; }
which=("${@:-sweep temperature goyal anchor}")

for experiment in ${which[@]}; do
  case "$experiment" in
    sweep)
      # Scaling efficiency vs batch size: B = 32 and 512, 1 and 2 workers, same per-worker micro-batch.
      bl sweep --global-batch 32,512 --workers 1,2 --steps 150 --eval-every 50 \
        --report "$out/sweep-32-512.json" --html "$out/sweep-32-512.html" ;;
    steps-to-target)
      # Steps to 80% test accuracy vs B, best LR of a small grid per B, 1 worker (the result does not
      # depend on the worker count); fits S = S_min + E_min/B and sets B_crit beside B_simple.
      bl sweep --global-batch 32,64,128,256,512,1024 --workers 1 --micro-batches 4 --optimizer sgd --momentum 0.9 --lr-grid 0.05,0.1 \
        --target-accuracy 0.80 --steps 600 --eval-every 10 \
        --report "$out/steps-to-target.json" --html "$out/steps-to-target.html" ;;
    temperature)
      # Temperature law: LR / 4 for steps 300-600; B_simple should rise 2-8x, then come back.
      bl local --workers 2 --optimizer sgd --lr 0.05 --momentum 0.9 --global-batch 128 --micro-batch 16 \
        --steps 900 --lr-window 300:600:0.25 --eval-every 300 --metrics-port off --report "$out/temperature.json"
      # Control: the same run without the window, to separate the window's effect from drift over training.
      bl local --workers 2 --optimizer sgd --lr 0.05 --momentum 0.9 --global-batch 128 --micro-batch 16 \
        --steps 900 --eval-every 300 --metrics-port off --report "$out/temperature-control.json" ;;
    goyal)
      # Goyal ordering at a fixed budget of 3 epochs: B0 = 128 baseline vs B = 1024 with each rule.
      common=(--workers 2 --optimizer sgd --momentum 0.9 --lr 0.05 --base-batch 128 --epochs 3 --eval-every 0 --metrics-port off)
      bl local "${common[@]}" --global-batch 128 --micro-batch 32 --report "$out/goyal-baseline-128.json"
      bl local "${common[@]}" --global-batch 1024 --micro-batch 128 --lr-scaling none --report "$out/goyal-none-1024.json"
      bl local "${common[@]}" --global-batch 1024 --micro-batch 128 --lr-scaling sqrt --warmup-steps 59 --report "$out/goyal-sqrt-1024.json"
      bl local "${common[@]}" --global-batch 1024 --micro-batch 128 --lr-scaling linear --warmup-steps 59 --report "$out/goyal-linear-1024.json" ;;
    anchor)
      # Xiao et al. Table 3 anchor: MLP 784-100-10, Adam 1e-3, batch 200, 10 epochs; K = 1 and K = 4 workers.
      common=(--model mlp --hidden 100 --optimizer adam --lr 0.001 --global-batch 200 --micro-batch 50 --epochs 10 --eval-every 0 --metrics-port off)
      bl local --workers 1 "${common[@]}" --save-model "$out/anchor-k1-model" --report "$out/anchor-k1.json"
      bl local --workers 4 "${common[@]}" --save-model "$out/anchor-k4-model" --report "$out/anchor-k4.json" ;;
    anchor-long)
      # The anchor again at 30 epochs (Xiao et al.'s scikit-learn MLP trains up to 200 epochs).
      bl local --workers 2 --model mlp --hidden 100 --optimizer adam --lr 0.001 --global-batch 200 --micro-batch 50 \
        --epochs 30 --eval-every 0 --metrics-port off --report "$out/anchor-30-epochs.json" ;;
    *) echo "unknown experiment: $experiment (sweep, steps-to-target, temperature, goyal, anchor, anchor-long)" >&2; exit 2 ;;
  esac
done
