"""Answers to key lookups kept encoded (`serve.lookup_memo`): the same bytes as the normal path, never from
a version that lookups no longer answer from, within their memory budget, counted and monitored alike."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from augury.serve import ServeSettings, codec_v1, create_app
from augury.serve.answers import Answer, age_s, static_provenance
from augury.serve.lookup_memo import LookupMemo, answer_body, unix_of
from augury.serve.wire import dump_json
from augury.store import SQLiteStore
from augury.store.base import iso

from .helpers import publish_values

#: keys a URL path can carry that JSON must escape or that look like other things
ODD_KEYS = ["k1", 'quo"te', "back\\slash", "été-naïve-日本", "12345", "-0.0", "true", "null", "a b", "<tag>",
            "x" * 300]
#: output values at the edges of what JSON writes
ODD_VALUES = [0.0, -0.0, 1e300, -1e-300, math.nan, math.inf, 2.0**53 + 1, 0.1, 123456789.123456789, -7.0,
              5e-324]


def _publish_odd(store: SQLiteStore, computed_at: float) -> None:
    keys = ODD_KEYS
    values = (ODD_VALUES * 2)[:len(keys)]
    batch = pa.record_batch({
        "key": pa.array(keys, pa.string()),
        "computed_at": pa.array([computed_at] * len(keys), pa.float64()),
        "score": pa.array(values, pa.float64()),
        "label": pa.array([i % 3 - 1 for i in range(len(keys))], pa.int64()),
        "flag": pa.array([i % 2 == 0 for i in range(len(keys))], pa.bool_()),
        "name": pa.array([f"n{i}\u00e9\"" if i % 4 else None for i in range(len(keys))], pa.string()),
    })
    store.publish([batch], model_version="m\u00e9-1")


async def _get(app: Any, key: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(f"/v1/models/add/predictions/{key}")


def _gets(app: Any, keys: list[str]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.get(f"/v1/models/add/predictions/{k}") for k in keys]

    return asyncio.run(run())


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


def _app(store: SQLiteStore, **settings: Any) -> Any:
    return create_app(ServeSettings(name="add", **settings), None, store)


def test_a_kept_answer_is_the_bytes_the_normal_path_writes(store: SQLiteStore) -> None:
    computed = 1_700_000_000.123456
    _publish_odd(store, computed)
    app = _app(store)
    first = _gets(app, ODD_KEYS)  # answered by the normal path, and kept
    memo = app.state.service.memo
    assert isinstance(memo, LookupMemo)
    assert all(r.status_code == 200 for r in first), [r.text for r in first]
    hits = store.get_many(ODD_KEYS)
    for key, r, hit in zip(ODD_KEYS, first, hits, strict=True):
        kept = memo.get(key)
        assert kept is not None, key
        evaluator = r.json()["provenance"]["evaluator"]
        for now in (computed - 5.0, computed, computed + 0.0004999, computed + 0.0005, computed + 1.2345678,
                    computed + 86_400 * 365.25 * 3 + 0.001, time.time()):
            assert hit is not None
            normal = dump_json(codec_v1.encode_lookup(key, Answer(hit.values,
                                                                  static_provenance(hit, now, evaluator))))
            assert answer_body(key, kept, now) == normal, (key, now)
    again = _gets(app, ODD_KEYS)  # now answered from the memo
    for r1, r2 in zip(first, again, strict=True):
        assert r2.status_code == 200
        assert _timeless(r2.json()) == _timeless(r1.json())
        assert {k: v for k, v in r2.headers.items() if k.startswith("x-augury")} == \
            {k: v for k, v in r1.headers.items() if k.startswith("x-augury")}


def _timeless(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "provenance": {k: v for k, v in doc["provenance"].items() if k != "age_s"}}


def test_age_is_to_the_millisecond_as_round_gives_it() -> None:
    for seconds in (0.0, 0.0004, 0.0006, 1.2345, 59.9999, 123456.789012, 1e9 + 0.25):
        assert age_s(seconds, 0.0) == round(seconds, 3)
    assert age_s(0.0, 5.0) == 0.0  # (never negative)
    stamp = 1_700_000_000.123456
    assert unix_of(iso(stamp)) == stamp
    assert unix_of("yesterday") is None


def _values(app: Any, keys: list[str]) -> list[tuple[str, float]]:
    return [(r.json()["provenance"]["store_version"], r.json()["prediction"]["value"])
            for r in _gets(app, keys)]


def test_a_switch_made_by_another_process_is_followed_and_never_undone(store: SQLiteStore,
                                                                        tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(30)]
    v1 = publish_values(store, keys, [1.0] * len(keys))
    app = _app(store)
    assert _values(app, keys) == [(v1, 1.0)] * len(keys)
    assert _values(app, keys) == [(v1, 1.0)] * len(keys)  # (kept, and answered from the memo)
    assert len(app.state.service.memo._entries) == len(keys)
    other = SQLiteStore(tmp_path / "s.db")  # another process's publish: this server's store is not told
    try:
        v2 = publish_values(other, keys, [2.0] * len(keys))
        deadline = time.monotonic() + 5
        seen: list[tuple[str, float]] = []
        while not seen or seen[-1] != (v2, 2.0):
            assert time.monotonic() < deadline, "the switch was never seen"
            seen.extend(_values(app, keys[:3]))
        after = seen[seen.index((v2, 2.0)):]
        assert set(after) == {(v2, 2.0)}, "an answer from the older version came after one from the newer"
        for _ in range(3):
            assert _values(app, keys) == [(v2, 2.0)] * len(keys)
        other.rollback()  # back to v1, elsewhere again: the memo follows that way too
        deadline = time.monotonic() + 5
        while _values(app, keys[:1]) != [(v1, 1.0)]:
            assert time.monotonic() < deadline, "the rollback was never seen"
        assert _values(app, keys) == [(v1, 1.0)] * len(keys)
    finally:
        other.close()


def test_a_switch_through_the_servers_store_is_answered_at_once(store: SQLiteStore) -> None:
    keys = ["a", "b"]
    publish_values(store, keys, [1.0, 1.0])
    app = _app(store)
    _values(app, keys)
    _values(app, keys)
    v2 = publish_values(store, keys, [3.0, 4.0])
    assert _values(app, keys) == [(v2, 3.0), (v2, 4.0)]


def test_a_version_with_a_ttl_is_not_kept(store: SQLiteStore) -> None:
    publish_values(store, ["a", "b"], [1.0, 2.0], ttl_s=3600)
    app = _app(store)
    for _ in range(2):
        assert [r.status_code for r in _gets(app, ["a", "b"])] == [200, 200]
    assert app.state.service.memo.bytes == 0


def test_the_memo_keeps_to_its_budget(store: SQLiteStore) -> None:
    keys = [f"key-{i}" for i in range(200)]
    v1 = publish_values(store, keys, [float(i) for i in range(200)])
    app = _app(store, lookup_memo_mib=2_000 / (1 << 20))  # 2,000 bytes: a few entries
    for _ in range(2):
        assert _values(app, keys) == [(v1, float(i)) for i in range(200)]
    memo = app.state.service.memo
    assert 0 < len(memo._entries) < 20
    assert memo.bytes <= memo.max_bytes == 2_000


def test_off_and_where_it_cannot_follow_versions(store: SQLiteStore) -> None:
    publish_values(store, ["a"], [1.0])
    assert _app(store, lookup_memo_mib=0).state.service.memo is None
    assert not LookupMemo.usable(object())
    no_snapshots = SQLiteStore(store.path, snapshot_s=0)  # every lookup reads the latest: nothing to keep
    try:
        assert _app(no_snapshots).state.service.memo is None
    finally:
        no_snapshots.close()


def _counts(metrics: str) -> dict[str, str]:
    wanted = ("augury_store_lookups_total", "augury_predictions_total", "augury_monitor_samples_total",
              "augury_requests_total")
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\S+) (\S+)$", metrics, re.M)
            if m.group(1).startswith(wanted)}


def test_kept_answers_are_counted_and_monitored_as_lookups_are(store: SQLiteStore) -> None:
    keys = [f"k{i}" for i in range(10)]
    publish_values(store, keys, [1.0] * 10)
    found = {}
    for mib in (0.0, 64.0):
        app = _app(store, lookup_memo_mib=mib, monitor_max_rate=0.0)

        async def run(app: Any = app) -> str:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                for _ in range(3):
                    for k in keys:
                        assert (await client.get(f"/v1/models/add/predictions/{k}")).status_code == 200
                return (await client.get("/metrics")).text

        found[mib] = _counts(asyncio.run(run()))
    assert found[0.0] == found[64.0]
    assert found[64.0]['augury_store_lookups_total{result="hit"}'] == "30.0"


def test_the_cli_option_is_checked() -> None:
    proc = subprocess.run([sys.executable, "-m", "augury.cli", "serve", "--store", "sqlite:///nowhere.db",
                           "--lookup-memo-mib", "-1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--lookup-memo-mib" in proc.stderr and "Traceback" not in proc.stderr
