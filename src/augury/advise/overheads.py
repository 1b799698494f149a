"""The server's own cost outside the model, which the latency prediction adds to the model's: built-in
estimates, or figures measured on this machine by ``augury advise --calibrate`` and kept in a small file.

One worker of ``augury serve`` is one event loop and one model thread on one core, so its work outside
the model call takes the model's core too: per batch (waking the loop, assembling the batch, splitting
its results; and for a model slower than the server's `--inline-below-ms` the hop to the model thread and
back) and per request (HTTP, JSON, the cast, provenance, metrics, the response). A fast model is scored
on the loop's own thread (`inline`), a slower one on the model thread (`hop`): the two paths cost
differently, so each has its own per-batch figure. `round_trip_s` is a trivial request's round trip on
127.0.0.1 (client, kernel, HTTP), which a client sees on top of the server's work. `stalls` are the
times the server's core is taken from it (`augury.advise.stalls`), measured with the server idle;
`pauses_*` the server's own pauses, whose number follows its requests, measured under load (for each path).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from augury.advise.stalls import NO_PAUSES, NONE, Pauses, Stalls
from augury.errors import ConfigError, InputError

#: the server's default `--inline-below-ms` (augury.serve.settings.ServeSettings.inline_below_ms): batches
#: whose model call takes less are scored on the loop's thread.
INLINE_BELOW_S = 0.5e-3
#: the file's format; a file of another format is refused (run --calibrate again). Format 1 had a
#: multiplicative spread (`jitter`) where format 2 has the core's stalls; format 3 adds the server's own
#: pauses (a format-2 file would predict without them, as optimistic as before).
FORMAT = 3
FILENAME = "serve-overheads.json"


@dataclass(frozen=True)
class ServingOverheads:
    """CPU seconds `augury serve` spends outside the model per batch (on the loop's thread: `inline`; on
    the model thread: `hop`) and per request; to wake its idle loop for a batch (`per_wake_*`: paid by a
    batch whose first request found the loop idle); a trivial request's round trip; where they come
    from."""

    per_batch_inline_s: float
    per_batch_hop_s: float
    per_request_s: float
    round_trip_s: float
    source: str
    calibrated: bool = False
    measured_at: str | None = None
    machine: str | None = None
    path: str | None = None
    details: tuple[tuple[str, float], ...] = ()
    #: the core's stalls (none for the built-in estimates).
    stalls: Stalls = NONE
    per_wake_inline_s: float = 0.0
    per_wake_hop_s: float = 0.0
    #: the server's own pauses under load, scoring on the loop's thread and on the model thread.
    pauses_inline: Pauses = NO_PAUSES
    pauses_hop: Pauses = NO_PAUSES
    #: what calibration noticed (the machine's load changed while it ran), kept in the file.
    notes: tuple[str, ...] = ()
    #: whose pauses these are, for the output: the calibration server's, or (`with_model_pauses`) those
    #: of a server of the model advised on; and that server's figures. Not kept in the file.
    pauses_used: str = ""
    model_server: tuple[tuple[str, float], ...] = ()
    #: where `per_request_s` comes from when not from `source` (`with_model_work`). Not kept in the file.
    work_used: str = ""

    def per_batch_s(self, call_s: float) -> float:
        """The per-batch cost for a model call of `call_s` seconds (inline below the server's threshold)."""
        return self.per_batch_inline_s if call_s < INLINE_BELOW_S else self.per_batch_hop_s

    def per_wake_s(self, call_s: float) -> float:
        """The cost of waking the idle loop, for a model call of `call_s` seconds."""
        return self.per_wake_inline_s if call_s < INLINE_BELOW_S else self.per_wake_hop_s

    def pauses_for(self, call_s: float) -> Pauses:
        """The server's own pauses, for a model call of `call_s` seconds."""
        return self.pauses_inline if call_s < INLINE_BELOW_S else self.pauses_hop

    @property
    def pauses_said(self) -> str:
        """Whose pauses the prediction draws, in words."""
        if self.pauses_used:
            return self.pauses_used
        if not self.calibrated:
            return "none (built-in estimates)"
        return "the calibration server's (a tiny model)"

    def with_model_pauses(self, pauses: Pauses, said: str,
                          details: tuple[tuple[str, float], ...] = ()) -> ServingOverheads:
        """These overheads with `pauses`, measured on a server of the model advised on, in place of the
        calibration server's, for both paths (the model takes one of them): they hold the server's own
        pauses too, as the calibration server had them, and the model's, which it cannot have."""
        return replace(self, pauses_inline=pauses, pauses_hop=pauses, pauses_used=said, model_server=details)

    def with_model_work(self, per_request_s: float, said: str) -> ServingOverheads:
        """These overheads with the server's own work per request measured on a server of the model
        advised on (`served.own_work`), in place of the calibration server's; `said` says so."""
        return replace(self, per_request_s=per_request_s, work_used=said)

    def noted(self, note: str, details: tuple[tuple[str, float], ...] = ()) -> ServingOverheads:
        """These overheads with whose pauses they are said (`pauses_used`), when a model's server's could
        not be measured."""
        return replace(self, pauses_used=note, model_server=details)

    def to_dict(self) -> dict[str, Any]:
        return {"per_batch_inline_us": round(self.per_batch_inline_s * 1e6, 1),
                "per_batch_hop_us": round(self.per_batch_hop_s * 1e6, 1),
                "per_request_us": round(self.per_request_s * 1e6, 1),
                "per_request_from": self.work_used or self.source,
                "per_wake_inline_us": round(self.per_wake_inline_s * 1e6, 1),
                "per_wake_hop_us": round(self.per_wake_hop_s * 1e6, 1),
                "round_trip_us": round(self.round_trip_s * 1e6, 1),
                "source": self.source, "calibrated": self.calibrated, "measured_at": self.measured_at,
                "machine": self.machine, "path": self.path,
                "details": {k: round(v, 7) for k, v in self.details},
                "stalls_per_s": round(self.stalls.per_s, 2),
                "stalled_share": round(self.stalls.share, 5),
                "stall_p50_p90_max_ms": [round(x * 1e3, 3) for x in _pick(self.stalls.durations_s,
                                                                           (0.5, 0.9, 1.0))],
                **{f"pauses_{path}": {"per_request": round(p.per_request, 5),
                                      "p50_p90_max_ms": [round(x * 1e3, 3) for x in _pick(p.durations_s,
                                                                                           (0.5, 0.9, 1.0))]}
                   for path, p in (("inline", self.pauses_inline), ("hop", self.pauses_hop))},
                "pauses_used": self.pauses_said, "notes": list(self.notes),
                "model_server": {k: round(v, 7) for k, v in self.model_server}}


def _pick(values: tuple[float, ...], shares: tuple[float, ...]) -> list[float]:
    return [values[min(int(q * len(values)), len(values) - 1)] for q in shares] if values else []


#: fitted on 2026-11-25 on the project's 2-core machine, before the server scored fast models on its loop
#: thread and had its own HTTP protocol (BENCHMARKS.md, issue 4): estimates anywhere else.
BUILT_IN = ServingOverheads(
    per_batch_inline_s=200e-6, per_batch_hop_s=200e-6, per_request_s=45e-6, round_trip_s=0.0,
    source="built-in estimates (fitted on a 2-core machine on 2026-11-25; run `augury advise --calibrate` "
           "to measure this machine)")


def default_path() -> Path:
    """Where calibration is kept: $AUGURY_CALIBRATION, else $XDG_CACHE_HOME/augury (~/.cache/augury)."""
    given = os.environ.get("AUGURY_CALIBRATION")
    if given:
        return Path(given)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "augury" / FILENAME


def save(overheads: ServingOverheads, path: Path) -> Path:
    """Write `overheads` to `path` (its folder created), atomically (a temporary file, then a rename)."""
    fields = {k: v for k, v in asdict(overheads).items()
              if k not in ("pauses_used", "model_server", "work_used")}
    doc = {"format": FORMAT, **fields, "path": None, "details": dict(overheads.details),
           "notes": list(overheads.notes),
           "stalls": {"per_s": overheads.stalls.per_s, "durations_s": list(overheads.stalls.durations_s)},
           **{name: {"per_request": p.per_request, "durations_s": list(p.durations_s)}
              for name, p in (("pauses_inline", overheads.pauses_inline),
                              ("pauses_hop", overheads.pauses_hop))}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"cannot write the calibration file {path}: {exc}") from exc
    return path


def load(path: Path) -> ServingOverheads:
    """The overheads stored at `path`; InputError if it cannot be read or is not a calibration file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read the calibration file {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{path} is not an augury calibration file of format {FORMAT}; run "
                         f"`augury advise --calibrate` again")
    try:
        values = {k: float(doc[k]) for k in ("per_batch_inline_s", "per_batch_hop_s", "per_request_s",
                                              "round_trip_s")}
        values.update({k: float(doc.get(k, 0.0)) for k in ("per_wake_inline_s", "per_wake_hop_s")})
        details = tuple((str(k), float(v)) for k, v in dict(doc.get("details") or {}).items())
        given = dict(doc.get("stalls") or {})
        stalls = Stalls(float(given.get("per_s", 0.0)), tuple(float(x) for x in given.get("durations_s", [])))
        pauses = {name: Pauses(float(dict(doc.get(name) or {}).get("per_request", 0.0)),
                               tuple(float(x) for x in dict(doc.get(name) or {}).get("durations_s", [])))
                  for name in ("pauses_inline", "pauses_hop")}
        notes = tuple(str(n) for n in doc.get("notes") or ())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: a calibration figure is missing or not a number ({exc})") from exc
    except ConfigError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if any(not (math.isfinite(v) and 0 <= v < 1) for v in values.values()):
        raise InputError(f"{path}: calibration figures must be seconds between 0 and 1, got {values}")
    return ServingOverheads(**values, source=str(doc.get("source") or f"calibrated ({path})"),
                            calibrated=True, measured_at=_text(doc.get("measured_at")),
                            machine=_text(doc.get("machine")), path=str(path), details=details,
                            stalls=stalls, pauses_inline=pauses["pauses_inline"],
                            pauses_hop=pauses["pauses_hop"], notes=notes, pauses_used="", model_server=(),
                            work_used="")


def resolve(path: str | os.PathLike[str] | None) -> ServingOverheads:
    """The overheads for an advice: those stored at `path` (which must exist when given), else at the
    default path if there, else the built-in estimates."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"no calibration file at {p}; make one with `augury advise --calibrate "
                              f"--calibration {p}`")
        return load(p)
    p = default_path()
    return load(p) if p.exists() else BUILT_IN


def _text(value: object) -> str | None:
    return str(value) if value is not None else None
