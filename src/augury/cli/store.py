"""`augury store ...`: manage a prediction store's versions and read keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from augury import console
from augury.config import Settings

from ._common import EXIT_CHECK_FAILED, json_option, reporting, store_option


@click.group()
def store() -> None:
    """Manage a prediction store: versions, activate, rollback, get, gc, delete."""


def _open(url: str | None) -> Any:
    """The store at `url`; none of these commands creates one ("no store at PATH": only publish does)."""
    from augury.store import open_store

    return open_store(url or Settings.from_env().store, create=False)


def _versions_table(versions: list[Any]) -> Any:
    return console.table(
        "store versions",
        ["version", "active", "state", "rows", "model version", "evaluator", "created"],
        [
            (
                v["store_version"],
                "*" if v["active"] else "",
                v["state"],
                f"{v['row_count']:,}",
                v["model_version"],
                v["evaluator"] or "",
                v["created_at"],
            )
            for v in versions
        ],
    )


@store.command("versions")
@store_option()
@json_option
@reporting
def store_versions(store_url: str | None, as_json: bool) -> int:
    """List every version, the active one marked."""
    s = _open(store_url)
    try:
        versions = [v.to_dict() for v in s.versions()]
    finally:
        s.close()
    if as_json:
        console.print_json({"versions": versions})
    else:
        console.out.print(_versions_table(versions))
    return 0


def _switch(store_url: str | None, as_json: bool, action: Callable[[Any], Any], verb: str) -> int:
    s = _open(store_url)
    try:
        v = action(s).to_dict()
    finally:
        s.close()
    if as_json:
        console.print_json(v)
    else:
        console.out.print(f"{verb} store version [bold]{console.plain(v['store_version'])}[/] "
                          f"(model {console.plain(v['model_version'])})")
    return 0


@store.command("rollback")
@store_option()
@click.option("--to", "to", default=None, help="Version to activate [the one before the active].")
@json_option
@reporting
def store_rollback(store_url: str | None, to: str | None, as_json: bool) -> int:
    """Activate the previous version (or --to VERSION)."""
    return _switch(store_url, as_json, lambda s: s.rollback(to), "rolled back to")


@store.command("activate")
@click.argument("version")
@store_option()
@json_option
@reporting
def store_activate(version: str, store_url: str | None, as_json: bool) -> int:
    """Activate VERSION."""
    return _switch(store_url, as_json, lambda s: s.activate(version), "activated")


@store.command("get")
@click.argument("keys", nargs=-1, required=True)
@store_option()
@json_option
@reporting
def store_get(keys: tuple[str, ...], store_url: str | None, as_json: bool) -> int:
    """Read KEYS from the active version, with each prediction's provenance."""
    s = _open(store_url)
    try:
        results = s.get_many(list(keys))
    finally:
        s.close()
    docs: list[dict[str, Any]] = [
        {"key": k, "prediction": r.values if r else None, "provenance": r.provenance() if r else None}
        for k, r in zip(keys, results, strict=True)
    ]
    if as_json:
        console.print_json({"results": docs})
    else:
        console.out.print(
            console.table(
                "predictions",
                ["key", "prediction", "store version", "model version", "computed at"],
                [
                    (
                        d["key"],
                        d["prediction"] if d["prediction"] is not None else "(miss)",
                        *(
                            (d["provenance"] or {}).get(f)
                            for f in ("store_version", "model_version", "computed_at")
                        ),
                    )
                    for d in docs
                ],
            )
        )
    return 0 if all(results) else EXIT_CHECK_FAILED


@store.command("gc")
@store_option()
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Ready versions to keep (the active one always stays).",
)
@json_option
@reporting
def store_gc(store_url: str | None, keep: int, as_json: bool) -> int:
    """Delete unfinished (orphan) versions, all but the newest KEEP ready versions, expired write-backs
    (dynamic predictions a server kept beside the versions) and the lease files of dead publishes."""
    from augury.store import SQLiteStore

    s = _open(store_url)
    try:
        pruned = s.prune_written_back()  # (gc prunes too; counted here first)
        leases = s.remove_dead_leases() if isinstance(s, SQLiteStore) else 0  # (gc too; counted here)
        deleted = s.gc(keep)
    finally:
        s.close()
    if as_json:
        console.print_json({"deleted": deleted, "pruned_write_backs": pruned, "removed_leases": leases})
    else:
        console.out.print(f"deleted {len(deleted)} version(s){': ' + ', '.join(deleted) if deleted else ''}; "
                          f"pruned {pruned} expired write-back(s); removed {leases} dead publish lease(s)",
                          markup=False)
    return 0


@store.command("delete")
@click.argument("version")
@store_option()
@json_option
@reporting
def store_delete(version: str, store_url: str | None, as_json: bool) -> int:
    """Delete VERSION (not the active one)."""
    s = _open(store_url)
    try:
        s.delete(version)
    finally:
        s.close()
    if as_json:
        console.print_json({"deleted": [version]})
    else:
        console.out.print(f"deleted store version {version}", markup=False)
    return 0
