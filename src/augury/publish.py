"""Publishing: verify a predictions file, then load it into a store as a new version and activate it.

Nothing unverified is published (DESIGN.md, invariant 6): the gates run first, against the store's active
version as the baseline, and a failed gate raises `VerificationFailed` before the store is touched. The
profile computed by verification is saved with the version, so the next publish measures drift against
it without reading the store; so is the evaluator the batch run recorded (`ModelInfo.evaluator`), which
the server puts in the provenance of the version's answers, and each output column's dtype, which the
server's v2 metadata and responses name. A file written with key columns has the canonical hash of
each row's features (`features_key`), which is stored with each record, so a server can tell a request
whose features differ from those the prediction was computed from; the model's input schema the run
recorded is saved with the version too (`INPUTS_META`), so a static server, which has no model, can cast
and hash a request's features as the batch run did. Given the data the predictions were scored from
(``augury publish --inputs``), the profile of its input features is saved too (`verify.inputs`): the
reference a server's live drift monitoring compares the requests' features with. Without it, the files
the batch run recorded scoring are profiled, if they are still there unchanged (else a warning says why
no input profile was stored).

A prediction dataset (a folder written by ``augury batch -o preds/``) is loaded part by part, and a
Parquet file row group by row group, by several writer processes when the store lets other processes
join a publish (Redis; SQLite when asked: `publish_pool`); one piece, one writer or a store that lives
in one process (memory) is loaded as one stream. Either way the gates see every row once, before the
store is touched.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from augury.batch import location
from augury.errors import InputError, VerificationFailed
from augury.publish_pool import load_parts, plan, writers_for
from augury.publish_rows import StoreRows
from augury.schema import DTYPES
from augury.store.base import (
    EVALUATOR_META,
    INPUTS_META,
    MODEL_VERSION_COLUMN,
    OUTPUT_DTYPES_META,
    PredictionStore,
    SharedPublishing,
    VersionInfo,
)
from augury.verify import Checks, Report, verify
from augury.verify.inputs import INPUT_PROFILE_META, profile_inputs, recorded_inputs
from augury.verify.source import PredictionsFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    report: Report
    version: VersionInfo
    #: processes that loaded the rows (1: one stream), and the seconds the gates and the load took
    writers: int = 1
    verify_s: float = 0.0
    load_s: float = 0.0


def publish_predictions(
    path: str | os.PathLike[str],
    store: PredictionStore,
    checks: Checks,
    *,
    ttl_s: float | None = None,
    activate: bool = True,
    inputs: str | os.PathLike[str] | None = None,
    writers: int | None = None,
) -> PublishResult:
    """Verify `path` against `store`'s active version, then publish it; raises VerificationFailed. With
    `inputs` (the data the predictions were scored from), the profile of its features is stored with the
    version too (`INPUT_PROFILE_META`): the reference a server measures live input drift against.
    `writers`: processes that load a dataset's parts (`publish_pool.writers_for`; None: the store's
    default)."""
    where = os.fspath(path) if location.is_url(path) else Path(path)  # (a URL: on an object store)
    if writers is not None:
        writers_for(store, writers, 1)  # a bad count fails before the gates run
    start = time.perf_counter()
    report = verify(where, checks, store.active())
    verified = time.perf_counter()
    try:
        report.raise_if_failed()
    except VerificationFailed as exc:
        raise VerificationFailed(f"refusing to publish: {exc}; nothing was published", report) from None
    with PredictionsFile(where) as pred:
        layout = pred.layout
        if layout.missing or not layout.key_columns:
            raise InputError(
                f"{pred.path} cannot be published: it lacks {', '.join(layout.missing) or 'key columns'}"
            )
        model = dict(layout.model or {})
        model_version = str(model.get("version") or _single_version(pred))
        meta = {
            "source": str(pred.path),
            "model": model.get("name"),
            "key_columns": list(layout.key_columns),
            "key_kind": layout.key_kind,
        }
        if isinstance(model.get("evaluator"), str):  # (files written before augury recorded it have none)
            meta[EVALUATOR_META] = model["evaluator"]
        meta[OUTPUT_DTYPES_META] = output_dtypes(pred.schema, [o.name for o in layout.outputs])
        if layout.inputs is not None:  # (the model's input schema, as the batch run recorded it)
            meta[INPUTS_META] = layout.inputs.to_list()
        if inputs is not None:
            if layout.inputs is None:
                raise InputError(f"{pred.path} does not record the model's input schema (not written by "
                                 f"`augury batch`): its inputs cannot be profiled; publish without --inputs")
            meta[INPUT_PROFILE_META] = profile_inputs(Path(inputs), layout.inputs).to_dict()
        elif layout.inputs is not None and layout.input_files:
            found = recorded_inputs(layout.input_files)  # the data the batch run scored, if unchanged
            if isinstance(found, str):
                log.warning("%s: no input profile stored (the reference for input drift); pass "
                            "--inputs DATA to store one", found)
            else:
                meta[INPUT_PROFILE_META] = profile_inputs(found, layout.inputs).to_dict()
        rows = StoreRows.of(str(pred.path), layout, pred.schema, model_version)
        work = plan(pred.path)
        count = writers_for(store, writers, len(work.pieces))
        if count > 1 and isinstance(store, SharedPublishing):
            version = load_parts(store, work, rows, count, report.profile.row_count, ttl_s=ttl_s,
                                 profile=report.profile.to_dict(), meta=meta, activate=activate)
        else:
            version = store.publish(
                map(rows.convert, pred.batches(rows.columns)),
                model_version=model_version,
                ttl_s=ttl_s,
                profile=report.profile.to_dict(),
                meta=meta,
                activate=activate,
            )
    loaded = time.perf_counter()
    return PublishResult(report, version, count, verified - start, loaded - verified)


def output_dtypes(schema: pa.Schema, outputs: list[str]) -> dict[str, str]:
    """Each output column's dtype as its values come back from the store: its `DTYPES` name when it has
    one (``int32`` stays ``int32``), else by kind (any other integer is ``int64``, float ``float64``,
    text or a dictionary of text ``string``); a column of another type is left out."""
    names = {t: name for name, t in DTYPES.items()}
    found: dict[str, str] = {}
    for column in outputs:
        t = schema.field(column).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if t in names:
            found[column] = names[t]
        elif pa.types.is_integer(t):
            found[column] = "int64"
        elif pa.types.is_floating(t):
            found[column] = "float64"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            found[column] = "string"
    return found


def _single_version(pred: PredictionsFile) -> str:
    for batch in pred.batches([MODEL_VERSION_COLUMN]):
        if batch.num_rows:
            return str(batch.column(0)[0].as_py())
    raise InputError(f"{pred.path} has no rows to publish")
