"""`augury demo`: augury end to end, on a model trained here from data that ships with scikit-learn (no
download). Train, batch-predict a catalogue, verify, publish to SQLite, read keys back, publish a retrained
model's predictions and roll back, then serve hybrid over HTTP (known examples from the store, new ones
computed) and show where every answer came from, printing what happened at each step.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augury import console
from augury.batch import BatchOptions, run_batch
from augury.errors import AuguryError, MissingExtraError, VerificationFailed
from augury.publish import publish_predictions
from augury.store import open_store
from augury.verify import load_checks


def _step(n: int, text: str) -> None:
    console.out.print(f"\n[bold cyan]{n}.[/] [bold]{text}[/]")


def _train(workdir: Path, seed: int, version: str) -> Path:
    try:
        import joblib
        from sklearn.datasets import load_wine
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:
        raise MissingExtraError("the demo", "demo", "scikit-learn") from exc
    data = load_wine()
    names = [n.replace("/", "_") for n in data.feature_names]
    import pandas as pd

    X = pd.DataFrame(data.data, columns=names)
    clf = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1, random_state=seed).fit(
        X, data.target
    )
    path = workdir / f"wine-{version}.joblib"
    joblib.dump(clf, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # the manifest says which file it describes
    path.with_name(f"wine-{version}.augury.toml").write_text(
        f'file = "{path.name}"\nsha256 = "{digest}"\nname = "wine"\nversion = "{version}"\n')
    return path


def _catalogue(workdir: Path, rows: int) -> Path:
    from sklearn.datasets import load_wine

    data = load_wine()
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(data.data), size=rows)
    X = data.data[pick] * (1 + rng.normal(scale=0.03, size=(rows, data.data.shape[1])))
    names = [n.replace("/", "_") for n in data.feature_names]
    table = pa.table(
        {"wine_id": [f"w{i:07d}" for i in range(rows)], **{n: X[:, j] for j, n in enumerate(names)}}
    )
    path = workdir / "catalogue.parquet"
    pq.write_table(table, path, row_group_size=50_000)
    return path


def _golden(workdir: Path, model_path: Path, catalogue: Path) -> Path:
    """A golden set: a few catalogue examples with the labels a reviewer signed off on."""
    import joblib
    import pandas as pd

    sample = pq.read_table(catalogue).slice(0, 25).to_pandas()
    clf = joblib.load(model_path)
    expected = clf.predict(sample.drop(columns=["wine_id"]).astype(float))
    path = workdir / "golden.parquet"
    pq.write_table(
        pa.Table.from_pandas(
            pd.DataFrame({"wine_id": sample["wine_id"], "label": expected}), preserve_index=False
        ),
        path,
    )
    (workdir / "checks.toml").write_text(
        '[golden]\npath = "golden.parquet"\nmin_agreement = 1.0\n\n[drift]\npsi_max = 0.25\n'
    )
    return path


def run_demo(workdir: Path, rows: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for old in ("store.db", "store.db-wal", "store.db-shm"):
        (workdir / old).unlink(missing_ok=True)
    console.out.print(f"[bold]augury demo[/]: static inference end to end, in {workdir}/")

    _step(1, "Train a model (HistGradientBoosting on scikit-learn's wine data) and a catalogue to score")
    model_v1 = _train(workdir, seed=0, version="1")
    catalogue = _catalogue(workdir, rows)
    _golden(workdir, model_v1, catalogue)
    console.out.print(
        f"model {model_v1.name}, catalogue {catalogue.name} ({rows:,} rows, key wine_id), "
        f"golden set of 25 reviewed examples"
    )

    _step(2, "Batch-predict the catalogue: augury batch")
    preds = workdir / "predictions-v1.parquet"
    with console.ProgressReporter("scoring") as progress:
        result = run_batch(
            str(model_v1), catalogue, preds, BatchOptions(key_columns=("wine_id",)), on_progress=progress
        )
    console.out.print(
        f"{result.rows:,} rows scored in {result.seconds:.1f}s ({result.rows_per_s:,.0f} rows/s) "
        f"on {result.workers} worker(s), {result.failed} failed -> {preds.name}"
    )

    store_url = f"sqlite:///{workdir / 'store.db'}"
    checks = load_checks(workdir / "checks.toml")
    store = open_store(store_url)
    try:
        _step(3, "Verify and publish: augury publish (the gates run first)")
        published = publish_predictions(preds, store, checks)
        console.out.print(published.report.render())
        console.out.print(f"published store version [bold]{published.version.version}[/] and activated it")

        _step(4, "Read predictions back by key: augury store get")
        keys = ["w0000000", "w0000001", "w0000002", "w9999999"]
        t0 = time.perf_counter_ns()
        hits = store.get_many(keys)
        micros = (time.perf_counter_ns() - t0) / 1000
        rows_out = []
        for key, hit in zip(keys, hits, strict=True):
            if hit is None:
                rows_out.append((key, "(miss: never precomputed)", "", "", "", ""))
                continue
            probs = {k: v for k, v in hit.values.items() if k.startswith("proba_")}
            best = max(probs.values()) if probs else float("nan")
            p = hit.provenance()
            rows_out.append(
                (key, hit.values["label"], f"{best:.3f}", p["source"], p["store_version"], p["computed_at"])
            )
        console.out.print(
            console.table(
                f"4 keys in {micros:.0f} µs",
                ["key", "label", "confidence", "source", "store version", "computed at"],
                rows_out,
            )
        )

        _step(5, "A retrained model: batch, verify against the active version (drift), publish")
        model_v2 = _train(workdir, seed=1, version="2")
        preds2 = workdir / "predictions-v2.parquet"
        run_batch(str(model_v2), catalogue, preds2, BatchOptions(key_columns=("wine_id",)))
        try:
            v2 = publish_predictions(preds2, store, checks)
            console.out.print(v2.report.render())
            console.out.print(f"published store version [bold]{v2.version.version}[/]")
        except VerificationFailed as exc:
            console.out.print(exc.report.render())  # type: ignore[attr-defined]
            console.out.print(f"[yellow]{exc}[/]")

        _step(6, "Versions, and a rollback")
        store.rollback()
        console.out.print(
            console.table(
                "store versions",
                ["version", "active", "rows", "model version"],
                [
                    (v.version, "*" if v.active else "", f"{v.row_count:,}", v.model_version)
                    for v in store.versions()
                ],
            )
        )
    finally:
        store.close()

    _step(
        7,
        "Serve hybrid: augury serve --model wine-1.joblib --store ... (known keys from the store, "
        "new examples computed)",
    )
    _serve_and_ask(workdir, model_v1, store_url, catalogue)

    _step(8, "Which mode fits? augury advise, on this model and a day of (synthetic) traffic")
    log = _traffic_log(workdir, rows)
    from augury.advise import advise

    advice = advise(
        str(model_v1),
        catalogue,
        key_columns=("wine_id",),
        traffic=log,
        qps=500,
        latency_slo_ms=50,
        max_staleness_s=86_400,
        budget_s=8,
    )
    console.out.print(advice.render())
    console.out.print(
        f"\nDone. Try: augury store get w0000000 --store {store_url}\n"
        f"      augury serve --model {model_v1} --store {store_url}"
    )


def _serve_and_ask(workdir: Path, model: Path, store_url: str, catalogue: Path) -> None:
    """Start a real `augury serve` process, send it known and new examples, show where answers came from."""
    port = _free_port()
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "augury.cli",
            "serve",
            "--model",
            str(model),
            "--store",
            store_url,
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        rows = pq.read_table(catalogue).slice(0, 3).to_pylist()
        features = {k: v for k, v in rows[2].items() if k != "wine_id"}
        novel = {k: v * 1.07 for k, v in features.items()}
        asks = [
            ("key w0000000 (lookup)", {"key": "w0000000"}),
            (
                "key w0000001 + features",
                {"key": "w0000001", **{k: v for k, v in rows[1].items() if k != "wine_id"}},
            ),
            ("a new example", novel),
            ("another new example", {k: v * 0.95 for k, v in features.items()}),
        ]
        table_rows = []
        for label, instance in asks:
            t0 = time.perf_counter()
            answer = _post(f"{base}/v1/models/wine:predict", {"instances": [instance]})
            ms = (time.perf_counter() - t0) * 1000
            pred, prov = answer["predictions"][0], answer["provenance"][0]
            age = prov.get("age_s")
            table_rows.append(
                (
                    label,
                    pred["label"],
                    prov["source"],
                    prov["model_version"],
                    prov.get("store_version") or "-",
                    f"{age:.0f}s" if age is not None else "fresh",
                    f"{ms:.1f} ms",
                )
            )
        console.out.print(
            console.table(
                f"answers from {base}",
                ["request", "label", "source", "model version", "store version", "age", "latency"],
                table_rows,
            )
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _traffic_log(workdir: Path, rows: int) -> Path:
    """Requests by key: Zipf-like over the catalogue (a few wines are asked for often), 15 % for new ids."""
    rng = np.random.default_rng(11)
    n = 100_000
    ranks = np.minimum(rng.zipf(1.3, size=n), rows) - 1
    ids = np.array([f"w{r:07d}" for r in ranks], dtype=object)
    new = rng.random(n) < 0.15
    ids[new] = [f"new{i:07d}" for i in range(int(new.sum()))]
    ts = np.datetime64("2026-11-24T00:00:00") + np.sort(rng.integers(0, 86_400_000, size=n)).astype(
        "timedelta64[ms]"
    )
    path = workdir / "traffic.parquet"
    pq.write_table(pa.table({"wine_id": ids.astype(str), "timestamp": ts}), path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AuguryError(f"augury serve exited with code {proc.returncode}; see serve.log")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AuguryError("augury serve did not become ready in time; see serve.log")


def _post(url: str, doc: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())
