"""Prediction store benchmark: bulk publish throughput and in-process lookup latency.

Data like a binary classifier's: `key` (32 hex digits), `computed_at` (timestamp[us, UTC]), `label`
(string) and two float probabilities, published in batches of 65,536 rows.

Measures, in one run:
- publish rows/s into SQLite (a fresh file) and into memory, for `--rows` rows (default 1M), and into
  SQLite through a publish handle (`begin_publish`, a `write` per batch, `commit`; one writer);
- lookup latency for 1 key and for 100 keys (p50/p99 µs, per call with perf_counter_ns, random keys,
  after a warm-up) for a plain dict (the floor), the memory store and the SQLite store (with its default
  read snapshots, and with ``snapshot_s=0``: one implicit read transaction per lookup);
- single-key SQLite lookups with read snapshots on and off, readers with and without ``mmap_size``, each
  both back to back ("isolated") and "interleaved": ~200 KB of other memory written between two lookups,
  as a server's request handling evicts the CPU caches (in-process timings flatter a store otherwise);
- the cost of noticing a switch (``PRAGMA data_version``) against reading the pointer row.
With `--variants`, also raw SQLite load layouts (no augury code) to justify the one the store uses.
With `--redis URL` (or `--redis local`: a private redis-server started for the run on a free loopback
port, no persistence), the Redis store in the same run: publish rows/s with one writer and with
`--redis-writers` processes writing parts of one publish (`join_publish`), lookup latency for 1 and 100
keys from the client (a round trip each), and memory per stored prediction (MEMORY USAGE of sampled
keys, and the server's used_memory before and after one publish, per row).

With `--dataset`, instead of all that: `augury publish` from a prediction dataset folder (`--parts` parts
of the same rows, with the metadata `augury batch` writes; key column `id`; `--as-file`: one Parquet
file of `--parts` row groups) through
`publish_predictions`, end to end (the gates, then the load) and the load alone, for each writer count
of `--dataset-writers` (1: one stream; more: `augury.publish_pool`), into a fresh SQLite file and, with
`--redis`, into Redis.

    python benchmarks/store_bench.py --rows 1000000 --out store_bench.json
    python benchmarks/store_bench.py --rows 1000000 --redis local --redis-writers 2
    python benchmarks/store_bench.py --dataset --rows 1000000 --parts 16 --dataset-writers 1,2,4 --redis local
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from redis_local import local_redis

from augury.store import MemoryStore, SQLiteStore, sqlite
from augury.store.sqlite import DEFAULT_SNAPSHOT_S

BATCH_ROWS = 65_536

#: what "interleaved" lookups write between two calls: 25,000 float64, 200 KB.
INTERLEAVE_BYTES = 200_000
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def make_batches(n: int, seed: int = 0) -> list[pa.RecordBatch]:
    """`n` classifier predictions as record batches of BATCH_ROWS rows."""
    rng = np.random.default_rng(seed)
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16)
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 15]
    keys = pa.array(hexed.view("S32").ravel().astype(str))
    p1 = rng.random(n)
    table = pa.table(
        {
            "key": keys,
            "computed_at": pa.array(
                np.full(n, 1_700_000_000_000_000, dtype="datetime64[us]"), pa.timestamp("us", tz="UTC")
            ),
            "label": pa.array(np.where(p1 > 0.5, "yes", "no")),
            "proba_no": 1.0 - p1,
            "proba_yes": p1,
        }
    )
    batches: list[pa.RecordBatch] = table.to_batches(max_chunksize=BATCH_ROWS)
    return batches


def _fresh_db(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    return path


def bench_publish(
    store_factory: Callable[[], Any], batches: list[pa.RecordBatch], repeat: int, parts: bool = False
) -> dict[str, Any]:
    rows = sum(b.num_rows for b in batches)
    seconds = []
    for _ in range(repeat):
        store = store_factory()
        start = time.perf_counter()
        if parts:  # one writer through a publish handle: begin, a write per batch, commit
            handle = store.begin_publish(model_version="bench")
            for batch in batches:
                handle.write(batch)
            handle.commit()
        else:
            store.publish(batches, model_version="bench")
        seconds.append(time.perf_counter() - start)
        store.close()
    best = min(seconds)
    return {
        "rows": rows,
        "seconds": [round(s, 3) for s in seconds],
        "best_rows_per_s": round(rows / best),
        "median_rows_per_s": round(rows / statistics.median(seconds)),
    }


def bench_lookup(
    fn: Callable[[Sequence[str]], Any],
    keys: list[str],
    per_call: int,
    calls: int,
    seed: int = 1,
    between: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """p50/p99/mean latency in µs of `fn(k random keys)`, one perf_counter_ns pair per call; `between`,
    if given, runs before each call, untimed."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(keys), size=(calls + calls // 10, per_call))
    lists = [[keys[i] for i in row] for row in picks]
    for ks in lists[calls:]:  # warm-up
        fn(ks)
    timings = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        ks = lists[i]
        if between is not None:
            between()
        t0 = clock()
        fn(ks)
        timings[i] = clock() - t0
    us = timings / 1000.0
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "mean_us": round(float(us.mean()), 2),
    }


