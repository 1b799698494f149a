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
reference a server's live drift monitoring compares the requests' features with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from augury.errors import InputError, VerificationFailed
from augury.keys import column_keys
from augury.schema import DTYPES
from augury.store.base import (
    COMPUTED_AT_COLUMN,
    EVALUATOR_META,
    FEATURES_KEY_COLUMN,
    INPUTS_META,
    KEY_COLUMN,
    MODEL_VERSION_COLUMN,
    OUTPUT_DTYPES_META,
    PredictionStore,
    VersionInfo,
)
from augury.verify import Checks, Report, verify
from augury.verify.inputs import INPUT_PROFILE_META, profile_inputs
from augury.verify.source import PredictionsFile


@dataclass(frozen=True)
class PublishResult:
    report: Report
    version: VersionInfo


def publish_predictions(
    path: str | os.PathLike[str],
    store: PredictionStore,
    checks: Checks,
    *,
    ttl_s: float | None = None,
    activate: bool = True,
    inputs: str | os.PathLike[str] | None = None,
) -> PublishResult:
    """Verify `path` against `store`'s active version, then publish it; raises VerificationFailed. With
    `inputs` (the data the predictions were scored from), the profile of its features is stored with the
    version too (`INPUT_PROFILE_META`): the reference a server measures live input drift against."""
    path = Path(path)
    report = verify(path, checks, store.active())
    try:
        report.raise_if_failed()
    except VerificationFailed as exc:
        raise VerificationFailed(f"refusing to publish: {exc}; nothing was published", report) from None
    with PredictionsFile(path) as pred:
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
        version = store.publish(
            _store_batches(pred, model_version),
            model_version=model_version,
            ttl_s=ttl_s,
            profile=report.profile.to_dict(),
            meta=meta,
            activate=activate,
        )
    return PublishResult(report, version)


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


def _store_batches(pred: PredictionsFile, model_version: str) -> Iterator[pa.RecordBatch]:
    """The file's rows as store records: `key` (canonical text), `computed_at`, the output columns, and
    `features_key` when the file has one besides its key columns (without key columns, the key is it).

    Raises InputError on a row made by another model version, or with no key."""
    keys = list(pred.layout.key_columns)
    outputs = [o.name for o in pred.layout.outputs]
    hashed = FEATURES_KEY_COLUMN in pred.schema.names and FEATURES_KEY_COLUMN not in (*keys, *outputs)
    extra = [FEATURES_KEY_COLUMN] if hashed else []
    for batch in pred.batches([*keys, *outputs, MODEL_VERSION_COLUMN, COMPUTED_AT_COLUMN, *extra]):
        versions = pc.unique(batch.column(MODEL_VERSION_COLUMN)).to_pylist()
        if any(v != model_version for v in versions):
            raise InputError(
                f"{pred.path} mixes model versions ({', '.join(map(str, versions))}); "
                f"publish one model version at a time"
            )
        for c in keys:
            if batch.column(c).null_count:
                raise InputError(f"{pred.path} has rows with no value in key column {c!r}")
        yield pa.RecordBatch.from_arrays(
            [column_keys(batch, keys), batch.column(COMPUTED_AT_COLUMN), *(batch.column(c) for c in outputs),
             *(batch.column(c) for c in extra)],
            names=[KEY_COLUMN, COMPUTED_AT_COLUMN, *outputs, *extra],
        )
