"""Monitoring: Prometheus metrics declared once (`metrics.ServeMetrics`); drift and staleness come later."""

from augury.monitor.metrics import BatchMetrics, ServeMetrics

__all__ = ["BatchMetrics", "ServeMetrics"]