def bench_single_key(path: str, keys: list[str], calls: int) -> dict[str, dict[str, float]]:
    """Single-key lookups on the store at `path`: read snapshots on/off x reader mmap on/off x isolated or
    interleaved with INTERLEAVE_BYTES of other memory written between calls."""
    junk = np.ones(INTERLEAVE_BYTES // 8)

    def scribble() -> None:
        np.add(junk, 1.0, out=junk)

    out: dict[str, dict[str, float]] = {}
    default_mmap = sqlite.READER_MMAP_BYTES
    try:
        for mmap_bytes in (default_mmap, 0):
            sqlite.READER_MMAP_BYTES = mmap_bytes  # read when a reader connects
            for snapshot_s in (DEFAULT_SNAPSHOT_S, 0.0):
                store = SQLiteStore(path, snapshot_s=snapshot_s)
                name = f"snapshots {'on' if snapshot_s else 'off'}, mmap {'on' if mmap_bytes else 'off'}"
                for mode, between in (("isolated", None), ("interleaved", scribble)):
                    out[f"{name}, {mode}"] = bench_lookup(store.get_many, keys, 1, calls, between=between)
                store.close()
    finally:
        sqlite.READER_MMAP_BYTES = default_mmap
    return out


def bench_switch_check(path: str, calls: int = 20_000) -> dict[str, float]:
    """What noticing a switch costs per lookup: PRAGMA data_version against reading the pointer row."""
    con = sqlite3.connect(path, isolation_level=None)
    out = {}
    for name, sql in (
        ("data_version_us", "PRAGMA data_version"),
        ("pointer_row_us", "SELECT active FROM augury_pointer WHERE id = 1"),
    ):
        for _ in range(1000):
            con.execute(sql).fetchone()
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            con.execute(sql).fetchone()
        out[name] = round((time.perf_counter_ns() - t0) / calls / 1000, 3)
    con.close()
    return out


def bench_variants(batches: list[pa.RecordBatch], folder: str) -> dict[str, dict[str, float]]:
    """Raw SQLite load layouts for the same rows (keys + one 32-byte blob), one transaction each."""
    table = pa.Table.from_batches(batches)
    keys: list[str] = table.column("key").to_pylist()
    blobs = [os.urandom(32) for _ in keys]
    n = len(keys)
    out: dict[str, dict[str, float]] = {}

    def load(name: str, ddl: str, rows_per_stmt: int, sort: bool, index: bool) -> None:
        path = _fresh_db(folder, f"variant-{name}.db")
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute(ddl)
        start = time.perf_counter()
        ks, bs = keys, blobs
        if sort:
            pairs = sorted(zip(keys, blobs, strict=True))
            ks, bs = [k for k, _ in pairs], [b for _, b in pairs]
        con.execute("BEGIN IMMEDIATE")
        if rows_per_stmt == 1:
            con.executemany("INSERT INTO t VALUES (?,?)", zip(ks, bs, strict=True))
        else:
            full = n - n % rows_per_stmt
            flat: list[Any] = [None] * (2 * full)
            flat[0::2], flat[1::2] = ks[:full], bs[:full]
            sql = "INSERT INTO t VALUES " + ",".join(["(?,?)"] * rows_per_stmt)
            step = 2 * rows_per_stmt
            con.executemany(sql, [flat[i : i + step] for i in range(0, 2 * full, step)])
            con.executemany("INSERT INTO t VALUES (?,?)", zip(ks[full:], bs[full:], strict=True))
        if index:
            con.execute("CREATE UNIQUE INDEX t_key ON t (key)")
        con.execute("COMMIT")
        seconds = time.perf_counter() - start
        con.close()
        out[name] = {"seconds": round(seconds, 3), "rows_per_s": round(n / seconds)}

    rowid = "CREATE TABLE t (key TEXT, v BLOB)"
    wr = "CREATE TABLE t (key TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID"
    load("without_rowid_random_1row", wr, 1, False, False)
    load("without_rowid_sorted_1row", wr, 1, True, False)
    load("without_rowid_sorted_128rows", wr, 128, True, False)
    load("rowid_index_after_1row", rowid, 1, False, True)
    load("rowid_index_after_128rows", rowid, 128, False, True)
    out.update(bench_merge(keys, blobs, folder, 2))
    return out


def bench_merge(keys: list[str], blobs: list[bytes], folder: str, parts: int) -> dict[str, dict[str, float]]:
    """Parts written to separate files, then merged into one (what parallel SQLite writers could do
    instead of queueing for one write transaction): each part file written (one after another here; in
    parallel they would take the longest one's time), then the serial merge (ATTACH, INSERT ... SELECT
    per part, the unique key index, COMMIT)."""
    n = len(keys)
    step = -(-n // parts)
    part_s = []
    sql = "INSERT INTO t VALUES " + ",".join(["(?,?)"] * 128)
    for i in range(parts):
        con = sqlite3.connect(_fresh_db(folder, f"part-{i}.db"), isolation_level=None)
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("CREATE TABLE t (key TEXT, v BLOB)")
        ks, bs = keys[i * step:(i + 1) * step], blobs[i * step:(i + 1) * step]
        start = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        full = len(ks) - len(ks) % 128
        flat: list[Any] = [None] * (2 * full)
        flat[0::2], flat[1::2] = ks[:full], bs[:full]
        con.executemany(sql, [flat[j : j + 256] for j in range(0, 2 * full, 256)])
        con.executemany("INSERT INTO t VALUES (?,?)", zip(ks[full:], bs[full:], strict=True))
        con.execute("COMMIT")
        part_s.append(time.perf_counter() - start)
        con.close()
    con = sqlite3.connect(_fresh_db(folder, "merged.db"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE t (key TEXT, v BLOB)")
    for i in range(parts):
        con.execute(f"ATTACH DATABASE ? AS p{i}", (os.path.join(folder, f"part-{i}.db"),))
    start = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    for i in range(parts):
        con.execute(f"INSERT INTO t SELECT key, v FROM p{i}.t")
    copied = time.perf_counter()
    con.execute("CREATE UNIQUE INDEX t_key ON t (key)")
    con.execute("COMMIT")
    merge = time.perf_counter() - start
    con.close()
    ideal = max(part_s) + merge

    def row(seconds: float, rows: int) -> dict[str, float]:
        return {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}

    return {f"{parts}_part_files_each": row(max(part_s), step),
            f"{parts}_part_files_merge_copy": row(copied - start, n),
            f"{parts}_part_files_merge_total": row(merge, n),
            f"{parts}_part_files_parallel_ideal": row(ideal, n)}


#: the key prefix of the parallel publish (its own store in the same database).
PARALLEL_PREFIX = "parallel"


def _write_part(url: str, version: str, rows: int, part: int, parts: int, ready: Any, go: Any,
                done: Any) -> None:
    """A writer process: its share of the batches (every `parts`-th), into the publish `version`; puts
    the monotonic time it finished in `done` (a process's exit is not part of the publish)."""
    from augury.store.redis_store import RedisStore

    batches = make_batches(rows)[part::parts]
    store = RedisStore(url, prefix=PARALLEL_PREFIX)
    handle = store.join_publish(version)
    ready.release()
    go.wait()
    for batch in batches:
        handle.write(batch)
    done.put(time.monotonic())
    store.close()


def bench_redis_parallel(url: str, rows: int, writers: int) -> dict[str, Any]:
    """One publish written by `writers` processes (batches generated before the clock starts)."""
    from augury.store.redis_store import RedisStore

    store = RedisStore(url, prefix=PARALLEL_PREFIX)
    handle = store.begin_publish(model_version="bench")
    ctx = multiprocessing.get_context("spawn")
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_write_part, args=(url, handle.version, rows, i, writers, ready, go, done))
             for i in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=600):
            raise SystemExit(f"a writer did not get ready (exit codes {[p.exitcode for p in procs]})")
    start = time.monotonic()
    go.set()
    finished = max(done.get(timeout=600) for _ in procs)
    handle.commit()
    seconds = max(finished, time.monotonic()) - start
    for p in procs:
        p.join()
    info = store.active()
    assert info is not None and info.row_count == rows, info
    store.gc(keep=0)
    store.close()
    return {"rows": rows, "writers": writers, "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds)}


def make_dataset(batches: list[pa.RecordBatch], folder: Path, parts: int, as_file: bool = False) -> Path:
    """The rows of `batches` as a prediction dataset of `parts` parts, as `augury batch -o` writes one:
    key column `id`, the outputs, `model_version` and `computed_at`, the augury metadata, a manifest.
    `as_file`: one Parquet file of `parts` row groups instead (`augury batch -o preds.parquet`)."""
    from augury.batch import dataset

    table = pa.Table.from_batches(batches).rename_columns(["id", "computed_at", "label", "proba_no",
                                                            "proba_yes"])
    table = table.append_column("model_version", pa.array(["bench"] * table.num_rows))
    meta = {"model": {"name": "bench", "version": "bench", "task": "classification", "classes": ["no", "yes"],
                      "outputs": [{"name": n} for n in ("label", "proba_no", "proba_yes")]},
            "key_columns": ["id"], "key_kind": "columns"}
    table = table.replace_schema_metadata({b"augury": json.dumps(meta).encode()})
    step = -(-table.num_rows // parts)
    if as_file:
        path = folder.with_suffix(".parquet")
        pq.write_table(table, path, row_group_size=step)
        return path
    folder.mkdir(parents=True)
    names = []
    for i in range(parts):
        names.append(f"part-{i:05d}.parquet")
        pq.write_table(table.slice(i * step, step), folder / names[-1])
    dataset.commit(folder, names, {"bench": True})
    return folder


def bench_dataset_publish(folder: Path, fresh: Callable[[], Any], writers: Sequence[int],
                          repeat: int) -> dict[str, Any]:
    """`publish_predictions(folder, ...)` into a `fresh()` store with each writer count: end to end (the
    gates, then the load) and the load alone (`PublishResult.load_s`), best and median of `repeat`."""
    from augury.publish import publish_predictions
    from augury.verify import Checks

    out: dict[str, Any] = {}
    for w in writers:
        totals, loads, verifies = [], [], []
        for _ in range(repeat):
            store = fresh()
            start = time.perf_counter()
            result = publish_predictions(folder, store, Checks(), writers=w)
            totals.append(time.perf_counter() - start)
            loads.append(result.load_s)
            verifies.append(result.verify_s)
            rows = result.version.row_count
            assert result.writers == w, (result.writers, w)
            store.close()
        out[str(w)] = {"rows": rows, "writers": w, "total_s": [round(t, 3) for t in totals],
                       "load_s": [round(t, 3) for t in loads], "verify_s": [round(t, 3) for t in verifies],
                       "best_total_rows_per_s": round(rows / min(totals)),
                       "best_load_rows_per_s": round(rows / min(loads)),
                       "median_load_rows_per_s": round(rows / statistics.median(loads))}
    return out


def run_dataset(args: argparse.Namespace, batches: list[pa.RecordBatch], results: dict[str, Any]) -> None:
    writers = [int(w) for w in args.dataset_writers.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = make_dataset(batches, Path(tmp) / "preds", args.parts, args.as_file)
        del batches[:]  # (the writers fork from this process: keep it small)
        results["dataset"] = {"parts": args.parts, "as_file": args.as_file, "publish": {}}
        got = results["dataset"]["publish"]
        got["sqlite"] = bench_dataset_publish(
            folder, lambda: SQLiteStore(_fresh_db(tmp, "bench.db")), writers, args.repeat)
        if args.redis:
            from augury.store.redis_store import RedisStore

            def redis_at(url: str) -> Callable[[], Any]:
                def fresh() -> RedisStore:
                    store = RedisStore(url)
                    store.client.flushall()
                    return store
                return fresh

            if args.redis == "local":
                with local_redis() as url:
                    got["redis"] = bench_dataset_publish(folder, redis_at(url), writers, args.repeat)
            else:
                got["redis"] = bench_dataset_publish(folder, redis_at(args.redis), writers, args.repeat)


def redis_memory(url: str, batches: list[pa.RecordBatch], keys: list[str]) -> dict[str, float]:
    """Bytes per stored prediction: MEMORY USAGE of 2,000 sampled keys, and used_memory per row of a
    publish into an otherwise empty database."""
    import redis

    from augury.store.redis_store import RedisStore

    client = redis.Redis.from_url(url)
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    store = RedisStore(url)
    info = store.publish(batches, model_version="bench")
    after = int(client.info("memory")["used_memory"])
    rng = np.random.default_rng(2)
    sample = [keys[i] for i in rng.integers(0, len(keys), 2_000)]
    ns = store.keys.namespace(info.version)
    usage = [client.memory_usage(ns + k, samples=0) or 0 for k in sample]
    store.close()
    client.close()
    return {"memory_usage_bytes": round(float(np.mean(usage)), 1),
            "used_memory_bytes_per_row": round((after - before) / len(keys), 1)}


def bench_redis(url: str, batches: list[pa.RecordBatch], keys: list[str], args: argparse.Namespace,
                results: dict[str, Any]) -> None:
    """The Redis store's publish, lookups and memory, into `results` beside the other backends."""
    from augury.store.redis_store import RedisStore

    def fresh() -> RedisStore:
        store = RedisStore(url)
        store.client.flushall()
        return store

    results["publish"]["redis"] = bench_publish(fresh, batches, args.repeat)
    if args.redis_writers > 1:
        fresh().close()
        results["publish"][f"redis, {args.redis_writers} writers"] = bench_redis_parallel(
            url, args.rows, args.redis_writers)
    results["redis_memory"] = redis_memory(url, batches, keys)
    store = RedisStore(url)
    results["lookup"]["redis"] = {"1_key": bench_lookup(store.get_many, keys, 1, args.calls),
                                  "100_keys": bench_lookup(store.get_many, keys, 100, args.calls_100)}
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="publishes per backend (best and median)")
    parser.add_argument("--calls", type=int, default=20_000, help="timed single-key lookups")
    parser.add_argument("--calls-100", type=int, default=5_000, help="timed 100-key lookups")
    parser.add_argument("--variants", action="store_true", help="also time raw SQLite load layouts")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--redis", default=None,
                        help="a Redis URL (its database is flushed!), or 'local' for a private server")
    parser.add_argument("--redis-writers", type=int, default=2,
                        help="processes of the parallel Redis publish")
    parser.add_argument("--dataset", action="store_true",
                        help="only the publish from a prediction dataset folder (see above)")
    parser.add_argument("--parts", type=int, default=16, help="the dataset's parts (--dataset)")
    parser.add_argument("--dataset-writers", default="1,2,4", help="writer counts to time (--dataset)")
    parser.add_argument("--as-file", action="store_true",
                        help="--dataset: one Parquet file of --parts row groups instead of a folder")
    args = parser.parse_args(argv)

    batches = make_batches(args.rows)
    if args.dataset:
        results = {"rows": args.rows, "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
                   "machine": platform.machine(), "cpus": os.cpu_count()}
        run_dataset(args, batches, results)
        print(markdown_dataset(results))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    keys: list[str] = pa.Table.from_batches(batches).column("key").to_pylist()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = os.path.join(folder, "bench.db")
        results: dict[str, Any] = {
            "rows": args.rows,
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
        results["publish"] = {
            "sqlite": bench_publish(lambda: SQLiteStore(_fresh_db(folder, "bench.db")), batches, args.repeat),
            "memory": bench_publish(MemoryStore, batches, 1),
            "sqlite, in parts (1 writer)": bench_publish(lambda: SQLiteStore(_fresh_db(folder, "bench.db")),
                                                         batches, args.repeat, parts=True),
        }
        memory = MemoryStore()
        memory.publish(batches, model_version="bench")
        sqlite_store = SQLiteStore(path)
        sqlite_store.publish(batches, model_version="bench")
        unsnapshotted = SQLiteStore(path, snapshot_s=0)
        floor = {k: (1, "yes", 0.5, 0.5) for k in keys}

        def dict_floor(ks: Sequence[str]) -> list[Any]:
            return [floor.get(k) for k in ks]

        lookups: dict[str, Any] = {}
        backends = (
            ("dict", dict_floor),
            ("memory", memory.get_many),
            ("sqlite", sqlite_store.get_many),
            ("sqlite, snapshot_s=0", unsnapshotted.get_many),
        )
        for name, fn in backends:
            lookups[name] = {
                "1_key": bench_lookup(fn, keys, 1, args.calls),
                "100_keys": bench_lookup(fn, keys, 100, args.calls_100),
            }
        results["lookup"] = lookups
        unsnapshotted.close()
        sqlite_store.close()
        results["single_key"] = bench_single_key(path, keys, args.calls)
        results["switch_check"] = bench_switch_check(path)
        if args.variants:
            results["sqlite_load_variants"] = bench_variants(batches, folder)
        if args.redis == "local":
            with local_redis() as url:
                bench_redis(url, batches, keys, args, results)
        elif args.redis:
            bench_redis(args.redis, batches, keys, args, results)
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def markdown_dataset(r: dict[str, Any]) -> str:
    lines = [
        f"### publish from a {'file' if r['dataset'].get('as_file') else 'dataset'}: {r['rows']:,} rows in "
        f"{r['dataset']['parts']} {'row groups' if r['dataset'].get('as_file') else 'parts'}, Python "
        f"{r['python']}, SQLite {r['sqlite']}, {r['cpus']} CPUs",
        "",
        "| store | writers | load rows/s (best) | load rows/s (median) | end to end rows/s (best) | "
        "load s | verify s |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for store, by_writers in r["dataset"]["publish"].items():
        for w, p in by_writers.items():
            lines.append(f"| {store} | {w} | {p['best_load_rows_per_s']:,} | "
                         f"{p['median_load_rows_per_s']:,} | {p['best_total_rows_per_s']:,} | "
                         f"{p['load_s']} | {p['verify_s']} |")
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"### store benchmark: {r['rows']:,} rows, Python {r['python']}, SQLite {r['sqlite']}, "
        f"{r['cpus']} CPUs",
        "",
        "| publish | best rows/s | median rows/s | seconds |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, p in r["publish"].items():
        if "writers" in p:
            lines.append(f"| {name} | {p['rows_per_s']:,} | | {p['seconds']} |")
            continue
        lines.append(f"| {name} | {p['best_rows_per_s']:,} | {p['median_rows_per_s']:,} | {p['seconds']} |")
    lines += [
        "",
        "| lookup | 1 key p50 µs | 1 key p99 µs | 100 keys p50 µs | 100 keys p99 µs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, lk in r["lookup"].items():
        one, hundred = lk["1_key"], lk["100_keys"]
        lines.append(
            f"| {name} | {one['p50_us']} | {one['p99_us']} | {hundred['p50_us']} | {hundred['p99_us']} |"
        )
    lines += [
        "",
        "| SQLite, 1 key | p50 µs | p99 µs | mean µs |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, one in r["single_key"].items():
        lines.append(f"| {name} | {one['p50_us']} | {one['p99_us']} | {one['mean_us']} |")
    if "redis_memory" in r:
        m = r["redis_memory"]
        lines += ["", f"Redis memory per stored prediction: MEMORY USAGE {m['memory_usage_bytes']} bytes, "
                      f"used_memory {m['used_memory_bytes_per_row']} bytes per row"]
    sc = r["switch_check"]
    lines += [
        "",
        f"switch check per call: PRAGMA data_version {sc['data_version_us']} µs, "
        f"pointer row {sc['pointer_row_us']} µs",
    ]
    if "sqlite_load_variants" in r:
        lines += ["", "| raw SQLite load layout | rows/s | seconds |", "| --- | ---: | ---: |"]
        for name, v in r["sqlite_load_variants"].items():
            lines.append(f"| {name} | {v['rows_per_s']:,} | {v['seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
