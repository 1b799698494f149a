"""`create_app`: the one place a server is put together from a model, a store and settings.

The mode follows from what is given: a store alone is *static* (lookups by key; a miss is a 404), a model
alone *dynamic* (every example computed, through the dynamic batcher), both *hybrid* (the store answers
what it holds, the model the rest). The app owns the batcher and the model's thread; the caller owns the
model and the store (pass `on_close` to have them closed when the app shuts down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from augury.errors import AuguryError, ConfigError, StoreError
from augury.models import Model
from augury.monitor import ServeMetrics
from augury.monitor.sharing import SHARE_EVERY_S
from augury.monitor.tap import PredictionObserver
from augury.serve.admission import ADMITTED, ERROR, GATE_KEY, NEVER_SHED, Admission, refusal_message
from augury.serve.batcher import Batcher
from augury.serve.errors import PATH_CHARS, clipped
from augury.serve.hot import HotDispatch
from augury.serve.lookup_memo import FollowsVersions, LookupMemo
from augury.serve.middleware import Bookkeeping, Observability
from augury.serve.monitoring import build_tap
from augury.serve.openapi import build_openapi
from augury.serve.router import Router
from augury.serve.routes import Routes
from augury.serve.scoring import Outcome, Row, Scorer, limit_threads, model_executor
from augury.serve.service import Service, augury_version
from augury.serve.settings import MIB, ServeSettings, mode_of
from augury.serve.wire import JSONResponse, dump_json, error_response, send_response
from augury.serve.writeback import RowResult, StoreWriteBack, WriteBack, WriteBackCache
from augury.store import PredictionStore

log = logging.getLogger(__name__)


def create_app(settings: ServeSettings, model: Model | None, store: PredictionStore | None, *,
               on_close: Callable[[], None] | None = None,
               observers: Sequence[PredictionObserver] = ()) -> Starlette:
    """A Starlette app serving `model` and/or `store` (see the module docstring); `observers` watch the
    answered requests besides those the settings ask for (`serve.monitoring`)."""
    mode = mode_of(model is not None, store is not None)
    name = check_parts(settings, model, store)
    metrics = ServeMetrics(share_dir=settings.metrics_dir)
    executor = model_executor(settings.model_threads) if model is not None else None
    batcher: Batcher[Row, Outcome] | None = None
    scorer = Scorer(model) if model is not None else None
    if scorer is not None:
        batcher = Batcher(scorer, max_batch_size=settings.max_batch_size,
                          max_delay_ms=settings.max_delay_ms, max_queue=settings.max_queue,
                          inline_below_ms=settings.inline_below_ms,
                          executor=executor, observer=metrics.batch_observer())
        queue = batcher
        metrics.watch_queue(lambda: queue.queue_depth)
    loops: list[asyncio.AbstractEventLoop] = []  # the serving loop, once the lifespan starts
    books = Bookkeeping(metrics)
    gate = Admission(settings.max_in_flight, metrics, books.ids)

    def count_rows(result: RowResult, rows: int) -> None:  # from the write-back thread: counted on the loop
        with contextlib.suppress(RuntimeError, IndexError):  # no loop (yet, or any more): nobody to tell
            loops[0].call_soon_threadsafe(metrics.observe_writeback_rows, result, rows)

    cache: WriteBack | None = None
    store_write_back: StoreWriteBack | None = None
    if model is not None and settings.write_back_ttl_s is not None:
        if (settings.write_back_to or ("store" if store is not None else "process")) == "store":
            if store is None:
                raise ConfigError("write-back to the store (--write-back-to store) needs a store (--store)")
            cache = store_write_back = StoreWriteBack(store, settings.write_back_ttl_s, on_rows=count_rows)
        else:
            cache = WriteBackCache(settings.write_back_ttl_s, settings.write_back_max_entries)
    router = Router(model=model, store=store, batcher=batcher, cache=cache, metrics=metrics,
                    require_version_match=settings.require_version_match, trust_keys=settings.trust_keys,
                    ignore_unknown=settings.ignore_unknown_fields)
    if store is not None:
        metrics.watch_store(router.active_version, router.active_age_s)
    service = Service(settings, name, mode, model, store, router, metrics)
    if store is not None and settings.lookup_memo_mib > 0 and LookupMemo.usable(store):
        service.memo = LookupMemo(cast(FollowsVersions, store), int(settings.lookup_memo_mib * MIB))
    tap = build_tap(settings, model, store, metrics, observers)
    service.tap = tap if tap.sample else None
    service.openapi = build_openapi(name=name, mode=mode, inputs=router.schema, outputs=service.outputs(),
                                    settings=settings, version=augury_version(),
                                    model_version=model.info.version if model is not None else None)
    metrics.watch_model(name, mode, lambda: ",".join(service.versions()))  # static: the active version's

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        limit_threads(settings.model_threads)
        loops[:] = [asyncio.get_running_loop()]
        if batcher is not None and scorer is not None:
            batcher.start()
            await _warm_up(scorer, executor)
        service.started = True
        tap.start()
        sharing = asyncio.get_running_loop().create_task(_share(metrics)) if metrics.sharing else None
        log.info("serving %r (%s mode)", name, mode)
        try:
            yield {GATE_KEY: gate}  # for augury's HTTP protocol, which refuses past the limit (`admission`)
        finally:
            service.started = False
            if batcher is not None:
                await batcher.close()
            await asyncio.to_thread(tap.close)  # (what is queued is observed first)
            if store_write_back is not None:  # what is queued is written first (and counted, on the loop)
                await asyncio.to_thread(store_write_back.close)
            if sharing is not None:
                sharing.cancel()
                metrics.share()  # this worker's final counts stay in the server's totals
            if executor is not None:
                executor.shutdown(wait=True)
            if on_close is not None:
                on_close()

    routes = Routes(service).table()
    app = AuguryApp(
        HotDispatch(routes, books),
        books,
        settings.max_in_flight,
        routes=routes,
        middleware=[Middleware(Observability, books=books)],
        exception_handlers={AuguryError: _augury_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


class AuguryApp(Starlette):
    """A Starlette app whose hot routes (`serve.hot`) are answered before Starlette's middleware stack
    and router, by `HotDispatch`; everything else (and the lifespan) is Starlette's as usual.

    It also sheds load first: a request that arrives while `max_in_flight` requests are being handled
    gets 503 ``{"error": ...}`` with ``Retry-After: 1`` before anything reads its body (health checks and
    metrics excepted: an overloaded server is alive, and says so). Under augury's own HTTP protocol such
    a request never gets here: the protocol refuses it when its head is parsed, far more cheaply, with the
    same answer (`serve.admission`); this check serves any other ASGI server."""

    def __init__(self, hot: HotDispatch, books: Bookkeeping, max_in_flight: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot = hot
        self._books = books
        self._max_in_flight = max_in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self._books.metrics.requests_in_flight >= self._max_in_flight
                and not scope["path"].startswith(NEVER_SHED) and ADMITTED not in scope.get("extensions", ())):
            await self._shed(scope, send)
            return
        matched = self.hot.match(scope)
        if matched is None:
            await super().__call__(scope, receive, send)
        else:
            await self.hot.serve(*matched, scope, receive, send)

    async def _shed(self, scope: Scope, send: Send) -> None:
        books = self._books
        rid = books.ids.of(scope)
        message = refusal_message(self._max_in_flight)
        headers = [(b"retry-after", b"1"), (b"x-request-id", rid.encode("ascii"))]
        await send_response(send, 503, dump_json({"error": message}), headers)
        books.metrics.shed.inc()
        books.finish(scope, rid, "unmatched", 503, 0.0, ERROR, message)


def check_parts(settings: ServeSettings, model: Model | None, store: PredictionStore | None) -> str:
    """What `create_app` refuses before it builds anything (the model's name cannot be told, or the store
    records another model: `check_store_model`); returns the name served. The launcher of several worker
    processes calls it too, so that they do not each fail alone."""
    name = _name(settings, model, store)
    check_store_model(name, model, store, settings.allow_name_mismatch)
    return name


def _name(settings: ServeSettings, model: Model | None, store: PredictionStore | None) -> str:
    if settings.name:
        return settings.name
    if model is not None:
        return model.info.name
    assert store is not None
    active = store.active()
    published = active.meta.get("model") if active is not None else None
    if isinstance(published, str) and published and "/" not in published:
        return published
    raise ConfigError("cannot tell the model's name from the store (its active version does not record one); "
                      "give --name")


def check_store_model(name: str, model: Model | None, store: PredictionStore | None,
                      allow_name_mismatch: bool = False) -> None:
    """Refuse, at start, a store whose active version records another model than the one served.

    `name` is the served name (URLs): in static mode the --name given (else the recorded one), in hybrid
    mode the model's. Serving under another name would answer one model's predictions as another's, so
    it is a `ConfigError` unless `allow_name_mismatch`. A version published without a model name, or no
    active version yet, has nothing to compare. In hybrid mode another *version* of the same model is the
    normal state of a rollout: logged, and --require-version-match serves only matching predictions.
    """
    if store is None:
        return
    try:
        active = store.active()
    except StoreError as exc:  # started anyway, as a store failing later is survived; said, not hidden
        log.warning("prediction store unavailable at startup (%s; the model it holds was not checked): %s",
                    "lookups fail until it is back" if model is None else "requests will be computed", exc)
        return
    if active is None:
        return
    recorded = active.meta.get("model")
    if isinstance(recorded, str) and recorded and recorded != name and not allow_name_mismatch:
        if model is None:
            raise ConfigError(
                f"the store's active version {active.version} holds predictions of model {recorded!r}, "
                f"not {name!r}: give --name {recorded} (or --allow-name-mismatch to serve them as {name!r})")
        raise ConfigError(
            f"the store's active version {active.version} holds predictions of model {recorded!r}, but the "
            f"served model is {name!r}: give the store of this model (or --allow-name-mismatch to answer "
            f"from it anyway)")
    if model is not None and active.model_version != model.info.version:
        log.warning("the store's active version %s holds predictions of model version %s, the server's model "
                    "is version %s: hybrid answers will mix them (provenance says which is which; "
                    "--require-version-match serves only matching ones)",
                    active.version, active.model_version, model.info.version)


async def _share(metrics: ServeMetrics) -> None:
    """Leave this worker's metrics for the other workers every `SHARE_EVERY_S` seconds."""
    while True:
        await asyncio.sleep(SHARE_EVERY_S)
        metrics.share()


async def _warm_up(scorer: Scorer, executor: Any) -> None:
    """Score one row of zeros (empty strings, false) so the first request does not pay for lazy setup."""
    row: Row = [{"string": "", "bool": False}.get(f.dtype, 0) for f in scorer.model.info.inputs.fields]
    try:
        await asyncio.get_running_loop().run_in_executor(executor, scorer, [row])
    except Exception as exc:  # a model that refuses zeros still serves real rows
        log.info("warm-up prediction on a row of zeros failed (harmless): %s", exc)


async def _augury_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuguryError)
    request.state.error = type(exc).__name__
    request.state.error_message = str(exc)
    return error_response(exc, getattr(request.state, "request_id", None))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {clipped(request.url.path, PATH_CHARS)}; see GET /openapi.json"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {clipped(request.url.path, PATH_CHARS)}"
    else:
        message = str(exc.detail)
    request.state.error = "HTTPException"
    request.state.error_message = message
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
