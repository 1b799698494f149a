"""A server refuses, at start, a store whose active version records another model than the one served.

Before, static mode served any `--name` (`--name notthere` answered another model's predictions), and
hybrid mode with another model's store only logged a warning (issue 10). `--allow-name-mismatch` (the
setting `allow_name_mismatch`) is the way to say it is meant.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from augury.errors import ConfigError
from augury.serve import ServeSettings, create_app
from augury.store import PredictionStore, SQLiteStore

from .helpers import add_model, live


def publish_as(store: PredictionStore, model: str | None, model_version: str = "1") -> None:
    """One version holding key `a`, recording `model` as the model's name (as `augury publish` does)."""
    batch = pa.record_batch({"key": ["a"], "computed_at": [time.time()], "value": [7.0]})
    store.publish([batch], model_version=model_version, meta={"model": model})


def test_static_refuses_a_name_the_store_does_not_record(sqlite_store: SQLiteStore) -> None:
    publish_as(sqlite_store, "wine")
    with pytest.raises(ConfigError) as refused:
        create_app(ServeSettings(name="notthere"), None, sqlite_store)
    assert str(refused.value) == ("the store's active version 1 holds predictions of model 'wine', not "
                                  "'notthere': give --name wine (or --allow-name-mismatch to serve them as "
                                  "'notthere')")


def test_static_serves_the_recorded_name_or_a_mismatch_allowed(sqlite_store: SQLiteStore,
                                                                client: httpx.Client) -> None:
    publish_as(sqlite_store, "wine")
    with live(None, sqlite_store) as url:
        assert client.get(f"{url}/v1/models/wine/predictions/a").json()["prediction"] == {"value": 7.0}
    with live(None, sqlite_store, name="wine") as url:
        assert client.get(f"{url}/v1/models/wine/predictions/a").status_code == 200
    with live(None, sqlite_store, name="other", allow_name_mismatch=True) as url:
        assert client.get(f"{url}/v1/models/other/predictions/a").status_code == 200


def test_a_store_that_records_no_name_has_nothing_to_compare(sqlite_store: SQLiteStore,
                                                             client: httpx.Client) -> None:
    publish_as(sqlite_store, None)
    with live(None, sqlite_store, name="anything") as url:
        assert client.get(f"{url}/v1/models/anything/predictions/a").status_code == 200


def test_hybrid_refuses_another_models_store(sqlite_store: SQLiteStore) -> None:
    publish_as(sqlite_store, "wine")
    with pytest.raises(ConfigError, match="holds predictions of model 'wine', but the served model is 'add'"):
        create_app(ServeSettings(), add_model(), sqlite_store)
    with pytest.raises(ConfigError, match="'wine'"):
        create_app(ServeSettings(name="add"), add_model(), sqlite_store)
    create_app(ServeSettings(allow_name_mismatch=True), add_model(), sqlite_store)


def test_hybrid_with_another_version_of_the_same_model_starts_and_warns(
        sqlite_store: SQLiteStore, client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    publish_as(sqlite_store, "add", model_version="0")
    with caplog.at_level(logging.WARNING, logger="augury"), live(add_model(version="1"), sqlite_store) as url:
        r = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"key": "a"}]})
        assert r.status_code == 200 and r.json()["predictions"][0]["value"] == 7.0
    assert "holds predictions of model version 0, the server's model is version 1" in caplog.text


@pytest.mark.slow
def test_augury_serve_refuses_in_one_line(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    publish_as(store, "wine")
    store.close()
    proc = subprocess.run(
        [sys.executable, "-m", "augury.cli", "serve", "--port", "0",
         "--store", f"sqlite:///{tmp_path / 's.db'}", "--name", "notthere"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "augury: the store's active version 1 holds predictions of model 'wine', not 'notthere': give "
        "--name wine (or --allow-name-mismatch to serve them as 'notthere')"
    ]
