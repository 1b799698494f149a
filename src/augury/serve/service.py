"""What the routes share: the served model's identity, readiness, metadata, and the data plane.

A `Service` is built once per app by `create_app`. The routes do HTTP (bodies, headers, status codes)
and the codecs do formats; everything about *what* is served lives here and in the router.

**The data plane.** `predict`, `predict_or_miss` and `lookup` are the transport-free calls every
prediction route makes (v1 predict and lookup, v2 infer: `serve.hot`): examples already decoded and cast
in, answers with their provenance out. Each answered request then goes through `_served`: its metrics by
source, and the monitor's `tap` (`monitor.tap`), which hands its examples and answers to the observers
(drift, shadow checks) off the request's path. A new transport calls these and gets the same monitoring.

**Readiness and the store.** A static server is ready only while its store can answer: it has an active
version *and* a lookup reaches that version's rows. The pointer alone is not enough: with the version's
table dropped (or pages of the file damaged) the active version still reads fine while every lookup that
no cache answers fails. So `store_problem` reads the active version and looks up a key that was never
published, a different one each time so that no cache can answer it, and the answer is reused for
`STORE_CHECK_S`: a probe every 100 ms costs the store one check a second. The check runs on a thread,
never on the event loop (`refresh_store`), and one that takes longer than `PROBE_WAIT_S` counts as a
store that cannot answer. A hybrid server stays ready
with a failing store, since it computes every example that has features (only key-only lookups get
503); its readiness body says the store is down (``"degraded"``). The client is told that the store
cannot answer; the cause (a path, SQLite's words) is logged when readiness changes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, cast

from augury.errors import NotFoundError, StoreError
from augury.models import Model
from augury.monitor import ServeMetrics
from augury.monitor.tap import Tap
from augury.serve.answers import Answer, Conflict, Example
from augury.serve.codec_v2 import KEY_INPUT, output_columns
from augury.serve.errors import quoted
from augury.serve.lookup_memo import LookupMemo, decoded
from augury.serve.router import Router
from augury.serve.settings import ServeSettings
from augury.serve.v2_tensors import OF_DTYPE
from augury.store import PredictionStore, VersionInfo
from augury.store.base import OUTPUT_DTYPES_META, reads_block
from augury.store.versions import info_of

log = logging.getLogger(__name__)

#: how long `Service.store_problem`'s answer is reused (readiness probes stay cheap for the store).
STORE_CHECK_S = 1.0
#: what a readiness body says of a store that cannot answer (the cause is logged, not sent).
STORE_DOWN = "the prediction store cannot answer right now"
#: readiness checks look up this prefix and a counter: keys never published, each new to every cache.
PROBE_KEY = "\x00augury-readiness-probe-"
#: how long a readiness answer waits for the store check (`Service.refresh_store`).
PROBE_WAIT_S = 1.0


def augury_version() -> str:
    try:
        return metadata.version("augury")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class Service:
    """The served model (and/or store) behind the routes."""

    settings: ServeSettings
    name: str
    mode: str
    model: Model | None
    store: PredictionStore | None
    router: Router
    metrics: ServeMetrics
    openapi: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    #: where answered requests go for monitoring (None: nowhere; `create_app` sets it)
    tap: Tap | None = None
    #: encoded answers to lookups by key (None: none kept; `create_app` sets it; `serve.lookup_memo`)
    memo: LookupMemo | None = None
    #: static mode: the store version last asked about by `outputs` (versions never change)
    _recent: VersionInfo | None = field(default=None, init=False, repr=False)
    #: `store_problem`'s last answer and when it was found (time.monotonic())
    _store_checked: tuple[float, str | None] = field(default=(-float("inf"), None), init=False, repr=False)
    _probes: itertools.count[int] = field(default_factory=itertools.count, init=False, repr=False)
    #: the store check running on a thread (`refresh_store`), if any
    _probing: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    def check(self, path_params: Mapping[str, Any]) -> None:
        """NotFoundError unless the path names this model (and, if it names one, a version of it)."""
        name = path_params.get("name")
        if name != self.name:
            raise NotFoundError(f"unknown model {quoted(name)}; this server serves {self.name!r}")
        version = path_params.get("version")
        if version is not None and version not in self.versions():
            known = ", ".join(map(repr, self.versions())) or "none"
            raise NotFoundError(f"model {self.name!r} has no version {quoted(version)} (versions: {known})")

    def versions(self) -> list[str]:
        """The model version served: the model's, or in static mode the active store version's model's."""
        if self.model is not None:
            return [self.model.info.version]
        active = self._active()
        return [active.model_version] if active is not None else []

    def not_ready(self) -> str | None:
        """Why the server cannot answer, or None when it is ready: static mode needs a store that answers
        (`store_problem`); dynamic and hybrid a started model (hybrid computes what the store cannot)."""
        if not self.started:
            return "the server is starting or stopping"
        return self.store_problem() if self.model is None else None

    def store_problem(self) -> str | None:
        """Why the store cannot answer lookups (no active version, or a check that failed), None when it
        can, or when there is no store: as `refresh_store` last found it (see the module docstring)."""
        return None if self.store is None else self._store_checked[1]

    async def refresh_store(self) -> None:
        """Bring `store_problem` up to date if its answer is older than `STORE_CHECK_S`, off the event
        loop: the check runs on a thread, one at a time, and a check still running after `PROBE_WAIT_S`
        (a store that blocks: every reader busy for its pool timeout, a lock) counts as a store that
        cannot answer, so neither the loop nor a readiness probe waits for it."""
        if self.store is None or time.monotonic() - self._store_checked[0] < STORE_CHECK_S:
            return
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(asyncio.to_thread(self._check_store))
        try:
            await asyncio.wait_for(asyncio.shield(self._probing), PROBE_WAIT_S)
        except TimeoutError:
            if self._store_checked[1] != STORE_DOWN:
                log.warning("the prediction store did not answer a readiness check within %g s", PROBE_WAIT_S)
            self._store_checked = (time.monotonic(), STORE_DOWN)

    def _check_store(self) -> None:
        """`refresh_store`'s check (on a thread): read the active version, look up a never-published key."""
        assert self.store is not None
        now = time.monotonic()
        problem = self._store_checked[1]
        try:
            active = self.store.active()
            found = None if active is not None else "the prediction store has no active version yet"
            if active is not None:
                self.store.get_many([f"{PROBE_KEY}{next(self._probes)}"])
        except StoreError as exc:
            found = STORE_DOWN
            if problem != STORE_DOWN:
                log.warning("the prediction store cannot answer (%s): %s", "lookups by key fail, examples "
                            "are computed" if self.model is not None else "not ready", exc)
        if found is None and problem == STORE_DOWN:
            log.info("the prediction store answers again")
        self._store_checked = (now, found)

    async def predict(self, examples: list[Example], deadline: float | None) -> list[Answer]:
        """The router's answers, timed, counted by source and offered to the monitor (the data plane)."""
        started = time.perf_counter()
        answers = await self.router.predict(examples, deadline)
        self._served(examples, answers, answers, started)
        if self.model is None and answers and reads_block(self.store):
            await self._remember_version(answers[0])
        return answers

    async def _remember_version(self, answer: Answer) -> None:
        """Networked store, static mode: read the record of the store version `answer` came from on a
        thread, if it is not the one remembered, so that `outputs` finds it without a round trip on the
        event loop (once per version)."""
        version = answer.provenance.get("store_version")
        recent = self._recent
        if version is not None and (recent is None or recent.version != str(version)):
            await asyncio.to_thread(self._version, str(version))

    async def predict_or_miss(self, examples: list[Example], deadline: float | None,
                              ) -> Sequence[Answer | Conflict | None]:
        """`predict`, with the static mode's misses left None in their place, and keys sent with other
        features a `Conflict` (`Router.predict_or_miss`)."""
        if self.model is not None:
            return await self.predict(examples, deadline)
        started = time.perf_counter()
        answers = await self.router.predict_or_miss(examples, deadline)
        found = [a for a in answers if isinstance(a, Answer)]
        conflicts = any(isinstance(a, Conflict) for a in answers)
        observed = (cast(Sequence[Answer | None], answers) if not conflicts
                    else [a if isinstance(a, Answer) else None for a in answers])
        self._served(examples, found, observed, started)
        return answers

    async def lookup(self, key: str) -> Answer:
        """The stored (or cached) prediction of `key`, timed, counted and offered to the monitor (on the
        event loop for an in-process store: one key)."""
        started = time.perf_counter()
        answer = await self.router.lookup(key)
        static = answer.provenance["source"] == "static"  # `_served` for one answer, without its loops
        self.metrics.observe_predictions(static, not static, time.perf_counter() - started)
        if self.tap is not None:
            self.tap.offer((Example(key, None),), (answer,))
        return answer

    def served_kept(self, key: str, body: bytes, started: float) -> None:
        """What `lookup` does after its answer, for an answer `memo` kept (its JSON `body`): counted as a
        store hit and a static prediction, timed from `started`, and offered to the monitor (decoded
        only if sampled)."""
        metrics = self.metrics
        metrics.observe_store(1, 0)
        metrics.observe_predictions(1, 0, time.perf_counter() - started)
        if self.tap is not None:
            self.tap.offer_made(_observed, key, body)

    def _served(self, examples: Sequence[Example], found: Sequence[Answer],
                answers: Sequence[Answer | None], started: float) -> None:
        """What every answered request goes through: its metrics by source, then the monitor's tap
        (`monitor.tap`: O(1) here, the observers' work runs on their own thread)."""
        static = sum(1 for a in found if a.provenance["source"] == "static")
        self.metrics.observe_predictions(static, len(found) - static, time.perf_counter() - started)
        if self.tap is not None:
            self.tap.offer(examples, answers)

    def outputs(self, answers: list[Answer] | None = None) -> list[tuple[str, str | None]]:
        """Output columns and v2 datatypes: the model's; in static mode those of the store version that
        `answers` came from (else the active one), with the dtypes it recorded when published, so that the
        metadata and the responses name the same datatypes (None for a version published before they were
        recorded: a response then infers them from its values)."""
        if self.model is not None:
            return output_columns(self.model.info.outputs, ())
        version = answers[0].provenance.get("store_version") if answers else None
        info = self._version(None if version is None else str(version))
        recorded = info.meta.get(OUTPUT_DTYPES_META) if info is not None else None
        dtypes = recorded if isinstance(recorded, dict) else {}
        columns = list(answers[0].values) if answers else (info.columns if info is not None else ())
        return [(name, OF_DTYPE.get(dtypes.get(name, ""))) for name in columns]

    def model_metadata(self) -> dict[str, Any]:
        """The v2 model metadata: inputs, outputs, and how a request may lay its inputs out."""
        key = {"name": KEY_INPUT, "datatype": "BYTES", "shape": [-1]}
        params: dict[str, Any] = {"mode": self.mode, "key_input": KEY_INPUT}
        if self.model is None:
            inputs = [key]
            params["layouts"] = ["a BYTES tensor 'key' [n] of store keys (static mode: lookups only)"]
            platform = "augury_store"
        else:
            info = self.model.info
            schema = info.inputs
            inputs = [{"name": f.name, "datatype": OF_DTYPE[f.dtype], "shape": [-1]} for f in schema.fields]
            params.update(
                features=schema.names,
                allow_missing=[f.name for f in schema.fields if f.allow_missing],
                layouts=[
                    "one tensor per input, named after it, shape [n] or [n, 1]",
                    f"one 2-D tensor [n, {len(schema)}] under any other name, columns in input order "
                    f"(BYTES, or a numeric datatype when every input is numeric)",
                    f"optionally a BYTES tensor '{KEY_INPUT}' [n] of store keys (default: the feature hash)",
                ],
                task=info.task,
                classes=list(info.classes),
                evaluator=info.evaluator,
            )
            platform = f"augury_{info.format}"
        guessed = self._profiled_datatypes() if self.model is None else {}
        outputs = [{"name": n, "datatype": d or guessed.get(n, "BYTES"), "shape": [-1]}
                   for n, d in self.outputs()]
        if self.model is None:
            params["datatypes"] = ("as the active version recorded them when published (a version published "
                                   "before augury recorded them: guessed from its profile)")
        return {"name": self.name, "versions": self.versions(), "platform": platform, "inputs": inputs,
                "outputs": outputs, "parameters": params}

    def model_status(self) -> dict[str, Any]:
        versions = self.versions()
        reason = self.not_ready()
        status: dict[str, Any] = {"name": self.name, "ready": reason is None, "mode": self.mode,
                                  "model_version": versions[0] if versions else None}
        if reason is not None:
            status["error"] = reason
        if self.model is not None:
            status["inputs"] = self.model.info.inputs.to_list()
            status["outputs"] = self.model.info.outputs.to_list()
        return status

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "augury", "version": augury_version(),
                "extensions": ["binary_tensor_data", "classification"]}

    def _profiled_datatypes(self) -> dict[str, str]:
        """Static mode: FP64 for the columns the active version's profile saw as numbers, else BYTES."""
        active = self._active()
        columns = (active.profile or {}).get("columns", {}) if active is not None else {}
        return {name: "FP64" if isinstance(c, dict) and c.get("kind") == "numeric" else "BYTES"
                for name, c in columns.items()} if isinstance(columns, dict) else {}

    def _active(self) -> Any:
        try:
            return self.store.active() if self.store is not None else None
        except StoreError:
            return None

    def _version(self, version: str | None) -> VersionInfo | None:
        """Store version `version` (None: the active one), or None if the store cannot say."""
        recent = self._recent
        if version is not None and recent is not None and recent.version == version:
            return recent
        info: VersionInfo | None = None
        if version is None:
            info = self._active()
        elif self.store is not None:
            try:
                info = info_of(self.store, version)
            except StoreError:
                info = None
        if info is not None:
            self._recent = info
        return info


