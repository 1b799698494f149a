"""What live drift is measured against: the reference profiles of the inputs and of the predictions.

A server takes its reference from, in order:

1. ``--reference DATA`` (Parquet or CSV, e.g. the model's validation set): its features are profiled
   (`verify.inputs.profile_inputs`) and, with a model, the first `PREDICT_ROWS` rows are scored to
   profile the predictions the model gives on it;
2. the model's manifest (``reference = "valid.parquet"``), read the same way;
3. the store's active version: the profile of its predictions (every publish stores one) and of the
   inputs it scored (stored by ``augury publish --inputs``).

Each profile is in `verify.profile.Profile`'s format, so drift is PSI over the reference's own bins, as
the publish gate computes it. A reference without a profile of one side leaves that side unwatched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from augury.errors import AuguryError, InputError
from augury.models import Model
from augury.models.base import predict_checked
from augury.schema import conform
from augury.store.base import VersionInfo
from augury.verify.inputs import INPUT_PROFILE_META, data_batches, profile_inputs
from augury.verify.profile import Profile, profile_predictions

log = logging.getLogger(__name__)

#: reference rows scored by the model to profile its predictions (a sample is enough for deciles).
PREDICT_ROWS = 20_000
#: `ModelInfo.meta` key of the manifest's reference data (`models._common.REFERENCE_META`).
MANIFEST_KEY = "reference"


@dataclass(frozen=True)
class Reference:
    """Reference profiles of the inputs and of the predictions (None: not known), and where they came
    from, in words."""

    inputs: Profile | None
    predictions: Profile | None
    source: str

    @classmethod
    def from_version(cls, info: VersionInfo) -> Reference:
        """The profiles a published store version keeps (an unreadable one is left out, and logged)."""
        where = f"store version {info.version}"
        raw = info.meta.get(INPUT_PROFILE_META)
        return cls(_profile(raw, f"{where}'s input profile") if isinstance(raw, dict) else None,
                   _profile(info.profile, f"{where}'s profile") if info.profile else None, where)

    @classmethod
    def from_data(cls, path: str | Path, model: Model) -> Reference:
        """Profiles of the data at `path` and of `model`'s predictions on its first rows; InputError if
        it cannot be read or lacks a feature, PredictionError if the model cannot score it."""
        schema = model.info.inputs
        inputs = profile_inputs(path, schema)
        scored: list[pa.RecordBatch] = []
        left = PREDICT_ROWS
        for batch in data_batches(Path(path), schema.names):
            if left <= 0:
                break
            cast = conform(batch.slice(0, left), schema).batch
            left -= cast.num_rows
            if cast.num_rows:
                scored.append(predict_checked(model, cast))
        predictions = (profile_predictions(pa.Table.from_batches(scored), model.info.outputs.names)
                       if scored else None)
        return cls(inputs, predictions, f"reference data {path}")


def reference_for(model: Model | None, data: str | None, active: VersionInfo | None) -> Reference | None:
    """The server's reference (see the module docstring), or None when nothing gives one."""
    if data is not None:
        if model is None:
            raise InputError("--reference needs a model to score it (a static server takes its reference "
                             "from the store's active version)")
        return Reference.from_data(data, model)
    manifest = model.info.meta.get(MANIFEST_KEY) if model is not None else None
    if isinstance(manifest, str) and model is not None:
        return Reference.from_data(manifest, model)
    return Reference.from_version(active) if active is not None else None


def _profile(data: dict[str, object], what: str) -> Profile | None:
    try:
        return Profile.from_dict(data)
    except AuguryError as exc:
        log.warning("%s is unreadable, so drift is not measured against it: %s", what, exc)
        return None
