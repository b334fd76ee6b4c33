#!/usr/bin/env bash
# shellcheck disable=SC2016 # the node -e programs are JavaScript, single-quoted on purpose
# Scaling efficiency of batchlab when the coordinator's link is bandwidth-limited, measured across
# Linux network namespaces (root only). The lab follows test/support/netns.ts: a private bridge
# namespace plus one namespace per host, joined by veth pairs; nothing is created in the root
# namespace. Every namespace is named `blscale-<pid>-…` and is deleted on exit.
#
#   bridge ns: br0 + one port per host (p-coord, p-w1, p-w2, …)
#   coordinator ns: eth0 10.77.0.1/24      worker ns: eth0 10.77.0.11/24, 10.77.0.12/24, …
#
# For a rate R, `tc tbf rate R` sits on BOTH directions of the coordinator's link: the egress of
# its own eth0 (weights going out) and the egress of its bridge port p-coord (gradients coming
# in), so the coordinator has one shared link of rate R each way, like a NIC. Worker links are
# unlimited. R = none: no qdisc.
#
# For each R: 1 worker at global batch B/2 (micro-batch B/2) and 2 workers at B (micro-batch B/2),
# so each worker computes one micro-batch of B/2 per step. samples/s is taken from the Chrome trace
# (--trace): B × (steps after the first --warmup steps) / (wall time from the start of the first
# such step to the end of the last). E = samples/s(2 workers, B) / (2 × samples/s(1 worker, B/2)).
# The mean step time and its phases (dispatch, gather-wait, reduce, apply: the coordinator's
# per-step phase spans) and the mean worker compute per micro-batch (the workers' compute spans)
# come from the same steps. The report's samplesPerSecond (all steps, warm-up included) is kept
# beside it for comparison.
#
# --reducers "star sharded" compares the reducers instead: for each N of --workers (default
# "2 3 4") and each repeat, one run per reducer back to back (interleaved), all at global batch B
# and micro-batch ceil(B/N), so each worker computes one micro-batch per step. tbf is on EVERY
# link then (coordinator and workers, both directions; --limit coordinator: only the
# coordinator's), and --rates defaults to 100mbit. Workers keep their default --peer-host (the
# local address of their connection to the coordinator, i.e. their eth0 address); the address
# each advertised is checked in its log. The table shows the median step (the run with the median
# samples/s among the repeats) next to the alpha-beta prediction, with S = P × bytes per value
# (P read from the coordinator's log), β = R / 8 bytes/s and the measured compute of that run:
#   sharded: 2·(N−1)/N·S/β + compute      star: 2·N·S/β + compute
# A run whose coordinator logs "falling back to the star reducer" is marked as such. A run that
# does not finish within --run-timeout seconds (default 300; 120 with --reducers) is killed,
# counted as hung in the table and the JSON (its logs stay with --keep), and that repeat is tried
# again, up to --attempts times (default 3); only with --reducers, otherwise a failed run ends
# the script.
#
# Usage: scripts/netns-scaling.sh [--rates "100mbit 300mbit 1gbit none"] [--batch 512] [--steps 30]
#          [--wire-dtype f32|f16] [--json /tmp/netns-scaling.json] [--model mlp] [--warmup 3]
#          [--repeats 1] [--burst auto] [--latency 100ms] [--no-link-check] [--link-check-only]
#          [--no-snapshot] [--keep DIR] [--reducers "star sharded"] [--workers "2 3 4"]
#          [--limit all|coordinator] [--run-timeout 120] [--attempts 3]
# --rates takes spaces or commas. --repeats N runs each point N times and keeps the run with the
# median samples/s (all rates are kept in the JSON). --burst auto = 64 KiB + 2 ms at R.
# The link check pushes 6 MB through each direction with a plain TCP socket before the runs, to
# show the rate the tbf really gives (--link-check-only: only that, no training runs).
# dist/ is copied (with package.json, node_modules symlinked) into the work dir first and every
# run uses that copy, so a rebuild of dist/ during the sweep cannot mix builds or break a run
# (--no-snapshot: run dist/ in place). BATCHLAB_CLI_JS=path runs another build in place.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLI=${BATCHLAB_CLI_JS:-$ROOT/dist/cli/batchlab.js}
[ -n "${BATCHLAB_CLI_JS:-}" ] && SNAPSHOT=0
NODE=${NODE:-$(command -v node)}

RATES="100mbit 300mbit 1gbit none"
BATCH=512
STEPS=30
WIRE=f32
JSON_OUT=/tmp/netns-scaling.json
MODEL=mlp
WARMUP=3
REPEATS=1
BURST=auto
LATENCY=100ms
LINK_CHECK=1
LINK_ONLY=0
SNAPSHOT=1
KEEP=""
PORT=7070
SUBNET=10.77.0
RUN_TIMEOUT_S=""
ATTEMPTS=3
REDUCERS=""
WORKERS="2 3 4"
LIMIT=""
RATES_GIVEN=0

