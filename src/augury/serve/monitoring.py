"""What watches the served data, put together for `create_app`: the tap and its observers.

The tap (`monitor.tap`) takes each answered request off the data plane (`Service._served`) to the
observers' thread. This module decides which observers a server gets from its settings, its model and its
store, so that `create_app` only starts and stops the tap:

- live drift (`monitor.drift.DriftWatch`) whenever a reference is known (`monitor.reference`:
  ``--reference``, the model's manifest, or the store's active version), with the windows and limits of
  ``--monitor-config`` (`monitor.config`);
- the shadow check (`monitor.shadow`) when the server has a model and a store: a share of the static
  answers scored again by the live model, off the request path;
- staleness of the store's active version (`monitor.staleness`) with ``--max-staleness``;
- the caller's own observers (`create_app(observers=...)`).

The alert states (`monitor.alerts.AlertBook`) and every observer's gauges are exported with the server's
other metrics; alert changes are logged, and POSTed to ``--alert-webhook`` (`monitor.webhook`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from augury.errors import ConfigError, StoreError
from augury.models import Model
from augury.monitor import ServeMetrics
from augury.monitor.alerts import AlertBook
from augury.monitor.config import load_monitor_config
from augury.monitor.drift import DriftWatch
from augury.monitor.reference import reference_for
from augury.monitor.shadow import Score, ShadowCheck
from augury.monitor.staleness import StalenessWatch
from augury.monitor.tap import PredictionObserver, Tap
from augury.monitor.webhook import Webhook
from augury.serve.scoring import Refused, Scorer, limit_threads
from augury.serve.settings import ServeSettings
from augury.store import PredictionStore, VersionInfo

log = logging.getLogger(__name__)


def build_tap(settings: ServeSettings, model: Model | None, store: PredictionStore | None,
              metrics: ServeMetrics, observers: Sequence[PredictionObserver] = ()) -> Tap:
    """The tap of one app and its observers (see the module docstring), their metrics registered in
    `metrics`. ConfigError for a bad settings file; InputError for reference data that cannot be read.
    A tap without observers (or with ``monitor_sample`` 0) does nothing."""
    config = load_monitor_config(settings.monitor_config)
    webhook = Webhook(settings.alert_webhook) if settings.alert_webhook else None
    alerts = AlertBook([webhook] if webhook is not None else [])
    metrics.registry.register(alerts)
    chosen = list(observers)
    drift = None
    if settings.monitor_sample > 0:
        reference = reference_for(model, settings.reference, _active(store))
        if reference is not None and (reference.inputs is not None or reference.predictions is not None):
            inputs = model.info.inputs.names if model is not None else None
            drift = DriftWatch(reference, inputs, config, alerts)
            metrics.registry.register(drift)
            chosen.append(drift)
            log.info("watching drift against %s", reference.source)
    if model is not None and store is not None and config.shadow.share > 0:
        shadow = ShadowCheck(shadow_score(model, settings.model_threads), model.info.outputs.names,
                             config.shadow, alerts)
        metrics.registry.register(shadow)
        chosen.append(shadow)
    if settings.max_staleness_s is not None:
        if store is None:
            raise ConfigError("--max-staleness watches the prediction store's active version; give --store")
        staleness = StalenessWatch(store, settings.max_staleness_s, alerts)
        metrics.registry.register(staleness)
        chosen.append(staleness)
    tap = Tap(chosen, metrics.monitor_samples, sample=settings.monitor_sample,
              capacity=settings.monitor_queue, max_rate=settings.monitor_max_rate,
              on_close=[webhook.close] if webhook is not None else [])
    metrics.watch_monitor(lambda: tap.depth)
    return tap


def _active(store: PredictionStore | None) -> VersionInfo | None:
    try:
        return store.active() if store is not None else None
    except StoreError:  # (said elsewhere: the server starts, and its readiness tells)
        return None


def shadow_score(model: Model, threads: int) -> Score:
    """The live model's answers for the shadow check: the server's `Scorer` (the same code the batcher
    calls), on the monitor's thread, with its thread pools capped as the model thread's are."""
    scorer = Scorer(model)
    local = threading.local()

    def score(rows: list[Sequence[Any]]) -> list[Mapping[str, Any] | None]:
        if not getattr(local, "limited", False):
            limit_threads(threads)
            local.limited = True
        return [None if isinstance(o, Refused) else o for o in scorer([list(r) for r in rows])]

    return score
