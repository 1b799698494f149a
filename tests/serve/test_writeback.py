"""`StoreWriteBack`: dynamic predictions written behind into a real store, counted, never lost silently."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from augury.serve.writeback import StoreWriteBack
from augury.store import MemoryStore, SQLiteStore, WrittenBack
from augury.store.base import iso


class Tally:
    """`on_rows`: how many rows fared how."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()

    def __call__(self, result: str, rows: int) -> None:
        self.rows[result] += rows


def values(got: Sequence[object]) -> list[object]:
    return [None if g is None else g.values["v"] for g in got]  # type: ignore[attr-defined]


def test_rows_are_written_behind_and_read_back(tmp_path: Path) -> None:
    store, tally = SQLiteStore(tmp_path / "s.db"), Tally()
    wb = StoreWriteBack(store, 60.0, flush_s=0.01, on_rows=tally)
    now = time.time()
    wb.put_many([("a", {"v": 1.5}), ("b", {"v": 2})], "m1", now)
    deadline = time.monotonic() + 10
    while tally.rows["written"] < 2:  # the writer thread writes within flush_s
        assert time.monotonic() < deadline
        time.sleep(0.01)
    got = wb.get_many(["a", "b", "c"], "m1")
    assert values(got) == [1.5, 2, None] and got[0] is not None
    provenance = got[0].provenance(now + 1.0)
    assert provenance["cached"] is True and provenance["computed_at"] == iso(now)  # to the microsecond
    assert wb.get_many(["a"], "m2") == [None]
    wb.close()
    wb.put_many([("c", {"v": 3.0})], "m1", now)  # served again after a close: a new thread
    wb.close()
    assert values(wb.get_many(["c"], "m1")) == [3.0] and tally.rows == {"written": 3}
    store.close()


def test_a_row_is_served_only_within_this_servers_ttl(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.write_back([WrittenBack("a", {"v": 1.0}, "m1", time.time() - 30, time.time() + 3600)])
    assert values(StoreWriteBack(store, 3600.0).get_many(["a"], "m1")) == [1.0]
    assert values(StoreWriteBack(store, 10.0).get_many(["a"], "m1")) == [None]  # older than 10 s
    store.close()


def test_a_full_queue_drops_and_counts() -> None:
    tally = Tally()
    wb = StoreWriteBack(MemoryStore(), 60.0, max_pending=3, flush_s=60.0, on_rows=tally)
    wb.put_many([(f"k{i}", {"v": i}) for i in range(5)], "m1", time.time())
    assert tally.rows == {"dropped": 2}
    wb.close()
    assert tally.rows == {"dropped": 2, "written": 3}


def test_a_row_the_store_refuses_loses_only_itself(tmp_path: Path) -> None:
    store, tally = SQLiteStore(tmp_path / "s.db"), Tally()
    wb = StoreWriteBack(store, 60.0, flush_s=60.0, on_rows=tally)
    wb.put_many([("a", {"v": 1}), ("big", {"v": 2**70}), ("c", {"v": 3})], "m1", time.time())
    wb.close()
    assert tally.rows == {"written": 2, "failed": 1}
    assert values(wb.get_many(["a", "big", "c"], "m1")) == [1, None, 3]
    store.close()


class BrokenOnce(MemoryStore):
    """A memory store whose first write-back fails with a bug (not an AuguryError)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write_back(self, rows: Sequence[WrittenBack]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug")
        super().write_back(rows)


def test_the_writer_survives_a_bug_and_a_closed_store(tmp_path: Path) -> None:
    broken, tally = BrokenOnce(), Tally()
    wb = StoreWriteBack(broken, 60.0, flush_s=0.01, on_rows=tally)
    wb.put_many([("a", {"v": 1})], "m1", time.time())
    deadline = time.monotonic() + 10
    while tally.rows["failed"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    wb.put_many([("b", {"v": 2})], "m1", time.time())
    wb.close()
    assert tally.rows == {"failed": 1, "written": 1} and values(wb.get_many(["a", "b"], "m1")) == [None, 2]
    closed = SQLiteStore(tmp_path / "s.db")
    closed.close()
    tally = Tally()
    wb = StoreWriteBack(closed, 60.0, on_rows=tally)
    wb.put_many([("a", {"v": 1})], "m1", time.time())
    wb.close()
    assert tally.rows == {"failed": 1}