usage() { sed -n '3,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "netns-scaling: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --rates) RATES=${2//,/ }; RATES_GIVEN=1; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --wire-dtype) WIRE=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --burst) BURST=$2; shift 2 ;;
    --latency) LATENCY=$2; shift 2 ;;
    --no-link-check) LINK_CHECK=0; shift ;;
    --link-check-only) LINK_ONLY=1; shift ;;
    --no-snapshot) SNAPSHOT=0; shift ;;
    --keep) KEEP=$2; shift 2 ;;
    --reducers) REDUCERS=${2//,/ }; shift 2 ;;
    --workers) WORKERS=${2//,/ }; shift 2 ;;
    --limit) LIMIT=$2; shift 2 ;;
    --run-timeout) RUN_TIMEOUT_S=$2; shift 2 ;;
    --attempts) ATTEMPTS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "needs root (ip netns, tc)"
[ -n "$NODE" ] || die "node not found"
case "$WIRE" in f32|f16) ;; *) die "--wire-dtype must be f32 or f16" ;; esac
if ! { [[ "$BATCH" =~ ^[0-9]+$ ]] && [ "$BATCH" -ge 2 ] && [ $((BATCH % 2)) = 0 ]; }; then die "--batch must be an even integer >= 2"; fi
if ! { [[ "$STEPS" =~ ^[0-9]+$ ]] && [ "$STEPS" -gt $((WARMUP + 1)) ]; }; then die "--steps must exceed --warmup + 1"; fi
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer"
HALF=$((BATCH / 2))
NWORKERS=2
if [ -n "$REDUCERS" ]; then
  for red in $REDUCERS; do case "$red" in star|sharded) ;; *) die "--reducers takes star and/or sharded" ;; esac; done
  for n in $WORKERS; do
    if ! { [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 50 ]; }; then die "--workers takes integers 1..50"; fi
    [ "$n" -gt "$NWORKERS" ] && NWORKERS=$n
  done
  [ "$RATES_GIVEN" = 1 ] || RATES=100mbit
  LIMIT=${LIMIT:-all}
  RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-120}
fi
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-300}
[[ "$RUN_TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] || die "--run-timeout must be a positive integer (seconds)"
[[ "$ATTEMPTS" =~ ^[1-9][0-9]*$ ]] || die "--attempts must be a positive integer"
LIMIT=${LIMIT:-coordinator}
case "$LIMIT" in all|coordinator) ;; *) die "--limit must be all or coordinator" ;; esac

# Children must not pick up the caller's batchlab settings.
for v in $(compgen -e); do case "$v" in BATCHLAB_*|MASTER_ADDR|MASTER_PORT) unset "$v" ;; esac; done

PREFIX="blscale-$$-"
NS_BR="${PREFIX}br"
NS_COORD="${PREFIX}coord"
NS_W=()
for ((i = 1; i <= NWORKERS; i++)); do NS_W+=("${PREFIX}w$i"); done
NAMESPACES=()
PIDS=()
if [ -n "$KEEP" ]; then WORK=$KEEP; mkdir -p "$WORK"; else WORK=$(mktemp -d /tmp/netns-scaling.XXXXXX); fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# Newest mtime (ns) of any file under dist/: a copy is consistent if it did not change meanwhile.
dist_stamp() { find "$ROOT/dist" -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -1; }

# snapshot_build: copies dist/ into $WORK/build and checks that it loads (`--version` links every
# statically imported module); retries for a few minutes while others are rebuilding.
BUILD_INFO=null
snapshot_build() {
  local attempt before after
  for attempt in $(seq 10); do
    before=$(dist_stamp)
    rm -rf "$WORK/build"; mkdir -p "$WORK/build"
    if [ -f "$ROOT/dist/cli/batchlab.js" ] && cp -a "$ROOT/dist" "$WORK/build/dist" && cp "$ROOT/package.json" "$WORK/build/"; then
      ln -s "$ROOT/node_modules" "$WORK/build/node_modules"
      after=$(dist_stamp)
      if [ "$before" = "$after" ] && sleep 2 && [ "$(dist_stamp)" = "$after" ] \
        && "$NODE" "$WORK/build/dist/cli/batchlab.js" --version >/dev/null 2>"$WORK/build/version.err"; then
        CLI=$WORK/build/dist/cli/batchlab.js
        BUILD_INFO="{\"snapshotOf\":\"$ROOT/dist\",\"newestFile\":\"$(date -u -d "@${after%.*}" +%FT%TZ)\",\"gitHead\":\"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\",\"gitDirtyFiles\":$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)}"
        log "using a copy of dist/ (newest file $(date -d "@${after%.*}" +%T)): $CLI"
        return 0
      fi
    fi
    log "dist/ is missing, changing or broken (attempt $attempt): $(head -c 300 "$WORK/build/version.err" 2>/dev/null | tr '\n' ' '); retrying in 30 s"
    sleep 30
  done
  die "no loadable build in $ROOT/dist"
}

