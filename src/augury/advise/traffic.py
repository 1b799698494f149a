"""Reading a traffic log and measuring what it says: catalogue share, coverage curve, new keys, rates.

A log holds past requests, one per row, in Parquet, CSV or JSON Lines: the key column(s) (as given with
``--key``) or the model's features (keyed by the canonical feature hash, as the server keys them), and,
when known, the time of each request in a column named ``timestamp``, ``ts`` or ``time`` (a timestamp,
ISO 8601 text, or Unix seconds; milliseconds or microseconds are recognised by their size). The pure
statistics (`traffic_stats`) work on integer key ids and are what the tests check on known samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from augury.advise.catalogue import Catalogue, batches, open_input
from augury.advise.measurements import CoveragePoint, HourStat, TrafficStats
from augury.advise.timestamps import seconds_of
from augury.batch.location import open_binary
from augury.errors import InputError
from augury.keys import column_keys, feature_keys
from augury.schema import Schema, conform

#: names recognised as the request time column, in order of preference.
TIME_COLUMNS = ("timestamp", "ts", "time")
#: the most requests read from a log (the rest are ignored, and the stats say so).
MAX_REQUESTS = 5_000_000
#: points on the coverage curve (log-spaced head sizes).
CURVE_POINTS = 80
#: what the log is, in the errors of reading it.
LOG = "the traffic log"


def read_traffic(path: str | os.PathLike[str], schema: Schema, key_columns: Sequence[str],
                 catalogue: Catalogue, catalogue_rows: int) -> TrafficStats:
    """Key every request of the log at `path` and measure it against `catalogue` (a sample of
    `catalogue_rows` examples; read with `hashes` unless the log has the key columns). InputError names
    what is wrong with a log that cannot be used."""
    names = column_names(path)
    keys = list(key_columns)
    by_key = bool(keys) and all(c in names for c in keys)
    missing = [n for n in schema.names if n not in names]
    if not by_key and missing:
        has = ", ".join(names) or "none"
        if keys:
            raise InputError(f"traffic log {path} has neither the key column(s) {', '.join(keys)} nor all "
                             f"the model's features ({', '.join(missing)} missing); its columns: {has}")
        raise InputError(f"traffic log {path} lacks the model's feature(s) {', '.join(missing)}, so its "
                         f"requests cannot be keyed; log the features, or give the key column with --key "
                         f"(its columns: {has})")
    time_col = next((c for c in TIME_COLUMNS if c in names), None)
    columns = list(keys) if by_key else list(schema.names)
    source = open_input(path, columns + ([time_col] if time_col else []), LOG)
    ids: dict[str, int] = {}
    id_parts: list[np.ndarray] = []
    time_parts: list[np.ndarray] = []
    rejected, read, first_problem = 0, 0, None
    for batch in batches(source):
        if read >= MAX_REQUESTS:
            break
        batch = batch.slice(0, MAX_REQUESTS - read)
        read += batch.num_rows
        if by_key:
            ok = np.ones(batch.num_rows, dtype=bool)
            for c in keys:
                ok &= ~np.asarray(batch.column(c).is_null().to_numpy(zero_copy_only=False), dtype=bool)
            good = batch.filter(pa.array(ok)) if not ok.all() else batch
            found = column_keys(good, keys)
            if not ok.all():
                first_problem = first_problem or f"a request has no value in key column(s) {', '.join(keys)}"
        else:
            conformed = conform(batch, schema)
            if conformed.errors:
                first_problem = first_problem or conformed.errors[0].reason
            ok = np.zeros(batch.num_rows, dtype=bool)
            ok[conformed.indices] = True
            good = batch.filter(pa.array(ok)) if not ok.all() else batch
            found = feature_keys(conformed.batch, schema)
        rejected += int((~ok).sum())
        id_parts.append(np.fromiter((ids.setdefault(k, len(ids)) for k in found.to_pylist()),
                                    dtype=np.int64, count=len(found)))
        if time_col:
            time_parts.append(seconds_of(good.column(time_col), f"{path}: column {time_col!r}"))
    if not ids:
        why = f" (first problem: {first_problem})" if first_problem else ""
        raise InputError(f"traffic log {path} holds no request that can be keyed for this model{why}")
    key_ids = np.concatenate(id_parts)
    times = np.concatenate(time_parts) if time_col else None
    names_by_id = list(ids)
    pool = catalogue.key_set if by_key else catalogue.hash_set
    in_catalogue = np.fromiter((k in pool for k in names_by_id), dtype=bool, count=len(names_by_id))
    sample_share = (len(pool) / catalogue_rows) if catalogue_rows else 1.0
    notes = [f"read the first {MAX_REQUESTS:,} requests of the log"] if read >= MAX_REQUESTS else []
    if rejected:
        notes.append(f"{rejected:,} request(s) could not be keyed and were left out ({first_problem})")
    return traffic_stats(key_ids, in_catalogue, times, sample_share=min(sample_share, 1.0),
                         key=", ".join(keys) if by_key else "feature hash", rejected=rejected,
                         notes=tuple(notes))


def column_names(path: str | os.PathLike[str]) -> list[str]:
    """The columns of the log at `path` (its first file; JSON Lines: the fields of its first 1,000 lines)."""
    source = open_input(path, [], LOG)
    first = source.files[0]  # (a local path or an object-store URL: `batch.location`)
    try:
        if source.format == "parquet":
            return list(source.metadata(first).schema.names)
        if source.format == "csv":
            with open_binary(first) as fh:
                return list(pacsv.open_csv(fh).schema.names)
        seen: dict[str, None] = {}
        with open_binary(first) as fh:
            for n, line in enumerate(fh):
                if n >= 1000:
                    break
                try:
                    obj = orjson.loads(line) if line.strip() else None
                except orjson.JSONDecodeError:
                    continue  # a bad line is skipped here as when the log is read
                if isinstance(obj, dict):
                    seen.update(dict.fromkeys(obj))
        return list(seen)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read the traffic log {first}: {exc}") from exc


def traffic_stats(key_ids: np.ndarray, in_catalogue: np.ndarray, times: np.ndarray | None = None, *,
                  sample_share: float = 1.0, key: str = "feature hash", rejected: int = 0,
                  notes: tuple[str, ...] = ()) -> TrafficStats:
    """The statistics of requests `key_ids` (ids 0..K-1, in log order) whose key `in_catalogue[id]` is
    known to be in the catalogue, optionally at Unix `times`. With a sampled catalogue (`sample_share`
    < 1) the catalogue share is scaled up from the sample, and the curve ranks every requested key."""
    n = len(key_ids)
    if times is not None:
        order = np.argsort(times, kind="stable")
        key_ids, times = key_ids[order], times[order]
    counts = np.bincount(key_ids, minlength=len(in_catalogue))
    raw_share = float(counts[in_catalogue].sum()) / n
    estimated = sample_share < 1.0
    share = min(1.0, raw_share / sample_share) if estimated else raw_share
    ranked = np.sort(counts if estimated else counts[in_catalogue])[::-1]
    ranked = ranked[ranked > 0]
    coverage = coverage_curve(ranked, n, cap=share)
    first = np.zeros(n, dtype=bool)
    first[np.unique(key_ids, return_index=True)[1]] = True
    late = first[n // 2:]
    hourly: tuple[HourStat, ...] = ()
    qps = peak = span = None
    if times is not None and n:
        span = float(times[-1] - times[0])
        if span > 0:
            qps = n / span
            minute = np.floor((times - times[0]) / 60.0).astype(np.int64)
            peak = float(np.bincount(minute).max()) / 60.0 if span >= 60 else qps
        hourly = _hourly(times, first)
    return TrafficStats(n, int((counts > 0).sum()), share, coverage, float(first.mean()),
                        float(late.mean()) if len(late) else 0.0, key, estimated, hourly, qps, peak, span,
                        rejected, notes)


def coverage_curve(ranked_counts: np.ndarray, requests: int, *, cap: float = 1.0,
                   points: int = CURVE_POINTS) -> tuple[CoveragePoint, ...]:
    """Head size -> share of `requests` for request counts sorted in decreasing order, at log-spaced
    head sizes (always including 1 and the last), each share capped at `cap`."""
    k = len(ranked_counts)
    if k == 0 or requests == 0:
        return ()
    cumulative = np.cumsum(ranked_counts) / requests
    heads = np.unique(np.round(np.geomspace(1, k, min(points, k))).astype(np.int64))
    return tuple(CoveragePoint(int(h), min(float(cumulative[h - 1]), cap)) for h in heads)


def _hourly(times: np.ndarray, first: np.ndarray, limit: int = 24 * 92) -> tuple[HourStat, ...]:
    origin = np.floor(times[0] / 3600.0) * 3600.0
    hour = np.floor((times - origin) / 3600.0).astype(np.int64)
    total = np.bincount(hour)
    new = np.bincount(hour, weights=first.astype(np.float64), minlength=len(total))
    stats = [HourStat(float(origin + 3600.0 * h), int(total[h]), float(new[h] / total[h]))
             for h in np.flatnonzero(total)]
    return tuple(stats[-limit:])
