#!/usr/bin/env python3
"""Batch scoring: augury's `run_batch` beside the one-call limit, on the same file, in one run.

Workload (the issue's): 5,000,000 rows x 20 float64 features (make_classification, random_state=1,
250,000-row row groups) and a HistGradientBoostingClassifier with 100 iterations trained on 200k rows.

Modes, each in a fresh child process; the driver samples the PSS of the child's whole process tree
every 50 ms for the peak (PSS: forked workers' shared pages counted once):
  limit   read the whole file, ONE predict_proba call on all rows, write p0/p1 to Parquet
  augury  run_batch(model, file, out) with the defaults (every core, hash keys, label + probabilities);
          augury-processes / augury-threads force an engine; augury-compiled / augury-library force
          the evaluator (`--evaluator`; the default, auto, is the compiled one where numba is installed);
          augury-dataset writes a prediction dataset folder (`-o out/`) instead of one file;
          augury-dask runs the tasks on a Dask LocalCluster of --workers processes (`--engine dask`,
          the cluster's start included); augury-dask-running on one started before the clock starts
          (`--scheduler`: an existing cluster; its workers still load the model)
  dask-map  the plain-Dask baseline: a LocalCluster of --workers processes (one thread each, its start
          included), dd.read_parquet(file).map_partitions(predict_proba).to_parquet(folder)
rows/s = rows / seconds from the start of reading to the output written (imports excluded).

Run:  python benchmarks/batch_bench.py                 # makes data and model under /tmp/augury-bench once
      python benchmarks/batch_bench.py --rows 1000000  # a smaller file (separate data file)
      python benchmarks/batch_bench.py --workers 2 --by-process  # where the peak is: each process's PSS
                                                       # at the tree's peak, and its libllvmlite share
      python benchmarks/batch_bench.py --input-format csv  # the same rows as a CSV file (made once)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path("/tmp/augury-bench")


def make_inputs(rows: int) -> tuple[Path, Path]:
    import joblib
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    ROOT.mkdir(parents=True, exist_ok=True)
    data, model = ROOT / f"batch_{rows}.parquet", ROOT / "hgb100.joblib"
    if not model.exists():
        X, y = make_classification(
            n_samples=200_000, n_features=20, n_informative=10, n_redundant=5, random_state=0
        )
        joblib.dump(HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X, y), model)
    if not data.exists():
        X, _ = make_classification(
            n_samples=rows, n_features=20, n_informative=10, n_redundant=5, random_state=1
        )
        pq.write_table(
            pa.table({f"f{i}": X[:, i] for i in range(20)}),
            data,
            row_group_size=250_000,
            compression="snappy",
        )
        del X
        _ = np
    return data, model


def as_csv(data: Path) -> Path:
    """`data` written as CSV beside it, once."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv = data.with_suffix(".csv")
    if not csv.exists():
        tmp = csv.with_suffix(".csv.tmp")
        with pacsv.CSVWriter(tmp, pq.read_schema(data)) as writer:
            for batch in pq.ParquetFile(data).iter_batches(batch_size=65_536):
                writer.write_batch(batch)
        tmp.rename(csv)
    return csv


def child(mode: str, data: str, model: str, out: str, workers: int | None) -> None:
    if mode == "limit":
        import joblib
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        clf = joblib.load(model)
        t0 = time.perf_counter()
        if data.endswith(".csv"):
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(data)
        else:
            table = pq.read_table(data)
        X = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
        del table
        P = clf.predict_proba(X)
        pq.write_table(pa.table({"p0": P[:, 0], "p1": P[:, 1]}), out)
        seconds = time.perf_counter() - t0
        rows = len(X)
    elif mode == "dask-map":
        rows, seconds = dask_map(data, model, out, workers or os.cpu_count() or 1)
    elif mode == "augury-dask-running":
        from distributed import LocalCluster

        from augury.batch import BatchOptions, run_batch

        env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, env=env,
                          dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"}) as cluster:
            t0 = time.perf_counter()
            options = BatchOptions(engine="dask", scheduler=cluster.scheduler_address, workers=workers)
            result = run_batch(model, data, out, options)
            seconds, rows = time.perf_counter() - t0, result.rows
    else:
        from augury.batch import BatchOptions, run_batch

        t0 = time.perf_counter()
        option = mode.split("-", 1)[1] if "-" in mode else "auto"
        evaluator = option if option in ("compiled", "library") else "auto"
        engine = option if option in ("processes", "threads", "dask") else "auto"
        options = BatchOptions(engine=engine, evaluator=evaluator, workers=workers)
        if option == "dataset":  # -o folder/: a prediction dataset, parts and a manifest, no merge
            out = str(Path(out).with_suffix("")) + "/"
        result = run_batch(model, data, out, options)
        seconds, rows = time.perf_counter() - t0, result.rows
    print("RESULT " + json.dumps({"mode": mode, "rows": rows, "seconds": seconds}), flush=True)