# PIDS holds only children still running (a reaped pid may be reused by someone else's process).
untrack() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# Kills what this script started (by pid), then anything left inside its own namespaces, and
# deletes the namespaces (which removes the veths and qdiscs with them).
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]:-}"; do if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi; done
  sleep 0.3
  for pid in "${PIDS[@]:-}"; do if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi; done
  local ns i
  for ((i = ${#NAMESPACES[@]} - 1; i >= 0; i--)); do
    ns=${NAMESPACES[$i]}
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  [ -z "$KEEP" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of earlier runs of this script whose process is gone.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  if [[ "$ns" =~ ^blscale-([0-9]+)- ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    log "removed leftover namespace $ns"
  fi
done

if [ "$SNAPSHOT" = 1 ]; then snapshot_build; else [ -f "$CLI" ] || die "$CLI is missing (dist/ not built)"; fi

add_ns() {
  ip netns add "$1"
  NAMESPACES+=("$1")
  ip -n "$1" link set lo up
}

# add_host NS PORT ADDRESS: a veth pair, PORT on the bridge, eth0 in NS.
add_host() {
  add_ns "$1"
  ip -n "$NS_BR" link add name "$2" type veth peer name eth0 netns "$1"
  ip -n "$NS_BR" link set "$2" master br0
  ip -n "$NS_BR" link set "$2" up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" link set eth0 up
}

add_ns "$NS_BR"
ip -n "$NS_BR" link add name br0 type bridge
ip -n "$NS_BR" link set br0 up
add_host "$NS_COORD" p-coord "$SUBNET.1"
for ((i = 0; i < NWORKERS; i++)); do add_host "${NS_W[$i]}" "p-w$((i + 1))" "$SUBNET.$((11 + i))"; done
log "lab up: $NS_BR, $NS_COORD ($SUBNET.1), workers ${NS_W[0]}… ($SUBNET.11–$SUBNET.$((10 + NWORKERS))); work dir $WORK"

# Rate → bits per second (tc units: bit, kbit, mbit, gbit; decimal).
rate_bps() {
  local r=${1,,}
  case "$r" in
    *gbit) echo $(( ${r%gbit} * 1000000000 )) ;;
    *mbit) echo $(( ${r%mbit} * 1000000 )) ;;
    *kbit) echo $(( ${r%kbit} * 1000 )) ;;
    *bit) echo "${r%bit}" ;;
    *) die "rate $1: use NNNkbit, NNNmbit or NNNgbit (integers) or none" ;;
  esac
}

# The burst in bytes unless --burst is given (tc syntax, e.g. 140kb): one 64 KiB GSO packet plus
# 2 ms at R. With only 64 KiB the bucket never holds more than one packet and any timer slack on a
# loaded host is lost rate (measured here: 300mbit gave 180-280 Mbit/s with 64 KiB, 294-300 with
# 64 KiB + 2 ms). Each direction gets up to `burst` bytes at veth speed after an idle spell, so a
# model of one step's transfer should use (bytes - burst) / R.
burst_for() {
  if [ "$BURST" != auto ]; then echo "$BURST"; return; fi
  echo "$(( 65536 + $(rate_bps "$1") / 8 / 500 ))b"
}

# The limited links as "namespace bridge-port" pairs: the coordinator's, and with --limit all
# every worker's too.
limited_links() {
  echo "$NS_COORD p-coord"
  [ "$LIMIT" = all ] || return 0
  local i
  for ((i = 0; i < NWORKERS; i++)); do echo "${NS_W[$i]} p-w$((i + 1))"; done
}

# set_rate R: tbf on both directions of each limited link, or none.
set_rate() {
  local ns port burst
  while read -r ns port; do
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
    tc -n "$NS_BR" qdisc del dev "$port" root 2>/dev/null || true
    [ "$1" = none ] && continue
    burst=$(burst_for "$1")
    tc -n "$ns" qdisc add dev eth0 root tbf rate "$1" burst "$burst" latency "$LATENCY"
    tc -n "$NS_BR" qdisc add dev "$port" root tbf rate "$1" burst "$burst" latency "$LATENCY"
  done < <(limited_links)
}

# qdisc_json [NS PORT] → {"out":{sent,dropped,overlimits},"in":{…}} of that host's link (default:
# the coordinator's) since the qdisc was (re)set. "out" is what the host sent.
qdisc_json() {
  local ns=${1:-$NS_COORD} port=${2:-p-coord} out in
  out=$(tc -s -n "$ns" qdisc show dev eth0 | tr '\n' ' ')
  in=$(tc -s -n "$NS_BR" qdisc show dev "$port" | tr '\n' ' ')
  "$NODE" -e '
    const parse = (s) => {
      const m = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+) requeues (\d+)\)/.exec(s);
      return m ? { qdisc: s.trim().split(/\s+/).slice(0, 2).join(" "), sentBytes: +m[1], packets: +m[2], dropped: +m[3], overlimits: +m[4] } : null;
    };
    console.log(JSON.stringify({ out: parse(process.argv[1]), in: parse(process.argv[2]) }));
  ' "$out" "$in"
}

LINK_SERVER='
const net = require("node:net");
const [host, port] = process.argv.slice(1);
const server = net.createServer((s) => {
  let bytes = 0, first = 0, last = 0;
  s.on("data", (d) => { const t = process.hrtime.bigint(); if (!first) first = t; last = t; bytes += d.length; });
  s.on("end", () => {
    console.log(JSON.stringify({ bytes, mbit: (bytes * 8) / (Number(last - first) / 1e3) }));
    server.close();
  });
});
server.listen(Number(port), host, () => console.error("listening"));
'
LINK_CLIENT='
const net = require("node:net");
const [host, port, size] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) }, () => { s.end(Buffer.alloc(Number(size), 7)); });
s.on("error", (e) => { console.error(e.message); process.exit(1); });
'

