"""Static, dynamic or hybrid: measure the model, the store and the traffic, then recommend.

``advise(model_ref, data, ...)`` measures on this machine, within a time budget, and returns an
`Advice` (``to_dict()`` for JSON, ``render()`` for a terminal, `write_report` for an HTML page).
`recommend` is the pure rule over a `Measurements` record (docs/advise.md states it): every mode costed
(`ModeOption`), the cheapest that meets every constraint chosen; `predict_latency` simulates dynamic
serving at a request rate with given batcher settings, to compare with a load test. The server's own
work comes from `ServingOverheads`: measured by ``augury advise --calibrate`` (`calibrate`), else built in.

This package imports `augury.serve` only to build batches as the server does (`measure`, when the serve
extra is installed); its simulation reimplements the batcher's rule, and calibration runs the real
``augury serve`` in a subprocess.
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
from augury.advise.options import ModeOption
from augury.advise.overheads import ServingOverheads
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
    "ModeOption",
    "ModelCost",
    "Plan",
    "ServiceCurve",
    "ServingOverheads",
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
