"""What watches the served data, put together for `create_app`: the tap and its observers.

The tap (`monitor.tap`) takes each answered request off the data plane (`Service._served`) to the
observers' thread. This module decides which observers a server gets from its settings, its model and its
store, so that `create_app` only starts and stops the tap.
"""

from __future__ import annotations

from collections.abc import Sequence

from augury.models import Model
from augury.monitor import ServeMetrics
from augury.monitor.tap import PredictionObserver, Tap
from augury.serve.settings import ServeSettings
from augury.store import PredictionStore


def build_tap(settings: ServeSettings, model: Model | None, store: PredictionStore | None,
              metrics: ServeMetrics, observers: Sequence[PredictionObserver] = ()) -> Tap:
    """The tap of one app, with `observers` (the caller's) and those the settings ask for; its queue
    depth exported in `metrics`. A tap without observers (or with ``monitor_sample`` 0) does nothing."""
    chosen = list(observers)
    tap = Tap(chosen, metrics.monitor_samples, sample=settings.monitor_sample,
              capacity=settings.monitor_queue)
    metrics.watch_monitor(lambda: tap.depth)
    return tap