def dask_map(data: str, model: str, out: str, workers: int) -> tuple[int, float]:
    """The plain-Dask baseline; returns (rows, seconds)."""
    import dask.dataframe as dd
    import joblib
    import pandas as pd
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    def proba(part: pd.DataFrame, clf: object) -> pd.DataFrame:
        p = clf.predict_proba(part.to_numpy())  # type: ignore[attr-defined]
        return pd.DataFrame({"p0": p[:, 0], "p1": p[:, 1]}, index=part.index)

    t0 = time.perf_counter()
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, env=env,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
            Client(cluster):
        clf = joblib.load(model)
        frame = dd.read_parquet(data)
        result = frame.map_partitions(proba, clf, meta={"p0": "f8", "p1": "f8"})
        result.to_parquet(str(Path(out).with_suffix("")) + "-dask/", write_index=False)
        seconds = time.perf_counter() - t0
    return pq.ParquetFile(data).metadata.num_rows, seconds


def tree_pss(pid: int, by_process: bool = False) -> tuple[int, list[str]]:
    """Memory of the process tree: PSS summed (shared pages counted once, split between sharers); with
    `by_process`, each process's PSS and the part of it in libllvmlite (numba's compiler), in MB."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, []
    total = 0
    parts: list[str] = []
    for q in procs:
        with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            if not by_process:
                total += q.memory_full_info().pss
                continue
            pss = llvm = 0
            mapping = ""
            with open(f"/proc/{q.pid}/smaps") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        kb = int(line.split()[1])
                        pss += kb
                        llvm += kb if "libllvmlite" in mapping else 0
                    elif not line[0].isupper():  # a mapping's first line: address range ... path
                        fields = line.split()
                        mapping = fields[5] if len(fields) > 5 else ""
            total += pss * 1024
            role = "driver" if q.pid == pid else "worker"
            parts.append(f"{role} {pss // 1024} (llvm {llvm // 1024})")
    return total, parts


def run_mode(mode: str, data: Path, model: Path, workers: int | None,
             by_process: bool) -> dict[str, float | str]:
    out = ROOT / f"out_{mode}.parquet"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(data), str(model), str(out), str(workers or 0)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    at_peak: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, at_peak
        while not stop.is_set():
            total, parts = tree_pss(proc.pid, by_process)
            if total > peak:
                peak, at_peak = total, parts
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    stdout, _ = proc.communicate()
    stop.set()
    t.join()
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    r = json.loads(line[len("RESULT ") :])
    return {
        "mode": mode,
        "rows": r["rows"],
        "seconds": round(r["seconds"], 2),
        "rows_per_s": round(r["rows"] / r["seconds"]),
        "peak_pss_mb": round(peak / 2**20),
        "at_peak_mb": ", ".join(at_peak),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--modes", default="limit,augury")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--input-format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--workers", type=int, default=None, help="augury's --workers (default: every core)")
    ap.add_argument("--by-process", action="store_true",
                    help="also each process's PSS at the peak, and its libllvmlite part (slower sampling)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--child", nargs=5, metavar=("MODE", "DATA", "MODEL", "OUT", "WORKERS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, data_path, model_path, out, workers = args.child
        child(mode, data_path, model_path, out, int(workers) or None)
        return
    data, model = make_inputs(args.rows)
    if args.input_format == "csv":
        data = as_csv(data)
    results = [run_mode(m, data, model, args.workers, args.by_process)
               for _ in range(args.rounds) for m in args.modes.split(",")]
    limit = max((r["rows_per_s"] for r in results if r["mode"] == "limit"), default=None)
    print(
        f"\n{args.rows:,} rows x 20 float features, HistGradientBoostingClassifier(100), "
        f"{os.cpu_count()} cores\n"
    )
    print("| mode | seconds | rows/s | x limit | peak PSS (MB) |\n|---|---:|---:|---:|---:|")
    for r in results:
        ratio = f"{float(r['rows_per_s']) / float(limit):.2f}" if limit else "-"
        print(f"| {r['mode']} | {r['seconds']} | {r['rows_per_s']:,} | {ratio} | {r['peak_pss_mb']:,} |"
              + (f" {r['at_peak_mb']} |" if args.by_process else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
