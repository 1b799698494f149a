"""augury's HTTP serving: app factory, thin routes, the dynamic batcher, the hybrid router, error mapping.

``create_app(settings, model, store)`` builds the Starlette app (`app`); ``augury serve`` runs it with
uvicorn (`run`). Needs the ``serve`` extra: ``pip install 'augury[serve]'``.
"""

from __future__ import annotations

from augury.errors import MissingExtraError

try:
    import starlette  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("serving over HTTP", "serve", exc.name or "starlette") from exc

from augury.serve.app import create_app
from augury.serve.settings import LaunchConfig, ServeSettings

__all__ = ["LaunchConfig", "ServeSettings", "create_app"]