# link_mbit FROM_NS TO_NS TO_ADDR: sets LINK_MBIT to the TCP goodput from FROM to TO in Mbit/s
# (receiver-side timing, first to last byte), or null.
link_mbit() {
  local out=$WORK/link.out err=$WORK/link.err
  : >"$out"; : >"$err"
  ip netns exec "$2" "$NODE" -e "$LINK_SERVER" "$3" 7100 >"$out" 2>"$err" &
  local spid=$!
  PIDS+=("$spid")
  for _ in $(seq 100); do grep -q listening "$err" && break; sleep 0.05; done
  timeout 60 ip netns exec "$1" "$NODE" -e "$LINK_CLIENT" "$3" 7100 6000000 || true
  for _ in $(seq 600); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  untrack "$spid"
  LINK_MBIT=$("$NODE" -e 'try { console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).mbit.toFixed(1)); } catch { console.log("null"); }' "$out")
}

# Summarises one run's trace and report as JSON.
ANALYZE='
const fs = require("node:fs");
const [tracePath, reportPath, batchArg, warmupArg, workersArg] = process.argv.slice(1);
const B = Number(batchArg), warmup = Number(warmupArg), workers = Number(workersArg);
const report = JSON.parse(fs.readFileSync(reportPath, "utf8"));
const events = JSON.parse(fs.readFileSync(tracePath, "utf8")).traceEvents.filter((e) => e.ph === "X");
const steps = events.filter((e) => e.cat === "step").sort((a, b) => a.ts - b.ts);
const measured = steps.filter((e) => e.args.step >= warmup);
const inMeasured = new Set(measured.map((e) => e.args.step));
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const ms = (us) => (us === null ? null : Math.round(us / 10) / 100);
const phases = {};
for (const name of new Set(["dispatch", "gather-wait", "reduce", "apply", ...events.filter((e) => e.cat === "phase").map((e) => e.name)])) {
  phases[name] = ms(mean(events.filter((e) => e.cat === "phase" && e.name === name && inMeasured.has(e.args.step)).map((e) => e.dur)));
}
const compute = events.filter((e) => e.cat === "compute" && inMeasured.has(e.args.step));
const spanUs = measured.length ? measured[measured.length - 1].ts + measured[measured.length - 1].dur - measured[0].ts : 0;
const out = {
  workers,
  globalBatch: B,
  microBatch: report.microBatchSize,
  steps: steps.length,
  measuredSteps: measured.length,
  samplesPerSecond: spanUs > 0 ? Math.round((B * measured.length) / (spanUs / 1e6) * 10) / 10 : null,
  reportSamplesPerSecond: report.samplesPerSecond === null ? null : Math.round(report.samplesPerSecond * 10) / 10,
  meanStepMs: ms(mean(measured.map((e) => e.dur))),
  medianStepMs: ms(measured.map((e) => e.dur).sort((a, b) => a - b)[Math.floor(measured.length / 2)] ?? null),
  phasesMs: phases,
  meanComputeMs: ms(mean(compute.map((e) => e.dur))),
  minWorkersPerStep: measured.length ? Math.min(...measured.map((e) => e.args.workers)) : null,
  reportSamples: report.samples,
  backend: report.backend,
};
if (report.samples !== B * steps.length) out.warning = `report says ${report.samples} samples, expected ${B * steps.length}`;
if (out.minWorkersPerStep !== null && out.minWorkersPerStep < workers) out.warning = `a measured step ran with ${out.minWorkersPerStep} of ${workers} workers`;
console.log(JSON.stringify(out));
'

# run_point N GLOBAL MICRO TAG [REDUCER]: one run; its analysis (one JSON line) goes to
# $WORK/TAG/result.json. Without REDUCER the coordinator's default is used.
run_point() {
  local n=$1 gb=$2 mb=$3 tag=$4 reducer=${5:-}
  local dir=$WORK/$tag
  local extra=()
  [ -n "$reducer" ] && extra=(--reducer "$reducer")
  mkdir -p "$dir"
  ip netns exec "$NS_COORD" "$NODE" "$CLI" coordinator --host "$SUBNET.1" --port "$PORT" --insecure \
    --model "$MODEL" --min-workers "$n" --global-batch "$gb" --micro-batch "$mb" --steps "$STEPS" \
    --eval-every 0 --metrics-port off --wire-dtype "$WIRE" --report "$dir/report.json" --trace "$dir/trace.json" \
    "${extra[@]}" >"$dir/coordinator.log" 2>&1 &
  local cpid=$!
  PIDS+=("$cpid")
  local i
  for i in $(seq 600); do
    grep -q "listening on" "$dir/coordinator.log" && break
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "listening on" "$dir/coordinator.log" || { log "coordinator did not start:"; tail -20 "$dir/coordinator.log" >&2; return 1; }
  local wpids=()
  for ((i = 0; i < n; i++)); do
    ip netns exec "${NS_W[$i]}" "$NODE" "$CLI" worker --connect "ws://$SUBNET.1:$PORT" --name "w$((i + 1))" --metrics-port off \
      >"$dir/worker$((i + 1)).log" 2>&1 &
    wpids+=($!)
    PIDS+=($!)
  done
  local waited=0
  while kill -0 "$cpid" 2>/dev/null; do
    sleep 0.2
    waited=$((waited + 1))
    if [ "$waited" -gt $((RUN_TIMEOUT_S * 5)) ]; then log "$tag: coordinator still running after ${RUN_TIMEOUT_S}s, killing it"; kill -KILL "$cpid" 2>/dev/null || true; fi
  done
  local rc=0
  wait "$cpid" || rc=$?
  untrack "$cpid"
  local pid
  for pid in "${wpids[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
  done
  if [ "$rc" != 0 ] || [ ! -f "$dir/trace.json" ] || [ ! -f "$dir/report.json" ]; then
    log "$tag: coordinator exited with $rc; last lines:"; tail -20 "$dir/coordinator.log" >&2; return 1
  fi
  "$NODE" -e "$ANALYZE" "$dir/trace.json" "$dir/report.json" "$gb" "$WARMUP" "$n" >"$dir/result.json"
}

