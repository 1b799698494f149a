"""The command line as a user meets it: a real `augury` process, exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.store import SQLiteStore, WrittenBack

FIXTURES = Path(__file__).parent.parent / "fixtures"


def augury(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(FIXTURES), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "augury.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert text in proc.stderr


@pytest.fixture()
def ab_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["x", "y", "z"], "a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0]}), path)
    return path


def test_batch_publish_get_round_trip(tmp_path: Path, ab_parquet: Path) -> None:
    out = tmp_path / "p.parquet"
    proc = augury(
        "batch",
        "fixture_models:add",
        str(ab_parquet),
        "-o",
        str(out),
        "--key",
        "id",
        "--json",
        "--workers",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["rows"] == 3 and doc["failed"] == 0
    assert "progress rows=3" in proc.stderr  # not a terminal: parseable progress lines

    store = f"sqlite:///{tmp_path / 's.db'}"
    proc = augury("publish", str(out), "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"]["store_version"] == "1"

    proc = augury("store", "get", "x", "nope", "--store", store, "--json")
    assert proc.returncode == 1  # a miss is reported
    results = json.loads(proc.stdout)["results"]
    assert results[0]["prediction"] == {"value": 2.0}
    assert results[0]["provenance"]["source"] == "static"
    assert results[0]["provenance"]["store_version"] == "1"
    assert results[0]["provenance"]["model_version"] == "1"
    assert results[0]["provenance"]["computed_at"].endswith("Z")
    assert results[1]["prediction"] is None

    proc = augury("store", "versions", "--store", store, "--json")
    assert proc.returncode == 0
    assert [v["store_version"] for v in json.loads(proc.stdout)["versions"]] == ["1"]

    written = SQLiteStore(tmp_path / "s.db")  # a server's write-backs: one expired, one not
    written.write_back([WrittenBack("old", {"value": 1.0}, "1", 0.0, 1.0),
                        WrittenBack("new", {"value": 2.0}, "1", 0.0, 4e9)])
    written.close()
    proc = augury("store", "gc", "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"deleted": [], "pruned_write_backs": 1, "removed_leases": 0}
    Path(f"{tmp_path / 's.db'}-publish-7.lease").touch()  # left by a publish that is gone (nobody locks it)
    proc = augury("store", "gc", "--store", store)
    assert proc.stdout.strip() == ("deleted 0 version(s); pruned 0 expired write-back(s); "
                                   "removed 1 dead publish lease(s)")
    assert not Path(f"{tmp_path / 's.db'}-publish-7.lease").exists()


def test_verify_exit_code_names_the_failed_gate(tmp_path: Path, ab_parquet: Path) -> None:
    out = tmp_path / "p.parquet"
    assert (
        augury("batch", "fixture_models:add", str(ab_parquet), "-o", str(out), "--workers", "1").returncode
        == 0
    )
    checks = tmp_path / "checks.toml"
    checks.write_text("min_rows = 10\n")
    proc = augury("verify", str(out), "--checks", str(checks), "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["passed"] is False
    proc = augury("publish", str(out), "--checks", str(checks), "--store", f"sqlite:///{tmp_path / 's.db'}")
    assert_clean_error(proc, 1, "refusing to publish")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "is empty"),
        ("wrong_columns", "lacks column(s) a, b"),
        ("unknown_model", "model"),
        ("missing_input", "does not exist"),
    ],
)
def test_bad_input_gives_one_clear_message(tmp_path: Path, setup: str, message: str) -> None:
    src = tmp_path / "in.csv"
    model = "fixture_models:add"
    if setup == "empty":
        src.write_text("")
    elif setup == "wrong_columns":
        src.write_text("x,y\n1,2\n")
    elif setup == "unknown_model":
        src.write_text("a,b\n1,2\n")
        model = str(tmp_path / "model.xyz")
        Path(model).write_text("not a model")
    proc = augury("batch", model, str(src), "-o", str(tmp_path / "o.parquet"))
    assert_clean_error(proc, 2, message)


def test_json_errors_are_json(tmp_path: Path) -> None:
    proc = augury("store", "rollback", "--store", f"sqlite:///{tmp_path / 's.db'}", "--json")
    assert proc.returncode == 2
    assert "error" in json.loads(proc.stdout)


def test_unknown_store_scheme(tmp_path: Path) -> None:
    proc = augury("store", "versions", "--store", "ftp://x")
    assert_clean_error(proc, 2, "ftp")


def test_one_evaluator_flag_chooses_and_every_command_shows_it(tmp_path: Path, hgb_model: Path,
                                                                features_parquet: Path) -> None:
    proc = augury("info", str(hgb_model), "--evaluator", "library", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["evaluator"] == "sklearn"
    out = tmp_path / "p.parquet"
    proc = augury("batch", str(hgb_model), str(features_parquet), "-o", str(out), "--workers", "1",
                  "--evaluator", "library", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["evaluator"] == "sklearn"
    store = f"sqlite:///{tmp_path / 's.db'}"
    proc = augury("publish", str(out), "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert "evaluator sklearn" in proc.stdout
    proc = augury("store", "versions", "--store", store, "--json")
    assert [v["evaluator"] for v in json.loads(proc.stdout)["versions"]] == ["sklearn"]
    proc = augury("store", "versions", "--store", store)
    assert "evaluator" in proc.stdout and "sklearn" in proc.stdout
    for command in (("batch", str(hgb_model), str(features_parquet), "-o", str(out)),
                    ("serve", "--model", str(hgb_model))):
        assert_clean_error(augury(*command, "--evaluator", "numba"), 2, "Invalid value for '--evaluator'")


@pytest.mark.parametrize("value", ["abc", "-3"])
def test_a_bad_environment_variable_is_one_line_naming_it(tmp_path: Path, ab_parquet: Path,
                                                          value: str) -> None:
    bad = {"AUGURY_WORKERS": value}
    for args in (["--help"], ["publish", "--help"], ["store", "versions", "--help"]):
        proc = augury(*args, env=bad)
        assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr
    proc = augury("batch", "fixture_models:add", str(ab_parquet), "-o", str(tmp_path / "o.parquet"), env=bad)
    assert_clean_error(proc, 2, f"AUGURY_WORKERS must be a whole number of at least 0 (0 = every core), "
                                f"not '{value}'")
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_a_duration_needs_a_unit(tmp_path: Path, ab_parquet: Path) -> None:
    out = tmp_path / "p.parquet"
    assert augury("batch", "fixture_models:add", str(ab_parquet), "-o", str(out), "--key", "id",
                  "--workers", "1").returncode == 0
    proc = augury("publish", str(out), "--store", f"sqlite:///{tmp_path / 's.db'}", "--ttl", "6")
    assert_clean_error(proc, 2, "--ttl '6' has no unit; write e.g. 6s, 6m or 6h (units: ms, s, m, h, d or w)")
    assert not (tmp_path / "s.db").exists()  # refused before anything was written
    proc = augury("advise", "fixture_models:add", str(ab_parquet), "--max-staleness", "6")
    assert_clean_error(proc, 2, "--max-staleness '6' has no unit")
    proc = augury("serve", "--model", "fixture_models:add", "--write-back-ttl", "30")
    assert_clean_error(proc, 2, "--write-back-ttl '30' has no unit")


def test_a_message_with_square_brackets_is_printed_as_it_is(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    path = tmp_path / "unfitted.joblib"
    joblib.dump(LogisticRegression(), path)  # not fitted: it cannot say its input features
    proc = augury("info", str(path))
    assert_clean_error(proc, 2, "declare them as [[inputs]] tables")


def test_an_interrupt_says_what_it_left_by_command() -> None:
    """Ctrl-C: a batch run says how to resume it, a publish that nothing was published, others no more."""
    from augury.cli import _interrupted

    assert "--resume" in _interrupted(["batch", "in.parquet", "-o", "out.parquet"])
    assert "published nothing" in _interrupted(["publish", "preds.parquet", "--store", "s.db"])
    assert _interrupted(["serve", "--model", "m.joblib"]) == "augury: interrupted"


def test_an_errors_file_in_a_missing_folder_is_refused_before_scoring(tmp_path: Path,
                                                                     ab_parquet: Path) -> None:
    out = tmp_path / "o.parquet"
    proc = augury("batch", "fixture_models:add", str(ab_parquet), "-o", str(out), "--workers", "1",
                  "--errors", str(tmp_path / "nowhere" / "e.jsonl"))
    assert_clean_error(proc, 2, "--errors")
    assert "does not exist" in proc.stderr and not out.exists()
    proc = augury("batch", "fixture_models:add", str(ab_parquet), "-o", str(out), "--workers", "1",
                  "--errors", str(tmp_path / "e.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and not (tmp_path / "e.jsonl").exists()  # (no row failed: no errors file)
