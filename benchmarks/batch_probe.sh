#!/usr/bin/env bash
# How a dynamic server batches under wrk: one `augury serve --model` worker on the http_bench workload
# (built under /tmp/augury-bench/http by `python benchmarks/inproc_bench.py dynamic --n 1000` or
# http_bench.py), wrk -t1 with N connections for 5 s after 2 s of warm-up, and from the server's own
# /metrics (augury_batch_rows) and /proc: requests/s, p99, server cores, CPU per request, batches per
# second and requests per batch. Extra arguments go to `augury serve`.
#
#   bash benchmarks/batch_probe.sh 32                          # 32 connections, default settings
#   bash benchmarks/batch_probe.sh 32 --inline-below-ms 0      # the model always on its own thread
#
# Needs wrk on PATH; the model is the workload's one-row-per-request HistGradientBoosting (20 floats).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-32}; shift || true
work=/tmp/augury-bench/http
port=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
url="http://127.0.0.1:$port"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 BODY_FILE="$work/body_v1.json"
python -c "from augury.cli import main; main()" serve --model "$work/hgb20.joblib" --port "$port" "$@" \
  >/tmp/batch_probe_server.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
get() { python -c "import sys, urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode())" "$1"; }
for _ in $(seq 150); do get "$url/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done
load() { wrk -t1 -c"$conns" -d"$1"s --latency -s benchmarks/wrk/post.lua "$url/v1/models/hgb20:predict"; }
batches() { get "$url/metrics" | awk '/^augury_batch_rows_count/{c=$2} /^augury_batch_rows_sum/{s=$2} END{print c, s}'; }
load 2 >/dev/null
read -r c0 _ < <(batches)
t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
out=$(load 5)
t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
read -r c1 _ < <(batches)
rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
p99=$(awk '/ 99%/{print $2}' <<<"$out")
python - "$rps" "$p99" "$t0" "$t1" "$c0" "$c1" "$conns" "$(getconf CLK_TCK)" <<'PY'
import sys
rps, p99 = float(sys.argv[1]), sys.argv[2]
t0, t1, c0, c1, conns, tck = (float(v) for v in sys.argv[3:])
cores = (t1 - t0) / tck / 5
batches = (c1 - c0) / 5
print(f"connections {conns:.0f}: {rps:,.0f} requests/s, p99 {p99}, server cores {cores:.2f}, "
      f"CPU {cores / rps * 1e6:.1f} us per request, {batches:,.0f} batches/s, "
      f"{rps / batches if batches else 0:.1f} requests per batch")
PY
