#!/usr/bin/env bash
# Static inference across cores (issue 12's 16-core check), in one run of a few minutes: the one-call
# limit (one predict_proba over every row, all cores), then `augury batch` with 1, 2, 4, 8 and 16 workers
# (one output file, and a prediction dataset folder), and the Dask engine on a LocalCluster of 16 workers,
# each in a fresh child process with its peak PSS (whole process tree) and each process's share at the
# peak. Made for a machine with 16 or more cores. The summary at the end gives each run's rows/s over the
# limit's, the scaling from the first worker count after 1 to the last (against linear), and the peak per
# worker beside the driver's, against the issue's targets (>= 1.25x the limit at 16 workers, >= 0.75 of
# linear from 2 to 16, <= 150 MB a worker plus the driver).
#
#   bash benchmarks/batch_scaling.sh              # 4,000,000 rows, workers 1 2 4 8 16
#   ROWS=1000000 bash benchmarks/batch_scaling.sh 2 4
#   PYTHON=/path/to/venv/bin/python bash benchmarks/batch_scaling.sh
#
# Results: one JSON per step in ${OUT:-benchmarks/results/tmp/batch-scaling}, each step's table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"
out="${OUT:-benchmarks/results/tmp/batch-scaling}"
rows="${ROWS:-4000000}"
mkdir -p "$out"
rm -f "$out"/*.json
[ "$#" -gt 0 ] || set -- 1 2 4 8 16
echo "== $(nproc) cores, $rows rows; $("$py" -c 'import sys, sklearn, pyarrow; print("Python", sys.version.split()[0], "scikit-learn", sklearn.__version__, "pyarrow", pyarrow.__version__)')"
"$py" benchmarks/batch_bench.py --rows "$rows" --modes limit --out "$out/limit.json" | grep -E '^\|'
for w in "$@"; do
  echo "== $w worker(s)"
  "$py" benchmarks/batch_bench.py --rows "$rows" --modes augury,augury-dataset --workers "$w" --by-process \
    --out "$out/w$w.json" | grep -E '^\| augury'
done
last="${*: -1}"
echo "== Dask engine, $last workers"
"$py" benchmarks/batch_bench.py --rows "$rows" --modes augury-dask --workers "$last" --by-process \
  --out "$out/dask.json" | grep -E '^\| augury'
"$py" - "$out" "$@" <<'EOF'
import json, re, sys
from pathlib import Path

out, counts = Path(sys.argv[1]), [int(w) for w in sys.argv[2:]]
limit = json.loads((out / "limit.json").read_text())[0]["rows_per_s"]
runs = [(w, r) for w in counts for r in json.loads((out / f"w{w}.json").read_text())]
runs += [(counts[-1], r) for r in json.loads((out / "dask.json").read_text())]
print(f"\n| workers | mode | rows/s | x limit | peak PSS (MB) | driver at the peak | largest worker |")
print("|---:|---|---:|---:|---:|---:|---:|")
for w, r in runs:
    driver = re.search(r"driver (\d+)", r["at_peak_mb"])
    workers = [int(x) for x in re.findall(r"worker (\d+)", r["at_peak_mb"])]
    print(f"| {w} | {r['mode']} | {r['rows_per_s']:,} | {r['rows_per_s'] / limit:.2f} | {r['peak_pss_mb']:,} "
          f"| {driver.group(1) if driver else '-'} | {max(workers, default=0)} |")
speed = {(w, r["mode"]): r["rows_per_s"] for w, r in runs}
many = [w for w in counts if w > 1]
if len(many) >= 2:
    lo, hi = many[0], many[-1]
    for mode in ("augury", "augury-dataset"):
        got = speed[(hi, mode)] / speed[(lo, mode)]
        print(f"{mode}: {lo} -> {hi} workers {got:.2f}x = {got / (hi / lo):.2f} of linear (target >= 0.75); "
              f"at {hi}: {speed[(hi, mode)] / limit:.2f}x the limit (target >= 1.25 at 16)")
EOF
