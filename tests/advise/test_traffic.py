"""Traffic logs: keying requests like the server, the coverage curve, new keys, request rates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from augury.advise.catalogue import read_catalogue
from augury.advise.traffic import coverage_curve, read_traffic, traffic_stats
from augury.errors import InputError
from augury.schema import Schema

AB = Schema.of([("a", "float64"), ("b", "float64")])


def test_coverage_curve_on_a_known_zipf_sample(zipf_ids: Callable[..., np.ndarray]) -> None:
    n, s = 1000, 1.0
    ids = zipf_ids(n, 200_000, s)
    stats = traffic_stats(ids, np.ones(n, dtype=bool))
    harmonic = np.cumsum(1.0 / np.arange(1, n + 1) ** s)
    for p in stats.coverage:
        assert p.share == pytest.approx(harmonic[p.head - 1] / harmonic[-1], abs=0.01)
    assert stats.coverage[-1].share == pytest.approx(1.0)
    assert stats.catalogue_share == 1.0
    assert stats.head_for_share(0.5) == pytest.approx(np.searchsorted(harmonic / harmonic[-1], 0.5) + 1,
                                                       rel=0.15)
    assert stats.share_of_head(stats.head_for_share(0.5) or 0) >= 0.5 - 1e-9
    knee = stats.knee()
    assert knee is not None and 10 <= knee <= 400


def test_curve_ranks_only_catalogue_keys_and_tops_out_at_their_share() -> None:
    ids = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # key 3 is the most requested, but not in the catalogue
    stats = traffic_stats(ids, np.array([True, True, True, False]))
    assert stats.catalogue_share == pytest.approx(0.6)
    assert [(p.head, p.share) for p in stats.coverage] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.5)),
                                                           (3, pytest.approx(0.6))]
    assert stats.head_for_share(0.7) is None


def test_new_keys_in_time_order() -> None:
    ids = np.array([2, 0, 1, 0, 0, 1])
    times = np.array([50.0, 0.0, 10.0, 20.0, 30.0, 40.0])  # in time order: 0 1 0 0 1 2
    stats = traffic_stats(ids, np.ones(3, dtype=bool), times)
    assert stats.new_share == pytest.approx(3 / 6)
    assert stats.new_share_late == pytest.approx(1 / 3)  # 0 1 2 -> only 2 is new
    assert stats.observed_qps == pytest.approx(6 / 50)
    assert stats.span_s == 50.0


def test_coverage_curve_points() -> None:
    curve = coverage_curve(np.array([5, 3, 2]), 10)
    assert [(p.head, p.share) for p in curve] == [(1, 0.5), (2, 0.8), (3, 1.0)]
    assert coverage_curve(np.array([], dtype=np.int64), 0) == ()


@pytest.fixture()
def catalogue_file(tmp_path: Path, write_ab_catalogue: Callable[..., Path]) -> Path:
    return write_ab_catalogue(tmp_path / "catalogue.parquet", 100)


def test_log_by_key_column_with_iso_times(tmp_path: Path, catalogue_file: Path) -> None:
    cat = read_catalogue(catalogue_file, AB, ["id"])
    rng = np.random.default_rng(1)
    ids = np.where(rng.random(4000) < 0.75, rng.integers(0, 100, 4000), 1000 + np.arange(4000))
    start = np.datetime64("2026-03-01T00:00:00")
    times = [str(start + np.timedelta64(int(s), "s")) + "Z" for s in np.sort(rng.uniform(0, 7200, 4000))]
    pacsv.write_csv(pa.table({"id": ids, "ts": times}), tmp_path / "log.csv")
    stats = read_traffic(tmp_path / "log.csv", AB, ["id"], cat, 100)
    assert stats.key == "id" and stats.requests == 4000
    assert stats.catalogue_share == pytest.approx(0.75, abs=0.03)
    assert stats.coverage[-1].head == 100 and stats.coverage[-1].share == pytest.approx(stats.catalogue_share)
    assert stats.observed_qps == pytest.approx(4000 / 7200, rel=0.01)
    assert len(stats.hourly) == 2 and sum(h.requests for h in stats.hourly) == 4000


def test_log_by_features_is_keyed_by_the_feature_hash(tmp_path: Path, catalogue_file: Path) -> None:
    cat = read_catalogue(catalogue_file, AB, ["id"])
    rows = pq.read_table(catalogue_file).to_pylist()
    log = [{"a": r["a"], "b": r["b"], "time": 1_772_000_000_000 + 1000 * i} for i, r in enumerate(rows[:30])]
    log += [{"a": 10.0 + i, "b": 0.0, "time": 1_772_000_100_000 + i} for i in range(10)]
    (tmp_path / "log.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in log))
    stats = read_traffic(tmp_path / "log.jsonl", AB, ["id"], cat, 100)  # no id in the log: features
    assert stats.key == "feature hash"
    assert stats.catalogue_share == pytest.approx(30 / 40)
    assert stats.span_s == pytest.approx(100.009)  # milliseconds recognised


def test_a_sampled_catalogue_scales_the_share_up(tmp_path: Path, catalogue_file: Path) -> None:
    cat = read_catalogue(catalogue_file, AB, ["id"])
    ids = np.concatenate([np.arange(100), 1000 + np.arange(900)])  # 10 % hit the 100-row sample
    pq.write_table(pa.table({"id": ids}), tmp_path / "log.parquet")
    stats = read_traffic(tmp_path / "log.parquet", AB, ["id"], cat, 1000)  # the sample is 1/10 of it
    assert stats.catalogue_share_estimated and stats.catalogue_share == pytest.approx(1.0)
    assert stats.observed_qps is None and stats.hourly == ()


def test_a_log_without_keys_or_features(tmp_path: Path, catalogue_file: Path) -> None:
    cat = read_catalogue(catalogue_file, AB, ["id"])
    pq.write_table(pa.table({"user": [1, 2], "a": [0.1, 0.2]}), tmp_path / "log.parquet")
    with pytest.raises(InputError, match=r"neither the key column\(s\) id nor .*b missing.*user, a"):
        read_traffic(tmp_path / "log.parquet", AB, ["id"], cat, 100)
    with pytest.raises(InputError, match=r"lacks the model's feature\(s\) b"):
        read_traffic(tmp_path / "log.parquet", AB, [], cat, 100)


def test_a_log_whose_features_do_not_fit_the_model(tmp_path: Path, catalogue_file: Path) -> None:
    cat = read_catalogue(catalogue_file, AB, [])
    pq.write_table(pa.table({"a": ["x", "y"], "b": ["1", "2"]}), tmp_path / "log.parquet")
    with pytest.raises(InputError, match=r"no request that can be keyed.*cannot read 'x' as float64"):
        read_traffic(tmp_path / "log.parquet", AB, [], cat, 100)


def test_an_unreadable_log(tmp_path: Path, catalogue_file: Path) -> None:
    cat = read_catalogue(catalogue_file, AB, [])
    (tmp_path / "log.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read"):
        read_traffic(tmp_path / "log.parquet", AB, [], cat, 100)
    with pytest.raises(InputError, match="does not exist"):
        read_traffic(tmp_path / "missing.csv", AB, [], cat, 100)
    (tmp_path / "log.txt").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="must be Parquet"):
        read_traffic(tmp_path / "log.txt", AB, [], cat, 100)