def _observed(key: str, body: bytes) -> tuple[tuple[Example], tuple[Answer]]:
    """What the monitor is offered for a key lookup answered from `memo` (its JSON `body`)."""
    return (Example(key, None),), (decoded(body),)


def provenance_headers(answers: Sequence[Answer | Conflict | None]) -> list[tuple[bytes, bytes]]:
    """``X-Augury-Source: static=3,dynamic=1`` and the distinct model and store versions answered with
    (``X-Augury-Model-Version``, ``X-Augury-Store-Version`` when some came from the store), as raw
    ASGI headers, encoded once per combination; ``X-Augury-Misses: N`` when N keys were not found (None
    in `answers`: `Service.predict_or_miss`; a `Conflict` is no miss: the key is there)."""
    first = answers[0] if len(answers) == 1 else None
    if isinstance(first, Answer):  # the common case, without the joins
        p = first.provenance
        static = p["source"] == "static"
        return list(_encoded(int(static), int(not static), str(p["model_version"]),
                             str(p["store_version"]) if "store_version" in p else ""))
    found = [a for a in answers if isinstance(a, Answer)]
    static = sum(1 for a in found if a.provenance["source"] == "static")
    stores = ",".join(dict.fromkeys(str(a.provenance["store_version"]) for a in found
                                    if "store_version" in a.provenance))
    headers = list(_encoded(static, len(found) - static, model_versions(found), stores))
    misses = sum(1 for a in answers if a is None)
    if misses:
        headers.append((b"x-augury-misses", str(misses).encode("ascii")))
    return headers


def model_versions(answers: list[Answer]) -> str:
    """The distinct model versions of `answers`, comma-separated, in order of appearance."""
    return ",".join(dict.fromkeys(str(a.provenance["model_version"]) for a in answers))


@functools.lru_cache(maxsize=1024)
def _encoded(static: int, dynamic: int, models: str, stores: str) -> tuple[tuple[bytes, bytes], ...]:
    headers = [(b"x-augury-source", f"static={static},dynamic={dynamic}".encode("ascii")),
               (b"x-augury-model-version", header_value(models))]
    if stores:
        headers.append((b"x-augury-store-version", header_value(stores)))
    return tuple(headers)


def header_value(text: str) -> bytes:
    """`text` as a response header value: visible ASCII and spaces as they are, anything else (a control
    character, a non-ASCII letter, and ``%`` itself) percent-encoded as UTF-8, so a version string can
    neither break the header block nor fail to encode."""
    return urllib.parse.quote(text, safe=_HEADER_SAFE).encode("ascii")


_HEADER_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) != "%")
