"""Real servers for the serving tests: uvicorn on 127.0.0.1 in a background thread, tiny real models.

`live(...)` serves an app on a free port for the length of a `with` block. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import uvicorn

from augury.models import Model, function_model
from augury.serve import ServeSettings, create_app
from augury.serve.run import http_protocol
from augury.store import PredictionStore


class LiveServer:
    """A uvicorn server for `app` on 127.0.0.1, on a port the OS picked, in a daemon thread."""

    def __init__(self, app: Any, http: Any = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="auto", ws="none",
                                http=http or http_protocol())  # as `augury serve` runs it by default
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server died while starting"
            assert time.monotonic() < deadline, "the server did not start in 30 s"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop"


@contextlib.contextmanager
def live(model: Model | None = None, store: PredictionStore | None = None, **settings: Any) -> Iterator[str]:
    """Serve `model` and/or `store` with `settings`; yields the base URL."""
    with LiveServer(create_app(ServeSettings(**settings), model, store)) as server:
        yield server.url


def add_model(sleep_s: float = 0.0, version: str = "1") -> Model:
    """value = a + b (float64 features a, b), sleeping `sleep_s` per call (a slow model for overload
    tests); it refuses a < -1e6 (a row the model cannot score though its types are right)."""

    @function_model(inputs={"a": "float64", "b": "float64"}, outputs={"value": "float64"}, version=version,
                    task="regression")
    def add(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if sleep_s:
            time.sleep(sleep_s)
        if (batch["a"] < -1e6).any():
            raise ValueError("a must be at least -1e6")
        return {"value": batch["a"] + batch["b"]}

    return add.to_model(name="add")


def publish_values(store: PredictionStore, keys: list[str], values: list[float], model_version: str = "1",
                   ttl_s: float | None = None) -> str:
    """Publish `value` per key as a new active version; returns the version."""
    batch = pa.record_batch({"key": pa.array(keys, pa.string()),
                             "computed_at": pa.array([time.time()] * len(keys), pa.float64()),
                             "value": pa.array(values, pa.float64())})
    return store.publish([batch], model_version=model_version, ttl_s=ttl_s).version


WORDS = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "music", "été", "naïve"]


def review_rows(n: int, seed: int) -> dict[str, list[object]]:
    """`n` rows of a text feature `review` and a numeric feature `stars`."""
    rng = np.random.default_rng(seed)
    stars = np.round(rng.uniform(0, 5, size=n), 2)
    reviews = [" ".join(rng.choice(WORDS[:6] if s > 2.5 else WORDS[3:], size=int(rng.integers(1, 6))))
               for s in stars]
    return {"review": reviews, "stars": stars.tolist()}


def until(check: Any, timeout_s: float = 10.0) -> Any:
    """Poll `check` until it returns something true (e.g. a write-back, written behind on a thread)."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, "not written back in time"
        time.sleep(0.02)
    return found
