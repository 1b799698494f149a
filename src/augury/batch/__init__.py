"""Static inference: score a known set of examples in bulk, exactly once, with bounded memory."""

from .engine import Engine, InlineEngine, LocalEngine
from .runner import BatchOptions, BatchResult, Progress, run_batch, staging_dir

__all__ = [
    "BatchOptions",
    "BatchResult",
    "Engine",
    "InlineEngine",
    "LocalEngine",
    "Progress",
    "run_batch",
    "staging_dir",
]
