"""The `keys` gate: a key on two rows (or a row without a key) fails verification, counted in bounded
memory, before `publish` would load the rows and meet the store's unique index (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from augury.errors import VerificationFailed
from augury.publish import publish_predictions
from augury.store import SQLiteStore
from augury.verify import Checks, verify
from augury.verify.source import PredictionsFile
from augury.verify.unique import KeyCounter, key_hashes

from .helpers import classifier_columns, classifier_info, regressor_info, write_predictions


def keyed(path: Path, ids: list[object], **kwargs: object) -> Path:
    n = len(ids)
    return write_predictions(path, {"id": ids, "value": np.arange(n, dtype=np.float64)}, regressor_info(),
                             **kwargs)  # type: ignore[arg-type]


def test_repeated_keys_fail_verification_with_a_count_and_examples(tmp_path: Path) -> None:
    path = keyed(tmp_path / "p.parquet", ["a", "b", "a", "c", "b", "a", "a", "d"])
    gate = verify(path).gate("keys")
    assert gate.status == "failed"
    assert gate.message == ("keys: 2 key(s) on more than one row (4 row(s) too many): 'a' 4 times "
                            "(rows 1, 3, 6, ...), 'b' 2 times (rows 2, 5)")
    assert gate.observed == 4 and gate.threshold == 0
    assert gate.details["repeated_keys"] == 2 and gate.details["rows"] == 8
    assert sorted(d["key"] for d in gate.details["first_repeated"]) == ["a", "b"]


def test_publish_refuses_before_touching_the_store(tmp_path: Path) -> None:
    path = keyed(tmp_path / "p.parquet", ["a", "b", "a"])
    store = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(VerificationFailed, match=r"refusing to publish: .*keys: 1 key\(s\) on more than one"):
        publish_predictions(path, store, Checks())
    assert store.versions() == []  # not even a partial version to clean up
    store.close()


def test_keys_are_compared_as_the_store_keeps_them(tmp_path: Path) -> None:
    two = write_predictions(tmp_path / "two.parquet", {"shop": ["x", "x", "y"], "day": [1, 2, 1],
                                                       "value": [1.0, 2.0, 3.0]},
                            regressor_info(), key_columns=("shop", "day"))
    assert verify(two).gate("keys").status == "passed"
    assert verify(two).gate("keys").message == "keys: 3 distinct key(s), one row each"
    floats = keyed(tmp_path / "f.parquet", [1.0, 2.0, 1.0])  # stored as the text "1"
    assert "'1' 2 times (rows 1, 3)" in verify(floats).gate("keys").message
    ints = keyed(tmp_path / "i.parquet", pa.array([3, -1, 3, 2**40, -1, 2**40], pa.int64()))
    assert verify(ints).gate("keys").message.endswith(
        "3 key(s) on more than one row (3 row(s) too many): '3' 2 times (rows 1, 3), "
        "'-1' 2 times (rows 2, 5), '1099511627776' 2 times (rows 4, 6)")


def test_rows_without_a_key_fail(tmp_path: Path) -> None:
    gate = verify(keyed(tmp_path / "p.parquet", ["a", None, "b", None])).gate("keys")
    assert gate.status == "failed"
    assert gate.message == "keys: 2 row(s) without a key (a null in id)"


def test_a_file_without_key_columns_skips_the_gate(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", classifier_columns(10), None)
    assert verify(path).gate("keys").status == "skipped"


def test_a_hash_keyed_classifier_file(tmp_path: Path) -> None:
    keys = [f"{i:032x}" for i in range(300)] + ["0" * 31 + "7"]
    columns = {"key": keys, **classifier_columns(len(keys))}
    path = write_predictions(tmp_path / "p.parquet", columns, classifier_info(), key_columns=("key",),
                             key_kind="hash")
    gate = verify(path).gate("keys")
    assert gate.status == "failed" and f"'{keys[7]}' 2 times (rows 8, 301)" in gate.message


def test_spilled_counts_are_exact_across_batches(tmp_path: Path) -> None:
    """200,000 rows over 4 batches, counted in 256 spill files: the counts match a direct count."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 150_000, size=200_000)
    path = keyed(tmp_path / "p.parquet", [f"item-{i}" for i in ids], row_group_size=50_000)
    unique, counts = np.unique(ids, return_counts=True)
    with PredictionsFile(path) as f, KeyCounter(["id"], f.num_rows, bucket_rows=1000) as counter:
        assert counter.buckets == 256
        for batch in f.batches(["id"]):
            counter.add(batch)
        spill = counter._dir
        assert spill is not None and 200 < len(os.listdir(spill)) <= 256
        count = counter.finish(lambda: f.batches(["id"]))
    assert not spill.exists()
    assert count.rows == 200_000 and count.null_rows == 0
    assert count.repeated_keys == int((counts > 1).sum())
    assert count.repeated_rows == int((counts - 1).sum())
    assert len(count.examples) == 5
    for d in count.examples:
        i = int(d.key.removeprefix("item-"))
        assert d.count == counts[unique == i][0]
        assert list(d.rows) == [int(r) + 1 for r in np.flatnonzero(ids == i)[:3]]


def test_key_hashes_tell_keys_apart_and_ignore_where_they_sit() -> None:
    texts = ["", "a", "a\x00", "\x00a", "ab", "abcdefgh", "abcdefgh\x00", "abcdefghi", "été", "naïve",
             "x" * 1000, "x" * 999 + "y", *(f"k{i}" for i in range(5000))]
    arr = pa.array(texts)
    h, low = key_hashes(arr)
    assert len({(int(a), int(b)) for a, b in zip(h, low, strict=True)}) == len(texts)
    shifted = pa.concat_arrays([pa.array(["pad", "pad2"]), arr]).slice(2)  # a non-zero offset
    h2, low2 = key_hashes(shifted)
    assert np.array_equal(h, h2) and np.array_equal(low, low2)
    h3, _ = key_hashes(pa.array(["x" * 999 + "y", "a"]))
    assert h3.tolist() == [h[11], h[1]]
    one_length = [t for t in texts if len(t) == 2]  # hashed as one matrix: the same hashes
    alone, low_alone = key_hashes(pa.array(one_length))
    assert [(a, b) for a, b in zip(alone, low_alone, strict=True)] == [
        (h[i], low[i]) for i, t in enumerate(texts) if len(t) == 2]


def test_augury_verify_exits_1_naming_the_keys(tmp_path: Path) -> None:
    path = keyed(tmp_path / "p.parquet", ["a", "a"])
    proc = subprocess.run([sys.executable, "-m", "augury.cli", "verify", str(path), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    gates = {g["name"]: g for g in json.loads(proc.stdout)["gates"]}
    assert gates["keys"]["message"] == ("keys: 1 key(s) on more than one row (1 row(s) too many): "
                                        "'a' 2 times (rows 1, 2)")
