"""`verify`: run every gate over a predictions file in one streaming pass.

The file is read once, batch by batch (`augury.verify.source.BATCH_ROWS` rows at a time), feeding the
profile builder and the gates' counters; the gates are judged after the pass. Memory is bounded by the
batch size, the profile's sample (`augury.verify.profile.SAMPLE_BUDGET`), the golden set and the key
counter's spill file (`augury.verify.unique`); only a file with repeated keys has its key columns read
a second time, to show a few of them.
"""

from __future__ import annotations

from pathlib import Path

from augury.store.base import COMPUTED_AT_COLUMN, MODEL_VERSION_COLUMN, VersionInfo
from augury.verify import gates
from augury.verify.config import Checks
from augury.verify.counters import BinCounter, ProbaSumCounter, ProvenanceCounter, RangeCounter
from augury.verify.drift import Baseline, drift_edges, drift_gate
from augury.verify.golden import GoldenMatcher
from augury.verify.profile import NumericChunk, ProfileBuilder
from augury.verify.report import Report, skipped
from augury.verify.source import PredictionsFile
from augury.verify.unique import KeyCount, KeyCounter


def verify(predictions: str | Path, checks: Checks | None = None,
           baseline: Baseline | VersionInfo | None = None) -> Report:
    """Verify the predictions file `predictions` against `checks` (defaults when None).

    `baseline` is the active published version (a `VersionInfo`, or a `Baseline`): it enables the row-change
    and drift gates, which are skipped without it. Returns the `Report` of every gate, whatever the
    outcome; a missing or unreadable file is an `InputError`, a bad golden file a `ConfigError`.
    """
    checks = checks if checks is not None else Checks()
    if isinstance(baseline, VersionInfo):
        baseline = Baseline.from_version(baseline)
    key_count: KeyCount | None = None
    with PredictionsFile(predictions) as f, KeyCounter(layout_keys(f), f.num_rows) as keys:
        layout = f.layout
        golden = GoldenMatcher(checks.golden, layout) if checks.golden and checks.golden.enabled else None
        ranges = RangeCounter(gates.effective_ranges(checks, layout))
        proba_on = checks.probabilities.enabled and layout.task == "classification"
        proba = ProbaSumCounter([o.name for o in layout.proba], checks.probabilities.sum_tolerance)
        bins = None
        if checks.drift.enabled and baseline is not None and baseline.profile is not None:
            bins = BinCounter(drift_edges(baseline.profile, layout))
        provenance = ProvenanceCounter()
        builder = ProfileBuilder(layout)
        numeric_names = [o.name for o in layout.outputs if o.kind == "numeric"]
        present = [c for c in (MODEL_VERSION_COLUMN, COMPUTED_AT_COLUMN) if c in f.schema.names]
        columns = ([o.name for o in layout.outputs] + present + (golden.columns if golden else [])
                   + keys.key_columns)
        for batch in f.batches(columns):
            numeric = {n: NumericChunk.of(batch.column(n)) for n in numeric_names}
            builder.add(batch, numeric)
            ranges.add(numeric)
            if proba_on:
                proba.add(batch)
            if bins is not None:
                bins.add(numeric)
            provenance.add(batch)
            if golden is not None:
                golden.add(batch)
            if keys.key_columns:
                keys.add(batch)
        profile = builder.finish()
        if keys.key_columns:
            key_count = keys.finish(lambda: f.batches(keys.key_columns))
    results = (
        gates.columns_gate(layout),
        gates.provenance_gate(layout, provenance, present),
        gates.keys_gate(layout, key_count),
        gates.rows_gate(checks.rows, profile.row_count),
        gates.row_change_gate(checks.rows, profile.row_count, baseline),
        gates.finite_gate(checks.finite.enabled, layout, profile),
        gates.ranges_gate(ranges.counts, layout, profile),
        gates.probabilities_gate(checks.probabilities.enabled,
                                 proba if layout.task == "classification" else None),
        gates.class_shares_gate(checks.class_shares, layout, profile),
        drift_gate(checks.drift, baseline, profile, bins, layout),
        golden.result() if golden is not None else skipped("golden", "no golden set configured"),
    )
    return Report(f.path, results, profile, layout.model, layout.notes)


def layout_keys(f: PredictionsFile) -> list[str]:
    """The key columns to count: none when one is missing (the columns gate reports it)."""
    keys = list(f.layout.key_columns)
    return keys if all(k in f.schema.names for k in keys) else []