# median_run FILE...: the line (JSON) with the median samplesPerSecond, plus all the rates.
median_run() {
  "$NODE" -e '
    const runs = process.argv.slice(1).map((l) => JSON.parse(l));
    const sorted = [...runs].sort((a, b) => a.samplesPerSecond - b.samplesPerSecond);
    const pick = sorted[Math.floor((sorted.length - 1) / 2)];
    console.log(JSON.stringify({ ...pick, allSamplesPerSecond: runs.map((r) => r.samplesPerSecond) }));
  ' "$@"
}

# with_extras RESULT_JSON TAG: the run's result plus its reducer, parameter count (from the
# coordinator's log), whether it fell back to the star reducer, the addresses the workers'
# peer servers advertised, and the tbf counters of the coordinator's and worker 1's links.
with_extras() {
  local dir=$WORK/$2 reducer=$3 coord=null w1=null
  if [ "$RATE_NOW" != none ]; then coord=$(qdisc_json); [ "$LIMIT" = all ] && w1=$(qdisc_json "${NS_W[0]}" p-w1); fi
  "$NODE" -e '
    const fs = require("node:fs");
    const [result, dir, reducer, coord, w1] = process.argv.slice(1);
    const r = JSON.parse(result);
    const log = fs.readFileSync(`${dir}/coordinator.log`, "utf8");
    const params = /\(([\d,]+) parameters\)/.exec(log);
    r.reducer = reducer;
    r.params = params ? Number(params[1].replace(/,/g, "")) : null;
    r.fellBack = /falling back to the star reducer/.test(log);
    r.advertised = fs.readdirSync(dir).filter((f) => /^worker\d+\.log$/.test(f)).sort()
      .map((f) => (/advertised as (\S+)/.exec(fs.readFileSync(`${dir}/${f}`, "utf8")) ?? [])[1] ?? null);
    r.qdisc = { coordinator: JSON.parse(coord), worker1: JSON.parse(w1) };
    console.log(JSON.stringify(r));
  ' "$(cat "$dir/result.json")" "$dir" "$reducer" "$coord" "$w1"
}

