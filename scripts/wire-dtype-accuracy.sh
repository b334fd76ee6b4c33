#!/usr/bin/env bash
# The accuracy effect of --wire-dtype f16: the same runs (2 workers, full Fashion-MNIST, Adam,
# B = 128) with float32 and float16 frames, for several seeds; prints final loss and test
# accuracy per run and the mean difference. Usage: scripts/wire-dtype-accuracy.sh [STEPS] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1000}
shift || true
seeds=("${@:-1 2 3}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-6s %-5s %12s %14s\n' seed wire 'final loss' 'test accuracy'
for seed in ${seeds[@]}; do
  for wire in f32 f16; do
    node dist/cli/batchlab.js local --workers 2 --global-batch 128 --steps "$steps" --optimizer adam --lr 0.001 \
      --seed "$seed" --eval-every 0 --metrics-port off --wire-dtype "$wire" --report "$out/$seed-$wire.json" >/dev/null 2>&1
    node -e 'const r=require(process.argv[1]); console.log([process.argv[2], process.argv[3], r.finalLoss.toFixed(4), (r.evalAccuracy*100).toFixed(2)+"%"].map((v,i)=>i<2?String(v).padEnd(i?5:6):String(v).padStart(i==2?12:14)).join(" "))' "$out/$seed-$wire.json" "$seed" "$wire"
  done
done
node -e '
const fs=require("fs"); const dir=process.argv[1]; const seeds=process.argv.slice(2);
const d=seeds.map(s=>JSON.parse(fs.readFileSync(`${dir}/${s}-f16.json`)).evalAccuracy-JSON.parse(fs.readFileSync(`${dir}/${s}-f32.json`)).evalAccuracy);
const mean=d.reduce((a,b)=>a+b,0)/d.length;
console.log(`mean accuracy change f16 - f32: ${(mean*100).toFixed(2)} points over ${d.length} seeds (per seed: ${d.map(x=>(x*100).toFixed(2)).join(", ")})`);
' "$out" ${seeds[@]}
