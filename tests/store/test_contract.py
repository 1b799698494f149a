"""The prediction store contract (augury/store/base.py), run against every backend by the `store` fixture."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

from augury.errors import InputError, StoreError, VersionNotFoundError
from augury.store import LOADING, READY, PredictionStore, Publishing, StoredPrediction, VersionInfo
from augury.store.sqlite_read import CHUNK

BatchOf = Callable[..., pa.RecordBatch]

#: a fixed, microsecond-exact instant: 2024-01-02T03:04:05.123456Z.
T0_US = 1_704_164_645_123_456


def publish_keys(
    store: PredictionStore, keys: list[str], model_version: str = "m1", **kw: object
) -> VersionInfo:
    """Publish `keys` with `score` = their position, computed now."""
    batch = pa.record_batch(
        {
            "key": keys,
            "computed_at": pa.array([time.time()] * len(keys)),
            "score": [float(i) for i in range(len(keys))],
        }
    )
    return store.publish([batch], model_version=model_version, **kw)  # type: ignore[arg-type]


def scores(results: list[StoredPrediction | None]) -> list[float | None]:
    return [None if r is None else r.values["score"] for r in results]


def test_is_a_prediction_store(store: PredictionStore) -> None:
    assert isinstance(store, PredictionStore)
    assert store.url


def test_empty_store(store: PredictionStore) -> None:
    assert store.active() is None
    assert store.versions() == []
    assert store.get_many(["a", "b"]) == [None, None]
    assert store.get_many([]) == []


def test_get_many_is_aligned_with_hits_misses_and_duplicates(store: PredictionStore) -> None:
    publish_keys(store, ["a", "b", "c"])
    assert store.get_many([]) == []
    got = store.get_many(["c", "zz", "a", "a", "", "b", "c"])
    assert scores(got) == [2.0, None, 0.0, 0.0, None, 1.0, 2.0]
    assert scores(store.get_many(["b"])) == [1.0]
    assert scores(store.get_many(["nope"])) == [None]


def test_values_round_trip_exactly(store: PredictionStore, batch_of: BatchOf) -> None:
    floats = [0.1, 1 / 3, math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, None]
    n = len(floats)
    keys = [f"k{i}" for i in range(n)]
    ints = [0, -1, 2**63 - 1, -(2**63), 42, None, 7, 8, 9]
    batch = batch_of(
        keys,
        f=pa.array(floats, pa.float64()),
        f32=pa.array([0.5] * (n - 1) + [None], pa.float32()),
        i=pa.array(ints, pa.int64()),
        u=pa.array([2**64 - 1] + [0] * (n - 1), pa.uint64()),
        b=pa.array([True, False, None] * 3, pa.bool_()),
        s=pa.array(["yes", "", "ünïcödé ✓", None, "x" * 300, "a", "b", "c", "d"], pa.string()),
        d=pa.array(["no", "yes", "no", "yes", "no", "yes", "no", "yes", None]).dictionary_encode(),
    )
    info = store.publish([batch], model_version="m1")
    assert info.columns == ("f", "f32", "i", "u", "b", "s", "d")
    got = store.get_many(keys)
    for i, r in enumerate(got):
        assert r is not None
        v = r.values
        assert list(v) == list(info.columns)
        if floats[i] is not None and math.isnan(floats[i]):  # type: ignore[arg-type]
            assert isinstance(v["f"], float) and math.isnan(v["f"])
        else:
            assert v["f"] == floats[i]
            if floats[i] is not None:
                assert math.copysign(1, v["f"]) == math.copysign(1, floats[i])  # type: ignore[arg-type]
        assert v["i"] == ints[i]
        assert type(v["b"]) in (bool, type(None))
    assert got[0] is not None and got[0].values["u"] == 2**64 - 1
    assert got[2] is not None and got[2].values["s"] == "ünïcödé ✓"
    assert got[3] is not None and got[3].values["s"] is None and got[3].values["f32"] == 0.5
    assert got[8] is not None and got[8].values["d"] is None and got[8].values["f32"] is None


def test_provenance_round_trips(store: PredictionStore, batch_of: BatchOf) -> None:
    info = store.publish([batch_of(["a", "b"], computed_at_us=[T0_US, T0_US + 1])], model_version="model-7")
    a, b = store.get_many(["a", "b"])
    assert a is not None and b is not None
    assert (a.model_version, a.store_version, a.key) == ("model-7", info.version, "a")
    assert a.computed_at == T0_US / 1e6 and b.computed_at == (T0_US + 1) / 1e6
    assert a.provenance() == {
        "source": "static",
        "model_version": "model-7",
        "store_version": info.version,
        "computed_at": "2024-01-02T03:04:05.123456Z",
    }


@pytest.mark.parametrize(
    "column",
    [
        pa.array([T0_US / 1e6] * 2, pa.float64()),
        pa.array([T0_US * 1000] * 2, pa.timestamp("ns", tz="UTC")),
        pa.array([T0_US] * 2, pa.timestamp("us")),
        pa.array([T0_US] * 2, pa.timestamp("us", tz="Europe/Paris")),
    ],
)
def test_computed_at_accepts_float_seconds_and_any_timestamp(
    store: PredictionStore, batch_of: BatchOf, column: pa.Array
) -> None:
    batch = batch_of(["a", "b"]).set_column(1, "computed_at", column)
    store.publish([batch], model_version="m")
    assert [r.computed_at for r in store.get_many(["a", "b"]) if r] == [T0_US / 1e6] * 2


def test_versions_are_numbered_listed_and_described(store: PredictionStore) -> None:
    v1 = publish_keys(store, ["a"], "m1", ttl_s=3600.0, profile={"rows": 1, "nan": None}, meta={"by": "ci"})
    v2 = publish_keys(store, ["a", "b"], "m2", activate=False)
    assert (v1.version, v2.version) == ("1", "2")
    assert v1.active and not v2.active and v2.state == READY and v2.row_count == 2
    listed = store.versions()
    assert [(v.version, v.active, v.state, v.model_version, v.row_count) for v in listed] == [
        ("1", True, READY, "m1", 1),
        ("2", False, READY, "m2", 2),
    ]
    assert listed[0].ttl_s == 3600.0 and listed[0].profile == {"rows": 1, "nan": None}
    assert listed[0].meta == {"by": "ci"} and listed[1].meta == {} and listed[1].ttl_s is None
    assert listed[0].columns == ("score",) and listed[0].created_at <= listed[1].created_at
    assert store.active() == listed[0]
    assert listed[0].to_dict()["store_version"] == "1"


def test_publish_without_activate_leaves_the_old_version_active(
    store: PredictionStore, batch_of: BatchOf
) -> None:
    publish_keys(store, ["a", "b"], "m1")
    new = store.publish([batch_of(["a"], score=pa.array([9.0]))], model_version="m2", activate=False)
    assert (store.active() or new).version == "1"
    assert scores(store.get_many(["a", "b"])) == [0.0, 1.0]
    assert store.activate(new.version).active
    r = store.get_many(["a", "b"])
    assert scores(r) == [9.0, None] and r[0] is not None and r[0].model_version == "m2"


def test_activate_errors(store: PredictionStore) -> None:
    publish_keys(store, ["a"])
    for bad in ("7", "0", "abc", "", "-1"):
        with pytest.raises(VersionNotFoundError):
            store.activate(bad)
    assert store.activate("1").version == "1"


def test_rollback(store: PredictionStore) -> None:
    with pytest.raises(StoreError):
        store.rollback()
    for i in range(4):
        publish_keys(store, ["a"], f"m{i + 1}")
    store.delete("2")
    assert store.rollback().version == "3"
    assert store.rollback().version == "1"
    with pytest.raises(StoreError, match="older"):
        store.rollback()
    assert store.rollback(to="4").version == "4"
    with pytest.raises(VersionNotFoundError):
        store.rollback(to="2")
    assert [v.version for v in store.versions() if v.active] == ["4"]
    r = store.get_many(["a"])[0]
    assert r is not None and r.model_version == "m4"


def test_delete(store: PredictionStore) -> None:
    publish_keys(store, ["a"])
    publish_keys(store, ["a"])
    with pytest.raises(StoreError, match="active"):
        store.delete("2")
    with pytest.raises(VersionNotFoundError):
        store.delete("9")
    store.delete("1")
    assert [v.version for v in store.versions()] == ["2"]
    with pytest.raises(VersionNotFoundError):
        store.delete("1")


def test_version_numbers_are_never_reused(store: PredictionStore, batch_of: BatchOf) -> None:
    publish_keys(store, ["a"])
    publish_keys(store, ["a"], activate=False)
    store.delete("2")
    with pytest.raises(InputError):
        store.publish([batch_of(["x", "x"])], model_version="dup")
    assert publish_keys(store, ["a"]).version == "4"


def test_gc_keeps_the_newest_and_the_active(store: PredictionStore) -> None:
    for _ in range(5):
        publish_keys(store, ["a"])
    store.activate("2")
    assert store.gc(keep=2) == ["1", "3"]
    assert [(v.version, v.active) for v in store.versions()] == [("2", True), ("4", False), ("5", False)]
    assert store.gc(keep=0) == ["4", "5"]
    assert store.gc() == []
    assert [v.version for v in store.versions()] == ["2"]
    assert scores(store.get_many(["a"])) == [0.0]
    with pytest.raises(InputError):
        store.gc(keep=-1)


def test_ttl_is_enforced_on_read(store: PredictionStore, batch_of: BatchOf) -> None:
    now_us = int(time.time() * 1e6)
    stamps = [now_us, now_us - 30_000_000, now_us - 120_000_000, now_us - 10**12]
    store.publish(
        [batch_of(["fresh", "recent", "old", "ancient"], computed_at_us=stamps)],
        model_version="m",
        ttl_s=60.0,
    )
    got = store.get_many(["fresh", "recent", "old", "ancient", "fresh"])
    assert scores(got) == [0.0, 1.0, None, None, 0.0]
    store.publish([batch_of(["old"], computed_at_us=now_us - 10**12)], model_version="m")
    assert scores(store.get_many(["old"])) == [0.0]  # no TTL: never expires


@pytest.mark.parametrize(
    "key_lists", [[["a", "b", "a"]], [["a", "b"], ["c", "b"]]], ids=["within-a-batch", "across-batches"]
)
def test_duplicate_key_publishes_nothing(
    store: PredictionStore, batch_of: BatchOf, key_lists: list[list[str]]
) -> None:
    publish_keys(store, ["a", "z"], "old")
    with pytest.raises(InputError, match=r"'(a|b)' appears more than once"):
        store.publish([batch_of(keys) for keys in key_lists], model_version="new")
    assert [(v.version, v.state, v.active) for v in store.versions()] == [("1", READY, True)]
    r = store.get_many(["a", "z", "b"])
    assert scores(r) == [0.0, 1.0, None] and r[0] is not None and r[0].model_version == "old"


def test_failing_batch_source_publishes_nothing(store: PredictionStore, batch_of: BatchOf) -> None:
    publish_keys(store, ["a"], "old")

    def broken() -> Iterator[pa.RecordBatch]:
        yield batch_of(["a", "b"])
        raise RuntimeError("upstream died")

    with pytest.raises(RuntimeError, match="upstream died"):
        store.publish(broken(), model_version="new")
    assert [v.version for v in store.versions()] == ["1"]
    assert scores(store.get_many(["a", "b"])) == [0.0, None]


@pytest.mark.parametrize(
    "batch, message",
    [
        (pa.record_batch({"computed_at": pa.array([1.0]), "p": [1.0]}), "no 'key' column"),
        (pa.record_batch({"key": ["a"], "p": [1.0]}), "no 'computed_at' column"),
        (pa.record_batch({"key": [1], "computed_at": pa.array([1.0]), "p": [1.0]}), "must hold strings"),
        (pa.record_batch({"key": ["a", None], "computed_at": pa.array([1.0, 1.0]), "p": [1.0, 2.0]}), "null"),
        (pa.record_batch({"key": ["a"], "computed_at": pa.array([1]), "p": [1.0]}), "timestamp or float"),
        (pa.record_batch({"key": ["a"], "computed_at": pa.array([math.nan]), "p": [1.0]}), "non-finite"),
        (pa.record_batch({"key": ["a"], "computed_at": pa.array([1.0]), "p": [[1.0]]}), "supported: float"),
        (
            pa.record_batch({"key": ["a"], "computed_at": pa.array([1.0]), "model_version": ["other"]}),
            "model version",
        ),
    ],
)
def test_bad_batches_are_input_errors(store: PredictionStore, batch: pa.RecordBatch, message: str) -> None:
    publish_keys(store, ["a"], "m")
    with pytest.raises(InputError, match=message):
        store.publish([batch], model_version="m")
    assert [v.version for v in store.versions()] == ["1"]


def test_batches_must_agree_on_columns(store: PredictionStore, batch_of: BatchOf) -> None:
    with pytest.raises(InputError, match="disagree"):
        store.publish([batch_of(["a"]), batch_of(["b"], other=pa.array([1]))], model_version="m")
    assert store.versions() == []


def test_matching_model_version_column_is_accepted(store: PredictionStore, batch_of: BatchOf) -> None:
    info = store.publish([batch_of(["a"], extra={"model_version": ["m"]})], model_version="m")
    assert info.columns == ("score",)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_version": ""},
        {"model_version": "m", "ttl_s": 0},
        {"model_version": "m", "ttl_s": math.inf},
        {"model_version": "m", "meta": {"x": object()}},
        {"model_version": "m", "profile": ["not", "a", "dict"]},
    ],
)
def test_bad_publish_arguments(store: PredictionStore, batch_of: BatchOf, kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        store.publish([batch_of(["a"])], **kwargs)  # type: ignore[arg-type]
    assert store.versions() == []


def test_empty_publish_creates_an_empty_version(store: PredictionStore, batch_of: BatchOf) -> None:
    publish_keys(store, ["a"])
    empty = store.publish([], model_version="m2")
    assert (empty.version, empty.row_count, empty.columns, empty.active) == ("2", 0, (), True)
    assert store.get_many(["a"]) == [None]
    schema_only = store.publish([batch_of([])], model_version="m3")
    assert schema_only.columns == ("score",) and schema_only.row_count == 0


def test_many_keys_beyond_the_chunk_size(store: PredictionStore, batch_of: BatchOf) -> None:
    n = 5_000
    keys = [f"key-{i:05d}" for i in range(n)]
    store.publish(
        [
            batch_of(keys[i : i + 1000]).set_column(
                2, "score", pa.array([float(j) for j in range(i, min(i + 1000, n))])
            )
            for i in range(0, n, 1000)
        ],
        model_version="m",
    )
    wanted = [f"key-{(i * 7919) % (n + 500):05d}" for i in range(2 * CHUNK * 4 + 3)]
    expected = [float(int(k[4:])) if int(k[4:]) < n else None for k in wanted]
    assert len(wanted) > 2_000
    assert scores(store.get_many(wanted)) == expected
    assert scores(store.get_many(keys)) == [float(i) for i in range(n)]


def test_reader_sees_old_or_new_never_a_mix(store: PredictionStore, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(3_000)]
    sample = keys[::7]

    def version_batch(v: int) -> list[pa.RecordBatch]:
        return [
            batch_of(keys[i : i + 500], score=pa.array([float(v * 100_000 + j) for j in range(i, i + 500)]))
            for i in range(0, len(keys), 500)
        ]

    store.publish(version_batch(1), model_version="m1")
    stop = threading.Event()
    problems: list[str] = []
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            got = store.get_many(sample)
            versions = {r.store_version if r else None for r in got}
            if len(versions) != 1 or None in versions:
                problems.append(f"mixed or missing: {versions}")
                return
            (v,) = versions
            seen.add(str(v))
            mv = int(got[0].model_version[1:]) if got[0] else -1
            if [r.values["score"] for r in got if r] != [float(mv * 100_000 + int(k[1:])) for k in sample]:
                problems.append(f"values of version {v} do not match model version m{mv}")
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for v in range(2, 6):
            store.publish(version_batch(v), model_version=f"m{v}")
            time.sleep(0.02)
        store.rollback()
        time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert not problems, problems
    assert len(seen) >= 2, seen


def test_a_publish_in_progress_is_loading_and_untouchable(store: PredictionStore, batch_of: BatchOf) -> None:
    publish_keys(store, ["a"])
    release = threading.Event()
    started = threading.Event()

    def slow() -> Iterator[pa.RecordBatch]:
        yield batch_of(["a", "b"])
        started.set()
        release.wait(10)
        yield batch_of(["c"])

    result: list[VersionInfo] = []
    thread = threading.Thread(target=lambda: result.append(store.publish(slow(), model_version="m2")))
    thread.start()
    try:
        assert started.wait(10)
        states = {v.version: v.state for v in store.versions()}
        assert states == {"1": READY, "2": LOADING}
        assert scores(store.get_many(["a", "b"])) == [0.0, None]
    finally:
        release.set()
        thread.join(10)
    assert result and result[0].row_count == 3 and result[0].active


def test_publish_accepts_a_table_or_a_single_batch(store: PredictionStore, batch_of: BatchOf) -> None:
    table = pa.Table.from_batches([batch_of(["a", "b"]), batch_of(["c"])])
    assert store.publish(table, model_version="m").row_count == 3  # type: ignore[arg-type]
    assert store.publish(batch_of(["d"]), model_version="m").row_count == 1  # type: ignore[arg-type]
    with pytest.raises(InputError, match="record batches"):
        store.publish([{"key": "a"}], model_version="m")  # type: ignore[list-item]
    assert [v.version for v in store.versions()] == ["1", "2"]


def test_a_version_keeps_the_features_hash_of_each_record(store: PredictionStore, batch_of: BatchOf) -> None:
    """A published `features_key` column (32 hex digits, or 16 bytes) is kept with each record as 16 bytes
    (`StoredPrediction.features_hash`); a version without one has none, and its records read as before."""
    digest = bytes(range(16))
    hashed = batch_of(["a", "b", "c"], extra={"features_key": pa.array([digest.hex(), None, "ff" * 16])})
    info = store.publish([hashed], model_version="m1")
    assert info.features_hash and info.columns == ("score",) and info.to_dict()["features_hash"] is True
    a, b, c = store.get_many(["a", "b", "c"])
    assert a is not None and b is not None and c is not None
    assert (a.features_hash, b.features_hash, c.features_hash) == (digest, None, b"\xff" * 16)
    assert (a.values, c.values) == ({"score": 0.0}, {"score": 2.0})
    assert store.get_many(["c"])[0] == c  # one key (the single-key path) as several
    plain = store.publish([batch_of(["a"])], model_version="m1")
    assert not plain.features_hash
    got = store.get_many(["a"])[0]
    assert got is not None and got.features_hash is None and got.values == {"score": 0.0}
    store.rollback()
    assert [v.features_hash for v in store.versions()] == [True, False]
    assert store.get_many(["a"])[0] == a
    binary = batch_of(["d"], extra={"features_key": pa.array([digest], pa.binary(16))})
    store.publish([binary], model_version="m1")
    assert [p.features_hash for p in store.get_many(["d"]) if p is not None] == [digest]


@pytest.mark.parametrize(("features_key", "message"), [
    (pa.array(["abc"]), "not hex digits"),
    (pa.array(["ab" * 8]), "8 bytes, not 16"),
    (pa.array([1.5]), "must hold 32 hex digits"),
])
def test_a_bad_features_key_publishes_nothing(store: PredictionStore, batch_of: BatchOf,
                                              features_key: pa.Array, message: str) -> None:
    with pytest.raises(InputError, match=message):
        store.publish([batch_of(["a"], extra={"features_key": features_key})], model_version="m1")
    assert store.active() is None


def test_batches_must_agree_on_the_features_key(store: PredictionStore, batch_of: BatchOf) -> None:
    with pytest.raises(InputError, match="disagree on the 'features_key' column"):
        store.publish([batch_of(["a"], extra={"features_key": pa.array(["00" * 16])}), batch_of(["b"])],
                      model_version="m1")
    assert store.active() is None


def publishing(store: PredictionStore) -> Publishing:
    """`store` as a store that takes a publish in parts; the test is skipped, visibly, for one that does
    not (every backend does now)."""
    if not isinstance(store, Publishing):
        pytest.skip(f"{type(store).__name__} does not take a publish in parts yet")
    return store


def test_a_publish_in_parts_is_invisible_until_its_commit(store: PredictionStore, batch_of: BatchOf) -> None:
    publish_keys(store, ["a"], "old")
    handle = publishing(store).begin_publish(model_version="new", meta={"by": "parts"})
    joined = publishing(store).join_publish(handle.version)
    assert handle.write(batch_of(["a", "b"])) == 2
    writers = [threading.Thread(target=joined.write, args=(batch_of([f"p{i}-{j}" for j in range(50)]),))
               for i in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(10)
    assert [(v.version, v.state) for v in store.versions()] == [("1", READY), ("2", LOADING)]
    assert scores(store.get_many(["a", "b"])) == [0.0, None]
    with pytest.raises(StoreError, match="only the"):
        joined.commit()
    assert handle.commit(activate=False) == "2"
    assert scores(store.get_many(["b"])) == [None]
    info = store.activate("2")
    assert info.row_count == 202 and info.meta == {"by": "parts"} and info.columns == ("score",)
    assert scores(store.get_many(["a", "b", "p3-49"])) == [0.0, 1.0, 49.0]
    with pytest.raises(StoreError):
        handle.write(batch_of(["late"]))


def test_an_aborted_publish_in_parts_leaves_nothing(store: PredictionStore, batch_of: BatchOf) -> None:
    publish_keys(store, ["a"], "old")
    handle = publishing(store).begin_publish(model_version="new")
    handle.write(batch_of(["a", "b"]))
    with pytest.raises(InputError, match="key 'b' appears more than once"):
        publishing(store).join_publish(handle.version).write(batch_of(["c", "b"]))
    with pytest.raises(InputError, match="disagree"):
        handle.write(batch_of(["d"], other=pa.array([1.0])))
    handle.abort()
    assert [v.version for v in store.versions()] == ["1"]
    assert scores(store.get_many(["a", "b", "c"])) == [0.0, None, None]
    with pytest.raises(VersionNotFoundError):
        publishing(store).join_publish(handle.version)
    assert publish_keys(store, ["z"]).version == "3"