# The reducer comparison (--reducers): per rate, N and repeat, one run of each reducer in turn.
compare_reducers() {
  local rate n r red mb tag rows=() runs
  log "reducers $REDUCERS, workers $WORKERS, model $MODEL, B=$BATCH (micro-batch ceil(B/N)), $STEPS steps ($WARMUP warm-up), wire $WIRE, rates: $RATES, tbf on $LIMIT link(s), latency $LATENCY, burst $BURST, repeats $REPEATS"
  log "$NWORKERS workers + coordinator share $(nproc) cores"
  for rate in $RATES; do
    [ "$rate" = none ] || rate_bps "$rate" >/dev/null
    RATE_NOW=$rate
    set_rate "$rate"
    local out_mbit=null in_mbit=null peer_mbit=null
    if [ "$LINK_CHECK" = 1 ]; then
      link_mbit "$NS_COORD" "${NS_W[0]}" "$SUBNET.11"; out_mbit=$LINK_MBIT
      link_mbit "${NS_W[0]}" "$NS_COORD" "$SUBNET.1"; in_mbit=$LINK_MBIT
      link_mbit "${NS_W[0]}" "${NS_W[1]}" "$SUBNET.12"; peer_mbit=$LINK_MBIT
      log "  link check (TCP, 6 MB): coordinator→w1 $out_mbit, w1→coordinator $in_mbit, w1→w2 $peer_mbit Mbit/s"
    fi
    [ "$LINK_ONLY" = 1 ] && continue
    local burst=none
    [ "$rate" = none ] || burst=$(burst_for "$rate")
    for n in $WORKERS; do
      mb=$(( (BATCH + n - 1) / n ))
      declare -A picked=()
      declare -A failed=()
      for red in $REDUCERS; do picked[$red]=""; failed[$red]=""; done
      for ((r = 1; r <= REPEATS; r++)); do
        for red in $REDUCERS; do
          local attempt ok=0
          for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
            tag="${rate}-N$n-$red-r$r"
            [ "$attempt" = 1 ] || tag+="-a$attempt"
            set_rate "$rate"   # fresh counters per run
            if run_point "$n" "$BATCH" "$mb" "$tag" "$red"; then ok=1; break; fi
            failed[$red]+="$tag "
            log "  N=$n $red r$r: run $tag failed (last coordinator line: $(tail -1 "$WORK/$tag/coordinator.log" 2>/dev/null)); $( [ "$attempt" -lt "$ATTEMPTS" ] && echo "trying again" || echo "giving up on this repeat")"
          done
          [ "$ok" = 1 ] || continue
          with_extras "$(cat "$WORK/$tag/result.json")" "$tag" "$red" >"$WORK/$tag/extended.json"
          picked[$red]+="$(cat "$WORK/$tag/extended.json")"$'\n'
          log "  N=$n $red r$r: $("$NODE" -e 'const r=JSON.parse(process.argv[1]);console.log(`median step ${r.medianStepMs} ms, mean ${r.meanStepMs} ms, compute ${r.meanComputeMs} ms, ${r.samplesPerSecond} samples/s${r.fellBack ? ", FELL BACK TO STAR" : ""}, peers ${r.advertised.join(" ")}`)' "$(cat "$WORK/$tag/extended.json")")"
        done
      done
      for red in $REDUCERS; do
        runs=()
        [ -z "${picked[$red]}" ] || mapfile -t runs < <(printf '%s' "${picked[$red]}")
        rows+=("$("$NODE" -e '
          const [rate, n, red, mb, failedTags, outMbit, inMbit, peerMbit, limit, latency, burst, build, ...runs] = process.argv.slice(1);
          const all = runs.map((l) => JSON.parse(l));
          const pick = all.length ? [...all].sort((a, b) => a.samplesPerSecond - b.samplesPerSecond)[Math.floor((all.length - 1) / 2)]
            : { workers: Number(n), reducer: red, microBatch: Number(mb), medianStepMs: null, meanComputeMs: null, params: null, qdisc: {} };
          const failed = failedTags.split(" ").filter(Boolean);
          console.log(JSON.stringify({ rate, limit, tbf: rate === "none" ? null : { rate, burst, latency },
            linkCheckMbit: { coordinatorToWorker: JSON.parse(outMbit), workerToCoordinator: JSON.parse(inMbit), workerToWorker: JSON.parse(peerMbit) },
            ...pick, allMedianStepMs: all.map((x) => x.medianStepMs), allSamplesPerSecond: all.map((x) => x.samplesPerSecond),
            failedRuns: failed.length, failedTags: failed, build: JSON.parse(build) }));
        ' "$rate" "$n" "$red" "$mb" "${failed[$red]}" "$out_mbit" "$in_mbit" "$peer_mbit" "$LIMIT" "$LATENCY" "$burst" "$BUILD_INFO" "${runs[@]}")")
      done
      unset picked failed
    done
  done
  [ "$LINK_ONLY" = 1 ] && return 0
  mkdir -p "$(dirname "$JSON_OUT")"
  "$NODE" -e '
    const fs = require("node:fs");
    const [path, wireArg, ...rows] = process.argv.slice(1);
    const bytesPerValue = wireArg === "f16" ? 2 : 4;
    const results = rows.map((r) => JSON.parse(r));
    const P = results.find((r) => r.params)?.params ?? null;
    for (const r of results) r.params ??= P;
    const bps = (rate) => { const m = /^(\d+)(g|m|k|)bit$/i.exec(rate); return m ? Number(m[1]) * { g: 1e9, m: 1e6, k: 1e3, "": 1 }[m[2].toLowerCase()] : null; };
    for (const r of results) {
      const S = r.params * bytesPerValue, beta = bps(r.rate) === null ? null : bps(r.rate) / 8, n = r.workers, c = r.meanComputeMs / 1000;
      const comm = beta === null || S === 0 ? null : (r.reducer === "sharded" ? (2 * (n - 1) / n) * S : 2 * n * S) / beta;
      const predicted = comm === null || r.meanComputeMs === null ? null : comm + c;
      r.model = { bytesPerStepS: S, betaBytesPerSecond: beta, communicationSeconds: comm, computeSeconds: r.meanComputeMs === null ? null : c,
        predictedStepSeconds: predicted, formula: r.reducer === "sharded" ? "2(N-1)/N*S/beta + compute" : "2*N*S/beta + compute" };
      r.measuredOverPredicted = predicted === null || r.medianStepMs === null ? null : r.medianStepMs / 1000 / predicted;
    }
    fs.writeFileSync(path, JSON.stringify(results, null, 2) + "\n");
    const f = (x, d = 1) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
    const perStep = (q, r) => (q && r.steps ? f(q.sentBytes / r.steps / 1e6, 2) : "—");
    const head = ["rate", "N", "reducer", "mb", "runs ok/hung", "median step s", "predicted s", "meas/pred", "compute ms", "comm model s", "star/sharded", "coord out/in MB/step", "w1 out/in MB/step", "note"];
    const table = results.map((r) => {
      const other = results.find((o) => o.rate === r.rate && o.workers === r.workers && o.reducer === "star");
      return [r.rate, String(r.workers), r.reducer, String(r.microBatch), `${r.allMedianStepMs.length}/${r.failedRuns}`, f(r.medianStepMs === null ? null : r.medianStepMs / 1000, 3), f(r.model.predictedStepSeconds, 3), f(r.measuredOverPredicted, 2),
        f(r.meanComputeMs), f(r.model.communicationSeconds, 3), r.reducer === "sharded" && other && other.medianStepMs && r.medianStepMs ? f(other.medianStepMs / r.medianStepMs, 2) : "",
        `${perStep(r.qdisc.coordinator?.out, r)}/${perStep(r.qdisc.coordinator?.in, r)}`, `${perStep(r.qdisc.worker1?.out, r)}/${perStep(r.qdisc.worker1?.in, r)}`,
        [r.fellBack ? "FELL BACK TO STAR" : "", r.failedRuns ? `hung/failed: ${r.failedTags.join(" ")}` : "", r.warning ?? ""].filter(Boolean).join("; ")];
    });
    const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
    const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
    console.log(line(head));
    for (const r of table) console.log(line(r));
    const r0 = results[0];
    console.log(`\nS = ${P} params × ${bytesPerValue} B = ${(P * bytesPerValue / 1e6).toFixed(3)} MB; β = rate/8; compute = mean compute span of the run; step = median of steps >= ${r0.warmupSteps ?? "warm-up"} of the run with the median samples/s. MB/step: tbf byte counters / all steps (warm-up and the first weights included).`);
    for (const rate of [...new Set(results.map((r) => r.rate))]) {
      const sh = results.filter((r) => r.rate === rate && r.reducer === "sharded");
      const measured = sh.filter((r) => r.measuredOverPredicted !== null);
      if (!measured.length) continue;
      const worst = Math.max(...measured.map((r) => r.measuredOverPredicted));
      const missing = sh.filter((r) => r.measuredOverPredicted === null).map((r) => r.workers);
      console.log(`${rate}: sharded within 1.5× of its prediction at every N: ${worst <= 1.5 && !missing.length ? "yes" : "NO"} (worst ${worst.toFixed(2)}×${missing.length ? `; no finished run at N = ${missing.join(", ")}` : ""})`);
      const hung = sh.reduce((k, r) => k + r.failedRuns, 0);
      if (hung) console.log(`${rate}: ${hung} sharded run(s) hung or failed and were retried: ${sh.flatMap((r) => r.failedTags).join(" ")}`);
      const nMax = Math.max(...sh.map((r) => r.workers));
      const s = sh.find((r) => r.workers === nMax), st = results.find((r) => r.rate === rate && r.reducer === "star" && r.workers === nMax);
      if (s && st && s.medianStepMs && st.medianStepMs) console.log(`${rate}: at N = ${nMax} the sharded step is ${(st.medianStepMs / s.medianStepMs).toFixed(2)}× shorter than the star (target >= 2.5×): ${st.medianStepMs / s.medianStepMs >= 2.5 ? "yes" : "NO"}`);
    }
    console.log(`JSON: ${path}`);
  ' "$JSON_OUT" "$WIRE" "${rows[@]}"
}

if [ -n "$REDUCERS" ]; then compare_reducers; exit 0; fi

log "model $MODEL, B=$BATCH (micro-batch $HALF), $STEPS steps ($WARMUP warm-up), wire $WIRE, rates: $RATES, tbf latency $LATENCY, burst $BURST, repeats $REPEATS"
log "backend/dataset chosen by the coordinator are in each run's log; 2 workers + coordinator share $(nproc) cores"

RESULTS=()
for rate in $RATES; do
  [ "$rate" = none ] || rate_bps "$rate" >/dev/null
  set_rate "$rate"
  qdisc_desc=none
  [ "$rate" = none ] || qdisc_desc=$(tc -n "$NS_COORD" qdisc show dev eth0 | head -1)
  log "rate $rate: $qdisc_desc"
  out_mbit=null; in_mbit=null
  if [ "$LINK_CHECK" = 1 ]; then
    link_mbit "$NS_COORD" "${NS_W[0]}" "$SUBNET.11"; out_mbit=$LINK_MBIT
    link_mbit "${NS_W[0]}" "$NS_COORD" "$SUBNET.1"; in_mbit=$LINK_MBIT
    log "  link check (TCP, 6 MB): coordinator→worker $out_mbit Mbit/s, worker→coordinator $in_mbit Mbit/s"
  fi
  [ "$LINK_ONLY" = 1 ] && continue
  ones=(); twos=(); qdisc1=(); qdisc2=()
  for ((r = 1; r <= REPEATS; r++)); do
    tag="${rate}-B${BATCH}-${WIRE}-r$r"
    [ "$rate" = none ] || set_rate "$rate"   # fresh counters per run
    run_point 1 "$HALF" "$HALF" "$tag-1w" || die "run $tag-1w failed (rerun with --keep DIR to keep the logs)"
    one=$(cat "$WORK/$tag-1w/result.json")
    if [ "$rate" = none ]; then qdisc1+=(null); else qdisc1+=("$(qdisc_json)"); fi
    log "  1 worker  B=$HALF: $(echo "$one" | "$NODE" -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(`${r.samplesPerSecond} samples/s (report ${r.reportSamplesPerSecond}), step ${r.meanStepMs} ms, compute ${r.meanComputeMs} ms`)')"
    [ "$rate" = none ] || set_rate "$rate"
    run_point 2 "$BATCH" "$HALF" "$tag-2w" || die "run $tag-2w failed (rerun with --keep DIR to keep the logs)"
    two=$(cat "$WORK/$tag-2w/result.json")
    if [ "$rate" = none ]; then qdisc2+=(null); else qdisc2+=("$(qdisc_json)"); fi
    log "  2 workers B=$BATCH: $(echo "$two" | "$NODE" -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(`${r.samplesPerSecond} samples/s (report ${r.reportSamplesPerSecond}), step ${r.meanStepMs} ms, compute ${r.meanComputeMs} ms`)')"
    ones+=("$(echo "$one" | "$NODE" -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));r.qdisc=JSON.parse(process.argv[1]);console.log(JSON.stringify(r))' "${qdisc1[-1]}")")
    twos+=("$(echo "$two" | "$NODE" -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));r.qdisc=JSON.parse(process.argv[1]);console.log(JSON.stringify(r))' "${qdisc2[-1]}")")
  done
  one=$(median_run "${ones[@]}")
  two=$(median_run "${twos[@]}")
  burst=null
  [ "$rate" = none ] || burst="\"$(burst_for "$rate")\""
  RESULTS+=("$("$NODE" -e '
    const [rate, batch, model, wire, steps, warmup, latency, burst, outMbit, inMbit, one, two, build] = process.argv.slice(1);
    const o = JSON.parse(one), t = JSON.parse(two);
    const e = o.samplesPerSecond && t.samplesPerSecond ? t.samplesPerSecond / (2 * o.samplesPerSecond) : null;
    const eReport = o.reportSamplesPerSecond && t.reportSamplesPerSecond ? t.reportSamplesPerSecond / (2 * o.reportSamplesPerSecond) : null;
    console.log(JSON.stringify({
      rate, globalBatch: Number(batch), microBatch: Number(batch) / 2, model, wireDtype: wire, steps: Number(steps), warmupSteps: Number(warmup),
      tbf: rate === "none" ? null : { rate, burst: JSON.parse(burst), latency },
      linkCheckMbit: { coordinatorToWorker: JSON.parse(outMbit), workerToCoordinator: JSON.parse(inMbit) },
      samplesPerSecondSource: "trace",
      oneWorker: o, twoWorkers: t,
      efficiency: e === null ? null : Math.round(e * 1000) / 1000,
      efficiencyFromReport: eReport === null ? null : Math.round(eReport * 1000) / 1000,
      build: JSON.parse(build),
    }));
  ' "$rate" "$BATCH" "$MODEL" "$WIRE" "$STEPS" "$WARMUP" "$LATENCY" "$burst" "$out_mbit" "$in_mbit" "$one" "$two" "$BUILD_INFO")")
done

[ "$LINK_ONLY" = 1 ] && exit 0
mkdir -p "$(dirname "$JSON_OUT")"
"$NODE" -e '
  const fs = require("node:fs");
  const [path, ...rows] = process.argv.slice(1);
  const results = rows.map((r) => JSON.parse(r));
  fs.writeFileSync(path, JSON.stringify(results, null, 2) + "\n");
  const f = (x, d = 1) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
  const ph = (p) => ["dispatch", "gather-wait", "reduce", "apply"].map((k) => f(p[k])).join("/");
  const head = ["rate", "B", "wire", "link out/in Mbit/s", "1w samples/s", "2w samples/s", "E", "E(report)", "1w step ms", "2w step ms", "1w disp/gather/red/apply ms", "2w disp/gather/red/apply ms", "1w/2w compute ms"];
  const rows2 = results.map((r) => [
    r.rate, String(r.globalBatch), r.wireDtype,
    `${f(r.linkCheckMbit.coordinatorToWorker, 0)}/${f(r.linkCheckMbit.workerToCoordinator, 0)}`,
    f(r.oneWorker.samplesPerSecond, 0), f(r.twoWorkers.samplesPerSecond, 0), f(r.efficiency, 3), f(r.efficiencyFromReport, 3),
    f(r.oneWorker.meanStepMs), f(r.twoWorkers.meanStepMs), ph(r.oneWorker.phasesMs), ph(r.twoWorkers.phasesMs),
    `${f(r.oneWorker.meanComputeMs)}/${f(r.twoWorkers.meanComputeMs)}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows2.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  console.log(line(head));
  for (const r of rows2) console.log(line(r));
  for (const r of results) for (const w of [r.oneWorker, r.twoWorkers]) if (w.warning) console.log(`warning (${r.rate}, ${w.workers} worker(s)): ${w.warning}`);
  console.log(`\nsamples/s from the trace (steps >= ${results[0]?.warmupSteps}: B × steps / their wall span); E(report) uses the report samplesPerSecond (all steps). E = 2w / (2 × 1w). JSON: ${path}`);
' "$JSON_OUT" "${RESULTS[@]}"
