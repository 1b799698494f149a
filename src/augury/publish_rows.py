"""Predictions as store records: what `augury publish` writes for each batch read from a predictions file
or a dataset part, in one process or in many (`publish_pool`).

A `StoreRows` is small and picklable, so a writer process converts its own parts exactly as a single
stream converts the whole file: `key` (the canonical text of the key columns), `computed_at`, the output
columns, and `features_key` when the file has one besides its key columns (without key columns, the key
is it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from augury.errors import InputError
from augury.keys import column_keys
from augury.store.base import COMPUTED_AT_COLUMN, FEATURES_KEY_COLUMN, KEY_COLUMN, MODEL_VERSION_COLUMN
from augury.verify.source import Layout


@dataclass(frozen=True)
class StoreRows:
    """How one publish turns the batches of predictions read from `source` into store records."""

    source: str
    key_columns: tuple[str, ...]
    outputs: tuple[str, ...]
    extra: tuple[str, ...]
    model_version: str

    @classmethod
    def of(cls, source: str, layout: Layout, schema: pa.Schema, model_version: str) -> StoreRows:
        keys = tuple(layout.key_columns)
        outputs = tuple(o.name for o in layout.outputs)
        hashed = FEATURES_KEY_COLUMN in schema.names and FEATURES_KEY_COLUMN not in (*keys, *outputs)
        return cls(source, keys, outputs, (FEATURES_KEY_COLUMN,) if hashed else (), model_version)

    @property
    def columns(self) -> list[str]:
        """The columns to read from the predictions."""
        return [*self.key_columns, *self.outputs, MODEL_VERSION_COLUMN, COMPUTED_AT_COLUMN, *self.extra]

    def convert(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`batch` (read with `columns`) as store records. InputError on a row made by another model
        version, or with no key."""
        versions = pc.unique(batch.column(MODEL_VERSION_COLUMN)).to_pylist()
        if any(v != self.model_version for v in versions):
            raise InputError(
                f"{self.source} mixes model versions ({', '.join(map(str, versions))}); "
                f"publish one model version at a time"
            )
        for c in self.key_columns:
            if batch.column(c).null_count:
                raise InputError(f"{self.source} has rows with no value in key column {c!r}")
        return pa.RecordBatch.from_arrays(
            [column_keys(batch, list(self.key_columns)), batch.column(COMPUTED_AT_COLUMN),
             *(batch.column(c) for c in self.outputs), *(batch.column(c) for c in self.extra)],
            names=[KEY_COLUMN, COMPUTED_AT_COLUMN, *self.outputs, *self.extra],
        )
