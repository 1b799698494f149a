"""A prediction dataset written to an object store (``-o s3://bucket/preds/``), committed without renames.

An object store shows an object only once its upload is complete, and replaces it whole, but has no
rename: the local commit (a part renamed into place by its task's name, the dataset folder renamed into
place) cannot be done there. So, under the dataset's own prefix:

- **Each task attempt writes its part under a name of its own**, ``part-<task>-<run><attempt>.parquet``,
  then its rejected rows (``_augury-run/<run>/errors-<task>-<attempt>.parquet``), then a small commit
  marker, ``_augury-run/<run>/done-<task>-<attempt>.json``, naming the part, its rows and its errors
  (`object_attempt`). An attempt killed midway leaves no marker; one retried (a Dask worker that seemed
  dead) leaves a second complete part and marker, never a mix.
- **The manifest is the commit.** When every task has a marker, the driver chooses one marker per task
  (the first it saw; of several seen at once, the smallest attempt whose part is there: deterministic),
  and writes ``_manifest.json`` listing exactly those parts, in input order, in one request: until then
  the previous dataset's manifest, if any, still lists the previous parts, so a reader sees the old
  dataset or the new one, never a mix. Readers read only the parts a manifest lists
  (`dataset.read_manifest`), so a retried task's extra part is never read.
- **Then, best effort**, the parts no manifest lists any more and the run's state are removed: every part
  that was at the prefix when the run began (the previous dataset's, an interrupted run's, any an earlier
  cleanup left), those the replaced manifest lists (read again at the commit: another run's, committed
  meanwhile), and this run's extra attempts, but only while the manifest read back is still the one this
  run wrote: if another's replaced it meanwhile, no part is removed and the rest is left to the next run.
  After the removals the manifest is read once more (`ObjectOutput._clean`). A failure to remove is
  logged, the dataset is complete, and the next run on it removes what was left. A previous manifest
  that cannot be read (an object archived by a lifecycle rule, a damaged one, a failed request) is
  logged and stops nothing: the parts found at the start are removed anyway.
- **Resume** (`--resume`): ``_augury-run/run.json`` records the run's id, fingerprint and plan; the tasks
  with a marker in the run's folder are done (their rows are in the markers), the others are scored again.
  A new run without ``--resume`` removes an interrupted run's state (markers, errors, run.json) first,
  never a part (the "interrupted" run may be alive and about to commit, or killed after its manifest,
  before its cleanup): its parts are at the prefix when the new run begins, and its commit removes them.
  A run.json that cannot be read stops a resume; a new run then discards the state of every run it finds.

Object stores offer no lock augury can take, so one run per dataset at a time is up to the user; it is the
supported use. Two at once (two runs, or two drivers of one run: a ``--resume`` while the first is still
alive, whose parts carry the same run id): a run's commit removes the other run's parts it found when
it began, so if it commits first the other fails before its manifest ("nothing was committed"); or both
commit, the last manifest written is the dataset, and the parts it does not list are strays the next run
removes. A check and an action are two requests, so a removal and a manifest can land in the same
moment. What is promised: if the dataset's manifest ends up naming a part that is gone, a run fails
saying so (the one that removed it after its commit, or the one whose manifest names it; a run that
cannot read the manifest to tell fails too), and the dataset is unreadable until a run completes
(docs/batch.md). Two such runs never both exit 0 over a broken dataset.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augury.errors import BatchError, InputError

from . import dataset, location
from .errors_file import ErrorsFile
from .location import filesystem, join
from .object_attempt import RUN_FOLDER, Marker, read_marker, run_of, staging_of
from .sources import Plan

log = logging.getLogger(__name__)

#: markers read at once (each a small GET).
_READERS = 8


class ObjectOutput:
    """The driver's side of a dataset on an object store: check, prepare or resume, collect, commit."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.run_file = join(self.url, f"{RUN_FOLDER}/run.json")
        self.run_id = ""
        self.staging = ""
        self.chosen: dict[str, Marker] = {}
        self.seen: set[str] = set()
        #: the parts at the prefix when the run began (`prepare`): the commit replaces every one of them
        self.found: set[str] = set()

    def check_replaceable(self) -> None:
        """Refuse a prefix holding anything but a dataset's objects (so `-o s3://b/` cannot remove yours)."""
        bucket = self.url.split("/", 3)[2]
        if location.info(self.url.split("://")[0] + "://" + bucket).type == pafs.FileType.NotFound:
            raise InputError(f"output {self.url}/: the bucket {bucket} does not exist (or these credentials "
                             f"cannot see it)")
        prefix = filesystem(self.url)[1] + "/"
        others = sorted(
            name for name in (f.path[len(prefix):] for f in location.listing(self.url))
            if name != dataset.MANIFEST and not name.startswith(RUN_FOLDER + "/")
            and not ("/" not in name and dataset.is_part_name(name))
        )
        if others:
            raise InputError(f"output {self.url}/ holds objects that are not a prediction dataset's "
                             f"({', '.join(others[:3])}); choose a new or empty prefix")

    def prepare(self, fingerprint: dict[str, Any], plan: Plan, resume: bool,
                notes: list[str]) -> tuple[set[str], Plan]:
        """Start or resume a run; return the tasks already done and the plan (a resumed run's own). A
        run.json that cannot be read stops a resume; a new run discards every run's state it finds, as a
        local run removes its staging folder. No part is removed here (`_remove_run`): those at the prefix
        now are `found`, and the commit removes them."""
        try:
            previous = self._read_run()
        except BatchError as exc:
            if resume:
                raise BatchError(f"cannot resume: {exc}; rerun without --resume to start over") from exc
            previous = None
            runs = self._run_ids()
            notes.append(f"{exc}: discarded the state of {len(runs)} interrupted run(s)")
            for old in runs:
                self._remove_run(old)
        if previous is not None and resume:
            try:
                recorded = Plan.from_dict(previous.pop("plan", None) or {})
            except ValueError as exc:
                raise BatchError(f"cannot resume: cannot read {self.run_file}: {exc}; rerun without --resume "
                                 f"to start over") from exc
            run_id = str(previous.pop("run_id", ""))
            if previous != fingerprint or not run_id:
                changed = [k for k in fingerprint if previous.get(k) != fingerprint[k]] or ["run"]
                raise BatchError(f"cannot resume: the {', '.join(changed)} changed since the interrupted "
                                 f"run; rerun without --resume to start over")
            self._start(run_id)
            self.found = self._parts()
            return set(self.markers()), recorded
        if previous is not None:
            old = str(previous.get("run_id", ""))
            if old:
                self._start(old)
                notes.append(f"discarded an interrupted run's {len(self.markers())} finished task(s); pass "
                             f"--resume to continue one")
                self._remove_run(old)
        elif resume:
            notes.append("nothing to resume: starting a new run")
        self._start(uuid.uuid4().hex[:8])
        self.found = self._parts()
        self._write(self.run_file, orjson.dumps({**fingerprint, "plan": plan.to_dict(),
                                                 "run_id": self.run_id}))
        return set(), plan

    def _start(self, run_id: str) -> None:
        self.run_id, self.staging = run_id, staging_of(self.url, run_id)
        self.chosen, self.seen = {}, set()

    def _read_run(self) -> dict[str, Any] | None:
        if location.info(self.run_file).type != pafs.FileType.File:
            return None
        try:
            doc = orjson.loads(location.read_bytes(self.run_file))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise BatchError(f"cannot read {self.run_file}: {exc}") from exc
        if not isinstance(doc, dict):
            raise BatchError(f"cannot read {self.run_file}: it holds {type(doc).__name__}, not an object")
        return doc

    def _run_ids(self) -> list[str]:
        """The runs with a state folder under the prefix."""
        prefix = filesystem(self.url)[1] + f"/{RUN_FOLDER}/"
        names = (f.path[len(prefix):] for f in location.listing(join(self.url, RUN_FOLDER)))
        return sorted({name.split("/", 1)[0] for name in names if "/" in name})

    def markers(self) -> dict[str, Marker]:
        """The chosen marker of every task done so far: a task keeps the first one seen; of several seen
        together, the smallest attempt whose part is still there (a commit's cleanup killed midway may
        have removed an unchosen attempt's part before its marker: a resume must not choose it)."""
        prefix = filesystem(self.staging)[1] + "/"
        new: list[str] = sorted(
            name for name in (f.path[len(prefix):] for f in location.listing(self.staging, recursive=False))
            if name.startswith("done-") and name.endswith(".json") and name not in self.seen
        )
        with ThreadPoolExecutor(_READERS) as pool:
            read = list(pool.map(lambda name: read_marker(self.staging, name), new))
        self.seen.update(new)
        present = self._parts() if new else set()
        for marker in sorted(read, key=lambda m: (m.part is not None and m.part not in present, m.attempt)):
            self.chosen.setdefault(marker.task_id, marker)
        return self.chosen

    def task_rows(self, task_id: str) -> tuple[int, int]:
        """A finished task's rows (scored, in errors), from its marker: what a resumed run counts."""
        marker = self.chosen[task_id]
        return marker.scored, marker.failed

    def collect_errors(self, task_ids: Sequence[str], errors_file: str) -> int:
        """Gather every task's rejected rows into `errors_file` (a local path or a URL), their `row`
        counted from the input's first row, as `LocalOutput.collect_errors` does for a local run."""
        chosen = self._all(task_ids)
        before = 0
        with ErrorsFile(errors_file) as out:
            for task_id in task_ids:
                marker = chosen[task_id]
                rows: list[dict[str, Any]] = []
                if marker.errors:
                    url = join(self.staging, marker.errors)
                    fs, path = filesystem(url)
                    try:
                        rows = pq.read_table(path, filesystem=fs).to_pylist()
                    except (OSError, pa.ArrowException) as exc:
                        raise BatchError(f"cannot read {url}: {exc}; rerun with --resume") from exc
                for row in rows:
                    if row["row"] >= 0:
                        row["row"] += before
                    out.write(orjson.dumps(row) + b"\n")
                before += marker.scored + sum(1 for row in rows if row["row"] >= 0)
        return out.count

    def _all(self, task_ids: Sequence[str]) -> dict[str, Marker]:
        chosen = self.markers()
        missing = [t for t in task_ids if t not in chosen]
        if missing:
            raise BatchError(f"task {missing[0]} has no commit marker in {self.staging} (and "
                             f"{len(missing) - 1} more): rerun with --resume to score them")
        return chosen

    def commit(self, task_ids: Sequence[str], fingerprint: dict[str, Any]) -> int:
        """Write the manifest of the chosen parts, in input order, in one request; then remove what no
        manifest lists (best effort). Returns the rows."""
        chosen = self._all(task_ids)
        parts = [dataset.Part(m.part, m.scored) for m in (chosen[t] for t in task_ids) if m.part and m.scored]
        if not parts:
            raise BatchError("no row of the input could be scored")
        here = {f.path.rsplit("/", 1)[-1] for f in location.listing(self.url, recursive=False)}
        gone = [p.name for p in parts if p.name not in here]
        if gone:  # (another run on this dataset took this one for an interrupted run and removed them)
            raise BatchError(f"{len(gone)} of this run's parts are no longer at {self.url} (another run "
                             f"on the same dataset removes them); nothing was committed: run again, one "
                             f"at a time")
        try:
            first = location.parquet_file(join(self.url, parts[0].name))
            schema = first.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot read {self.url}/{parts[0].name}: {exc}") from exc
        manifest = dataset.Manifest(tuple(parts), schema, fingerprint)
        replaced = self.found | (self._listed("the commit removes the parts found when the run began, "
                                              "not those another run committed since") or set())
        written = manifest.to_json()
        self._write(join(self.url, dataset.MANIFEST), written)
        self._clean({p.name for p in parts}, replaced, written)
        return manifest.rows

    def _parts(self) -> set[str]:
        """The part files at the prefix now."""
        names = (f.path.rsplit("/", 1)[-1] for f in location.listing(self.url, recursive=False))
        return {name for name in names if dataset.is_part_name(name)}

    def _listed(self, otherwise: str) -> set[str] | None:
        """The parts the dataset's manifest lists now, whether they are all there or not (none without a
        manifest); None when there is one but it cannot be read, logged with what happens `otherwise`."""
        url = join(self.url, dataset.MANIFEST)
        try:
            if location.info(url).type == pafs.FileType.NotFound:
                return set()
            return {p.name for p in dataset.parse_manifest(lambda: location.read_bytes(url), url).parts}
        except InputError as exc:
            log.warning("%s: %s; %s", self.url, exc, otherwise)
            return None

    def _remove_run(self, run_id: str) -> None:
        """An interrupted run's state (`_remove_state`), never its parts: a part it wrote may be one a
        manifest committed meanwhile lists (the run was alive, and a check of the manifest and a removal
        are two requests, so reading the manifest first cannot tell). Its parts are at the prefix when
        this run begins (`found`), and this run's commit removes them, checked (`_clean`)."""
        try:
            self._remove_state(run_id)
        except (OSError, pa.ArrowException, InputError) as exc:
            log.warning("%s: could not remove the state of the interrupted run %s (%s); it is never read",
                        self.url, run_id, exc)

    def _remove_state(self, run_id: str) -> None:
        """The run's folder of markers and errors, and run.json if it is the run's."""
        fs = filesystem(self.url)[0]
        with contextlib.suppress(FileNotFoundError):  # (a run that wrote no marker has no folder)
            fs.delete_dir(filesystem(staging_of(self.url, run_id))[1])
        try:
            previous = self._read_run()
        except BatchError:
            previous = None  # (unreadable: a new run's replaces it)
        if previous is not None and previous.get("run_id") == run_id:
            fs.delete_file(filesystem(self.run_file)[1])

    def _clean(self, kept: set[str], replaced: set[str], written: bytes) -> None:
        """After the commit (`written`: the manifest it wrote, listing `kept`), best effort: remove the
        parts not in `kept` that are `replaced`, that this run wrote, or that no run of an object store
        named (`object_attempt.run_of`), then this run's state. A failure is logged: the dataset is
        complete, and the next run removes what is left.

        Parts go only while the manifest read back is the one this run wrote. When another run's has
        replaced it (another run on the dataset, or a second driver of this same run: a ``--resume``
        while the first was alive, whose parts carry this run's id too), no part is removed: that
        manifest may list any of them, and they are left for the next run. Object stores have no
        conditional write augury can use, so that check and the removals are separate requests; the
        manifest is read once more after them, whatever stopped them, and if it lists a part removed
        (another run's manifest written in that moment), or this run's manifest names a part that is
        gone, or a listing or read fails where it would tell, this is a BatchError, never a silent
        success."""
        fs, root = filesystem(self.url)
        removed: list[str] = []
        try:
            names = {f.path[len(root) + 1:] for f in location.listing(self.url, recursive=False)}
        except InputError as exc:  # (another run may have removed a part this run's manifest names)
            raise BatchError(f"cannot tell whether every part the manifest of {self.url} this run wrote "
                             f"names is still there: {exc}; run again if a reader says one is "
                             f"missing") from exc
        try:
            ours = self._manifest_is(written, "the parts it does not list are left for the next run")
            missing = sorted(kept - names)  # (this run's parts, removed by another run after commit checked)
            if missing and ours is not False:
                raise self._lost(missing) if ours else BatchError(
                    f"cannot tell whether the manifest of {self.url} this run wrote stands, and it names "
                    f"{len(missing)} part(s) that are gone ({missing[0]}, ...): the dataset may not be "
                    f"readable until a run completes; run again, one at a time")
            for name in sorted(names) if ours else ():
                if (dataset.is_part_name(name) and name not in kept
                        and (name in replaced or run_of(name) in (self.run_id, None))):
                    fs.delete_file(f"{root}/{name}")
                    removed.append(name)
            self._remove_state(self.run_id)
        except (OSError, pa.ArrowException, InputError) as exc:
            log.warning("%s: could not remove what the dataset no longer lists (%s); it is never read, "
                        "and the next run on this dataset removes it", self.url, exc)
        finally:
            if removed:
                self._check_removed(removed, written)

    def _check_removed(self, removed: list[str], written: bytes) -> None:
        """The parts `removed` after the manifest read back was this run's: none may be one the manifest
        lists now (another run's, written after that read). A manifest that cannot be read cannot tell."""
        unknown = (f"cannot tell whether the {len(removed)} part(s) this run removed from {self.url} after "
                   f"its commit ({removed[0]}, ...) include one the dataset's manifest lists now")
        ours = self._manifest_is(written, "the parts this run removed are checked against it")
        if ours:
            return
        listed = None if ours is None else self._listed("the parts this run removed cannot be checked")
        if listed is None:
            raise BatchError(f"{unknown}; run again, one at a time")
        lost = sorted(listed & set(removed))
        if lost:
            raise self._lost(lost)

    def _lost(self, lost: list[str]) -> BatchError:
        return BatchError(f"{len(lost)} part(s) the manifest of {self.url} lists ({lost[0]}, ...) were "
                          f"removed by a run on the same dataset at the same time: the dataset cannot be "
                          f"read until a run completes; run again, one at a time")

    def _manifest_is(self, written: bytes, otherwise: str) -> bool | None:
        """Whether the dataset's manifest is still the one this run wrote (None: it cannot be read);
        when not, logged with what happens `otherwise`."""
        url = join(self.url, dataset.MANIFEST)
        try:
            if location.read_bytes(url) == written:
                return True
        except (OSError, pa.ArrowException) as exc:
            log.warning("%s: cannot read %s again (%s); %s", self.url, url, exc, otherwise)
            return None
        log.warning("%s: another run committed this dataset after this one; its manifest stands, and %s",
                    self.url, otherwise)
        return False

    def _write(self, url: str, data: bytes) -> None:
        try:
            location.write_bytes(url, data)
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot write {url}: {exc}") from exc
