#!/usr/bin/env bash
# Static inference across cores (issue 12's 16-core check), in one run of a few minutes: the one-call
# limit (one predict_proba over every row, all cores), then `augury batch` with 1, 2, 4, 8 and 16 workers
# (one output file, and a prediction dataset folder), and the Dask engine on a LocalCluster of 16 workers,
# each in a fresh child process with its peak PSS (whole process tree). Made for a machine with 16 or more
# cores; ratios are each figure's rows/s over the limit's in the same run.
#
#   bash benchmarks/batch_scaling.sh              # 4,000,000 rows, workers 1 2 4 8 16
#   ROWS=1000000 bash benchmarks/batch_scaling.sh 2 4
#
# Results: one JSON per step in ${OUT:-benchmarks/results/tmp/batch-scaling}, each step's table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/tmp/batch-scaling}"
rows="${ROWS:-4000000}"
mkdir -p "$out"
[ "$#" -gt 0 ] || set -- 1 2 4 8 16
python benchmarks/batch_bench.py --rows "$rows" --modes limit --out "$out/limit.json" | grep -E '^\|'
for w in "$@"; do
  echo "== $w worker(s)"
  python benchmarks/batch_bench.py --rows "$rows" --modes augury,augury-dataset --workers "$w" \
    --out "$out/w$w.json" | grep -E '^\| augury'
done
last="${*: -1}"
echo "== Dask, $last workers"
python benchmarks/batch_bench.py --rows "$rows" --modes augury-dask --workers "$last" --out "$out/dask.json" \
  | grep -E '^\| augury'
