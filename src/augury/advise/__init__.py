"""Static, dynamic or hybrid: measure the model, the store and the traffic, then recommend.

``advise(model_ref, data, ...)`` measures on this machine, within a time budget, and returns an
`Advice` (``to_dict()`` for JSON, ``render()`` for a terminal, `write_report` for an HTML page).
`recommend` is the pure rule over a `Measurements` record (docs/advise.md states it); `predict_latency`
simulates dynamic serving at a request rate with given batcher settings, to compare with a load test.

This package does not import `augury.serve` or the CLI; its simulation reimplements the batcher's rule.
"""

from __future__ import annotations

from augury.advise.advice import MODES, Advice, Forecast, Plan
from augury.advise.advisor import DEFAULT_BUDGET_S, advise
from augury.advise.capacity import best_settings, max_qps_within, predict_latency, service_curve
from augury.advise.measurements import (
    CatalogueStats,
    CoveragePoint,
    Goals,
    HourStat,
    LatencyPoint,
    Measurements,
    ModelCost,
    StoreCost,
    TrafficStats,
)
from augury.advise.queueing import BatcherSettings, ServiceCurve, SimResult, simulate
from augury.advise.recommend import recommend
from augury.advise.report import write_report
from augury.advise.traffic import coverage_curve, traffic_stats

__all__ = [
    "DEFAULT_BUDGET_S",
    "MODES",
    "Advice",
    "BatcherSettings",
    "CatalogueStats",
    "CoveragePoint",
    "Forecast",
    "Goals",
    "HourStat",
    "LatencyPoint",
    "Measurements",
    "ModelCost",
    "Plan",
    "ServiceCurve",
    "SimResult",
    "StoreCost",
    "TrafficStats",
    "advise",
    "best_settings",
    "coverage_curve",
    "max_qps_within",
    "predict_latency",
    "recommend",
    "service_curve",
    "simulate",
    "traffic_stats",
    "write_report",
]
