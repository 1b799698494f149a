#!/usr/bin/env bash
# Serving across cores: augury's dynamic and static servers beside the bare endpoints with the SAME number
# of worker processes, at 1, 2, 4 and 8 workers, in one run of a few minutes. Made for a machine with 16 or
# more cores (on 2 cores, wrk and the servers share them and the figures say little). Each step runs
# `http_bench.py` with `--workers W`, wrk with min(W, 4) threads and 32 x W connections, so every worker
# process sees about as many concurrent clients as the one-process benchmark's. Needs wrk on PATH.
#
#   bash benchmarks/scaling_bench.sh            # workers 1 2 4 8
#   bash benchmarks/scaling_bench.sh 1 8 16     # other worker counts
#
# Results: one JSON per step in ${OUT:-benchmarks/results/tmp/scaling}, and each step's table on stdout;
# the ratio to read is "x bare" (augury at W workers / the bare endpoint at W workers).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/tmp/scaling}"
mkdir -p "$out"
[ "$#" -gt 0 ] || set -- 1 2 4 8
for w in "$@"; do
  threads=$(( w < 4 ? w : 4 ))
  echo "== $w worker(s): wrk -t$threads -c$(( 32 * w ))"
  python benchmarks/http_bench.py --systems bare,bare_get,dynamic,static --workers "$w" \
    --wrk-threads "$threads" --connections $(( 32 * w )) --duration 8 --rounds 1 --out "$out/w$w.json" \
    | grep -E '^\| |^wrk '
done
