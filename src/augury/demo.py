"""`augury demo`: augury end to end, on a model trained here from data that ships with scikit-learn (no
download). Train, batch-predict a catalogue, verify, publish to SQLite, read keys back; retrain on data with
a unit error and see verification refuse it, retrain properly and publish, roll back; then serve hybrid
over HTTP (known examples from the store, new ones computed) and show where every answer came from, and
ask the advisor (with its HTML report), printing what happened at each step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augury import console
from augury.batch import BatchOptions, run_batch
from augury.errors import AuguryError, MissingExtraError, VerificationFailed
from augury.publish import publish_predictions
from augury.store import PredictionStore, open_store
from augury.verify import load_checks


def _step(n: int, text: str) -> None:
    console.out.print(f"\n[bold cyan]{n}.[/] [bold]{text}[/]")


#: the feature that the bad retrain's extract had in other units (divided by 1,000).
_UNIT_ERROR_COLUMN = "proline"


def _train(workdir: Path, version: str, *, max_iter: int = 60, learning_rate: float = 0.1,
           unit_error: bool = False) -> Path:
    """Train and save a wine classifier with its manifest. `unit_error`: trained on data whose proline
    came divided by 1,000 (other units), as a broken extract might deliver it."""
    try:
        import joblib
        from sklearn.datasets import load_wine
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise MissingExtraError("the demo", "demo", "scikit-learn") from exc
    data = load_wine()
    names = [n.replace("/", "_") for n in data.feature_names]
    import pandas as pd

    X = pd.DataFrame(data.data, columns=names)
    if unit_error:
        X[_UNIT_ERROR_COLUMN] = X[_UNIT_ERROR_COLUMN] / 1000
    # one thread: on 178 rows OpenMP's threads only wait for each other (seconds on a busy machine)
    with threadpool_limits(1):
        clf = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, random_state=0)
        clf.fit(X, data.target)
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
    console.out.print("training wine-1.joblib (60 boosting rounds on 178 wines, 13 features, 3 classes)...")
    t0 = time.perf_counter()
    model_v1 = _train(workdir, "1")
    console.out.print(f"trained in {time.perf_counter() - t0:.1f}s (scikit-learn's import included)")
    catalogue = _catalogue(workdir, rows)
    _golden(workdir, model_v1, catalogue)
    console.out.print(
        f"model {model_v1.name}, catalogue {catalogue.name} ({rows:,} rows, key wine_id), "
        f"golden set of 25 reviewed examples"
    )

    _step(2, "Batch-predict the catalogue: augury batch")
    preds = _batch(model_v1, catalogue, workdir / "predictions-v1.parquet")

    store_url = f"sqlite:///{workdir / 'store.db'}"
    checks = load_checks(workdir / "checks.toml")
    with _store(store_url) as store:
        _step(3, "Verify and publish: augury publish (the gates run first)")
        published = publish_predictions(preds, store, checks)
        console.out.print(published.report.render())
        console.out.print(f"published store version [bold]{published.version.version}[/] and activated it")

        _step(4, "Read predictions back by key: augury store get")
        _show_keys(store, ["w0000000", "w0000001", "w0000002", "w9999999"])

    _step(5, f"A bad retrain: trained on an extract with {_UNIT_ERROR_COLUMN} in other units (/1000)")
    console.out.print("training wine-2.joblib on the broken extract...")
    t0 = time.perf_counter()
    model_v2 = _train(workdir, "2", unit_error=True)
    console.out.print(f"trained in {time.perf_counter() - t0:.1f}s")
    preds2 = _batch(model_v2, catalogue, workdir / "predictions-v2.parquet")
    _show_change(preds, preds2, "model 2")
    with _store(store_url) as store:
        try:
            publish_predictions(preds2, store, checks)
            raise AuguryError("the demo's bad retrain passed verification; it should not have")
        except VerificationFailed as exc:
            console.out.print(exc.report.render())  # type: ignore[attr-defined]
            console.out.print(f"[yellow]{console.plain(exc)}[/]")
        active = store.active()
        console.out.print(
            f"publish refused: `augury publish {preds2.name}` stops here with exit code 1; store version "
            f"{active.version if active else '-'} stays active, and model 2 never reaches a reader"
        )

    _step(6, "A good retrain (120 rounds at learning rate 0.05): verified against the active version, "
             "published")
    console.out.print("training wine-3.joblib on the right data, with other settings...")
    t0 = time.perf_counter()
    model_v3 = _train(workdir, "3", max_iter=120, learning_rate=0.05)
    console.out.print(f"trained in {time.perf_counter() - t0:.1f}s")
    preds3 = _batch(model_v3, catalogue, workdir / "predictions-v3.parquet")
    _show_change(preds, preds3, "model 3")
    with _store(store_url) as store:
        v3 = publish_predictions(preds3, store, checks)
        console.out.print(v3.report.render())
        console.out.print(f"published store version [bold]{v3.version.version}[/] (model 3) and activated it")

        _step(7, "Versions, and a rollback: augury store rollback")
        before = store.active()
        after = store.rollback()
        console.out.print(
            f"rolled back: store version {before.version if before else '-'} -> {after.version} "
            f"(model {after.model_version}); readers see the switch at once, and version "
            f"{before.version if before else '-'} is kept for `augury store activate`"
        )
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

    _step(
        8,
        "Serve hybrid: augury serve --model wine-1.joblib --store ... (known keys from the store, "
        "new examples computed)",
    )
    _serve_and_ask(workdir, model_v1, store_url, catalogue)

    _step(9, "Which mode fits? augury advise, on this model and a day of (synthetic) traffic")
    log = _traffic_log(workdir, rows)
    from augury.advise import advise, write_report

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
    report = write_report(advice, workdir / "advice")
    console.out.print(f"the advisor's report, with its plots: {report}")
    console.out.print(
        f"\nDone. Try: augury store get w0000000 --store {store_url}\n"
        f"      augury serve --model {model_v1} --store {store_url}"
    )


def _batch(model: Path, catalogue: Path, out: Path) -> Path:
    """`augury batch` of the catalogue with `model` into `out`, showing its progress and its result."""
    with console.ProgressReporter("scoring") as progress:
        result = run_batch(str(model), catalogue, out, BatchOptions(key_columns=("wine_id",)),
                           on_progress=progress)
    console.out.print(
        f"{result.rows:,} rows scored in {result.seconds:.1f}s ({result.rows_per_s:,.0f} rows/s) "
        f"on {result.workers} worker(s), {result.failed} failed -> {out.name}"
    )
    return out


@contextlib.contextmanager
def _store(url: str) -> Iterator[PredictionStore]:
    """The demo's store, open for one step and closed before the next batch run: a process that runs
    another thread (the store's, while it reads) starts batch workers by spawn instead of fork, seconds
    slower."""
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _show_keys(store: PredictionStore, keys: list[str]) -> None:
    """Look `keys` up and show each one's prediction and provenance."""
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
            f"{len(keys)} keys in {micros:.0f} µs",
            ["key", "label", "confidence", "source", "store version", "computed at"],
            rows_out,
        )
    )


def _show_change(old: Path, new: Path, name: str) -> None:
    """Say how `new`'s predictions differ from `old`'s (the same catalogue, in the same order)."""
    columns = ["label", "proba_0", "proba_1", "proba_2"]
    a, b = pq.read_table(old, columns=columns), pq.read_table(new, columns=columns)
    labels = int(np.count_nonzero(a.column("label").to_numpy() != b.column("label").to_numpy()))
    delta = max(float(np.max(np.abs(a.column(c).to_numpy() - b.column(c).to_numpy()))) for c in columns[1:])
    rows = max(1, b.num_rows)
    shares = np.bincount(b.column("label").to_numpy(), minlength=3) / rows
    console.out.print(
        f"{name} against model 1: {labels:,} of {a.num_rows:,} labels differ ({labels / rows:.2%}), "
        f"probabilities by up to {delta:.3f}; class shares now "
        + ", ".join(f"{i}: {share:.0%}" for i, share in enumerate(shares))
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
