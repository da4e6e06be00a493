"""Run the stage notebooks of a params file in order; skip what is up to date, resume what was cut off.

``python runbook.py --dataset demo`` executes ``notebooks/<NN>_<stage>.py`` (jupytext py:percent, the
source of truth) with papermill, once per fold for the per-fold stages, into
``reports/<dataset>/<NN>_<stage>[__fold-k].ipynb`` plus an HTML copy.

Each task (a stage, or one fold of a per-fold stage) has a JSON manifest under
``runs/<dataset>/.manifests/`` holding its *key*: a hash of the notebook, the stage's params, the
package source and the keys *and output contents* of the tasks it reads. A task is skipped when its
manifest is complete, its key is current and every recorded output still has its recorded content
(:mod:`image2reg.outputs`: size, mtime and sha256). Otherwise it runs, and the tasks reading it run
when its outputs changed. A derived stage runs in a work folder beside its artifact folder (injected as
``work_dir``): the last good outputs stay in place until the run completes and the two folders are
exchanged. A run that fails or is stopped keeps its work for the next run of the same key to resume;
a new key or ``--force`` starts from an empty folder. The raw data folder is never deleted.

One runbook per dataset: a second one is refused, naming the first's PID (:mod:`image2reg.lock`). A
stopped run (Ctrl-C, SIGTERM) ends the stage's kernel and every process it started (pool workers, the
resource tracker, local Dask workers) before it exits; after a SIGKILL the kernel notices its parent is
gone and exits, and pool workers die with it.

Why one module of ~600 lines: the command line, the task keys and manifests, and the run loop with its
kill handling are one state machine; every part reads and writes the same manifest records (the content
records and the swapped folders live in :mod:`image2reg.outputs`, the lock in :mod:`image2reg.lock`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jupytext
import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbconvert import HTMLExporter
from traitlets import CaselessStrEnum

import image2reg
from image2reg.config import ParamsError, load_params, params_path_for
from image2reg.layout import RunLayout, artifact_name, find_project_root, write_text_atomic
from image2reg.lock import FolderLock, LockHeldError
from image2reg.outputs import TaskFolder, check_outputs, record_outputs
from image2reg.reports import write_index
from image2reg.stages import STAGES, Stage, task_label

TRACEBACK_LINES = 15
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RunbookError(Exception):
    """A request the runbook cannot carry out (unknown stage, missing notebook); nothing has run."""


class ParamsLike(Protocol):
    """What the runbook reads from a params file: :class:`image2reg.config.RunParams` or a test stand-in."""

    dataset: str
    folds: int
    source_path: Path | None

    def stage_names(self) -> list[str]: ...

    def fingerprint(self, name: str, fold: int | None = None) -> str: ...

    def stage(self, name: str, fold: int | None = None) -> Any: ...


@dataclass(frozen=True)
class Task:
    """One notebook execution: a stage, the fold of a per-fold stage, and its name (``00_data__fold-1``)."""

    stage: Stage
    fold: int | None
    name: str

    @property
    def label(self) -> str:
        return task_label(self.stage, self.fold)


@dataclass(frozen=True)
class PlannedTask:
    """A selected task with its current key and why it runs (``reason`` is None when up to date)."""

    task: Task
    key: str
    components: dict[str, Any]
    manifest: dict[str, Any] | None
    reason: str | None
    runs: bool

    @property
    def state(self) -> str:
        if self.reason is None:
            return "up to date"
        if self.reason == "never run" or self.reason.startswith("interrupted"):
            return self.reason
        return f"stale: {self.reason}"


def package_fingerprint() -> str:
    """Hash of the package version and of every ``image2reg/**/*.py``: editing package code counts as a change.

    The runbook itself is left out: it orchestrates, and changes nothing a notebook computes.
    """
    package_dir = Path(image2reg.__file__).parent
    digest = hashlib.sha256(image2reg.__version__.encode())
    for path in sorted(package_dir.rglob("*.py")):
        if path == Path(__file__):
            continue
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _hash_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.now().isoformat(sep=" ", timespec="seconds")


def _read_manifest(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_manifest(path: Path, record: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which components of a key differ, in words (``params changed, input 00_data changed``)."""
    changed = [f"{name} changed" for name in ("notebook", "params", "package") if old.get(name) != new[name]]
    old_inputs, new_inputs = old.get("inputs", {}), new["inputs"]
    differing = sorted(name for name in {*old_inputs, *new_inputs} if old_inputs.get(name) != new_inputs.get(name))
    # the inputs are keyed by task; name the stage once rather than each of its folds
    stages = dict.fromkeys(name.partition("__fold-")[0] for name in differing)
    changed += [f"input {stage} changed" for stage in stages]
    return ", ".join(changed) or "key changed"


@dataclass
class Runbook:
    """The tasks of one params file and how to plan, list and execute them.

    Parameters
    ----------
    root
        The project root: ``notebooks/`` lives here and the notebooks run with it as working directory.
    params
        The validated params file.
    layout
        Where artifacts, manifests and reports go.
    stages
        The stages in run order (:data:`image2reg.stages.STAGES`; tests pass their own).
    html
        Write an HTML copy beside each executed notebook.
    show_code
        Show the code cells in the HTML copies (hidden by default; the executed notebooks keep them).
    """

    root: Path
    params: ParamsLike
    layout: RunLayout
    stages: Sequence[Stage] = STAGES
    html: bool = True
    show_code: bool = False
    package: str = field(default_factory=package_fingerprint)
    _checks: dict = field(default_factory=dict, init=False, repr=False)  # output checks, once per manifest version

    def configured(self) -> list[Stage]:
        """The stages the params file runs, in run order."""
        names = set(self.params.stage_names())
        return [stage for stage in self.stages if stage.name in names]

    def tasks(self) -> list[Task]:
        """Every task of the params file, in run order."""
        return [Task(stage, fold, self.layout.task_name(stage, fold)) for stage in self.configured()
                for fold in (range(self.params.folds) if stage.per_fold else [None])]

    def select(self, names: Sequence[str] | None = None, start: str | None = None) -> list[Stage]:
        """The configured stages named in ``names`` (all by default), from stage ``start`` on.

        Raises
        ------
        RunbookError
            For a name that is no stage, or a stage the params file does not run.
        """
        configured = self.configured()
        chosen = [self._lookup(name, configured) for name in names] if names else configured
        first = configured.index(self._lookup(start, configured)) if start else 0
        return [stage for stage in configured[first:] if stage in chosen]

    def check_inputs(self, selected: Sequence[Stage]) -> None:
        """Every selected stage's input stages are configured too, or finished on disk (or, for the inputs it
        may borrow, finished by its reference dataset): checked before anything runs.

        Raises
        ------
        RunbookError
            Naming the stage, the input stage it lacks and the params file.
        """
        configured = {stage.name for stage in self.configured()}
        for stage in selected:
            reference = self._reference(Task(stage, None, stage.id)) if stage.reference_inputs else None
            for name in stage.inputs:
                if name in configured:
                    continue
                source = next((other for other in self.stages if other.name == name), None)
                if source is None or source.optional:
                    continue  # a stage list without it (tests), or a stage its readers can do without
                layout = reference if reference is not None and name in stage.reference_inputs else self.layout
                folds = range(self.params.folds) if source.per_fold else [None]
                manifests = [_read_manifest(layout.manifest(source, fold)) for fold in folds]
                if all(m is not None and m["status"] == "complete" for m in manifests):
                    continue
                where = self.params.source_path or "the params file"
                raise RunbookError(f"stage {stage.id} reads stage {source.id}, which {where} does not configure and "
                                   f"dataset '{layout.dataset}' has not run: add a '{name}' block to the params "
                                   f"or run that stage first")

    def _lookup(self, name: str, configured: list[Stage]) -> Stage:
        found = next((stage for stage in self.stages if name in (stage.name, stage.number, stage.id)), None)
        if found is None:
            known = ", ".join(stage.id for stage in self.stages)
            raise RunbookError(f"unknown stage '{name}'; known stages: {known}")
        if found not in configured:
            where = self.params.source_path or "the params file"
            runs = ", ".join(stage.id for stage in configured)
            raise RunbookError(f"stage {found.id} is not configured in {where} (it runs: {runs})")
        return found

    def notebook(self, stage: Stage) -> Path:
        return self.root / "notebooks" / f"{stage.id}.py"

    def plan(self, selected: Sequence[Stage], force: bool = False) -> list[PlannedTask]:
        """Key and state of every task of the ``selected`` stages.

        A selected task's key is computed from the keys of its input tasks as they will be when it
        runs: the current key of a selected input, the recorded key of an input left alone (or
        ``incomplete`` if it never finished), so running a stage alone never masks a stale input.
        """
        effective: dict[Task, str] = {}
        planned = []
        for task in self.tasks():
            manifest = _read_manifest(self.layout.manifest(task.stage, task.fold))
            if task.stage not in selected:
                complete = manifest is not None and manifest["status"] == "complete"
                effective[task] = self._content_key(manifest["key"], manifest) if complete else "incomplete"
                continue
            components = self._components(task, effective)
            key = _hash_json(components)
            reason = self._stale_reason(manifest, key, components)
            runs = force or reason is not None
            # a task that runs has no outputs yet: its readers are planned as stale, and planned again once it ran
            effective[task] = _hash_json([key, "runs"]) if runs else self._content_key(key, manifest)
            planned.append(PlannedTask(task, key, components, manifest, reason, runs=runs))
        return planned

    def _content_key(self, key: str, manifest: dict[str, Any], layout: RunLayout | None = None) -> str:
        """A finished task's key combined with the current content of its outputs (as its readers see it)."""
        return _hash_json([key, self._check(manifest, layout)[1]])

    def _check(self, manifest: dict[str, Any], layout: RunLayout | None = None) -> tuple[str | None, str | None]:
        """:func:`image2reg.outputs.check_outputs` of a manifest's outputs, once per manifest version and run."""
        root = (layout or self.layout).root
        token = (str(root), manifest["task"], manifest.get("finished_at"), manifest["key"])
        if token not in self._checks:
            self._checks[token] = check_outputs(manifest["outputs"], root)
        return self._checks[token]

    def _components(self, task: Task, effective: dict[Task, str]) -> dict[str, Any]:
        notebook = self.notebook(task.stage)
        if not notebook.is_file():
            raise RunbookError(f"notebook of stage {task.stage.id} not found: {notebook}")
        reference = self._reference(task)
        borrowed = set(task.stage.reference_inputs) if reference else set()
        inputs = {
            other.name: key
            for other, key in effective.items()
            if other.stage.name in task.stage.inputs and other.stage.name not in borrowed
            and not (task.stage.per_fold and other.stage.per_fold and other.fold != task.fold)
        }
        for stage in self.stages:
            if stage.name in borrowed:  # another dataset's finished stage: its recorded key
                manifest = _read_manifest(reference.manifest(stage))
                complete = manifest is not None and manifest["status"] == "complete"
                inputs[f"{reference.dataset}:{stage.id}"] = (self._content_key(manifest["key"], manifest, reference)
                                                            if complete else "incomplete")
        return {
            "notebook": hashlib.sha256(notebook.read_bytes()).hexdigest(),
            "params": self.params.fingerprint(task.stage.name, task.fold),
            "package": self.package,
            "inputs": inputs,
        }

    def _reference(self, task: Task) -> RunLayout | None:
        """The layout of the dataset a task's params name as ``reference`` (None: this dataset)."""
        if not task.stage.reference_inputs:
            return None
        name = getattr(self.params.stage(task.stage.name, task.fold), "reference", None)
        if not name or name == self.layout.dataset:
            return None
        return RunLayout(dataset=name, runs_dir=self.layout.runs_dir, reports_dir=self.layout.reports_dir)

    def _stale_reason(self, manifest: dict[str, Any] | None, key: str, components: dict[str, Any]) -> str | None:
        if manifest is None:
            return "never run"
        if manifest["status"] != "complete":
            return f"interrupted (started {manifest['started_at']}, not finished)"
        if manifest["key"] != key:
            return _changes(manifest.get("components", {}), components)
        return self._check(manifest)[0]

    # ----------------------------------------------------------------------------------------
    # Executing
    # ----------------------------------------------------------------------------------------
    def run(self, planned: Sequence[PlannedTask], force: bool = False) -> int:
        """Execute the tasks that are not up to date, in order; stop at the first failure.

        ``force`` (``--force``): every planned task recomputes from an empty folder, reusing nothing.

        Returns
        -------
        int
            0 on success, 1 when a task failed, 130 when interrupted (Ctrl-C).
        """
        began = time.monotonic()
        counts = {"ran": 0, "skipped": 0, "failed": 0}
        selected = list(dict.fromkeys(item.task.stage for item in planned))
        forced = {item.task for item in planned} if force else set()
        for index, item in enumerate(planned, 1):
            if index > 1:  # the tasks before may have changed their outputs: plan this one again
                item = next(again for again in self.plan(selected) if again.task == item.task)
                item = replace(item, runs=item.runs or item.task in forced)
            prefix = f"[{index}/{len(planned)}] {item.task.label} ..."
            if not item.runs:
                print(f"{prefix} skipped (up to date)", flush=True)
                counts["skipped"] += 1
                continue
            print(f"{prefix} running ({item.reason or 'forced'})", flush=True)
            task_began = time.monotonic()
            try:
                self.execute(item, force=item.task in forced)
            except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - every failure is reported
                counts["failed"] += 1
                print(f"{prefix} FAILED after {time.monotonic() - task_began:.1f} s", flush=True)
                print(self._failure_report(item.task, error), file=sys.stderr, flush=True)
                self._summary(counts, began)
                self.write_index()
                return _exit_code(error)
            counts["ran"] += 1
            print(f"{prefix} done in {time.monotonic() - task_began:.1f} s", flush=True)
        self._summary(counts, began)
        self.write_index()
        return 0

    def write_index(self) -> Path:
        """Write ``reports/<dataset>/index.html``: the pipeline, every task's state and the headline numbers."""
        path = write_index(self.layout, [(task.stage, task.fold) for task in self.tasks()])
        print(f"index of the reports: {path}", flush=True)
        return path

    def execute(self, item: PlannedTask, force: bool = False) -> None:
        """Run one task's notebook, recording it as started first and complete after success.

        A derived stage runs in a work folder beside its artifact folder (:class:`image2reg.outputs.TaskFolder`):
        the last good outputs, and their manifest, stay in place until the run completes and the folders are
        exchanged; a failed or stopped run leaves its work for the next run of the same key.
        """
        stage, fold = item.task.stage, item.task.fold
        out_dir = self.layout.stage_dir(stage, fold)
        folder = TaskFolder(out_dir) if stage.derived else None
        if folder is not None:
            print(f"  {folder.prepare(item.key, force)}", flush=True)
        report = self.layout.report(stage, fold)
        report.with_suffix(".html").unlink(missing_ok=True)
        record = {
            "task": item.task.name, "stage": stage.id, "fold": fold,
            "key": item.key, "components": item.components, "status": "started",
            "started_at": _now(), "finished_at": None, "duration_s": None, "report": report.name, "outputs": {},
        }
        manifest_path = self.layout.manifest(stage, fold)
        last_good = folder is not None and item.manifest is not None and item.manifest["status"] == "complete" \
            and out_dir.exists()
        if not last_good:  # a finished run's record stays until this one finishes: it describes what is in place
            _write_manifest(manifest_path, record)
        began = time.monotonic()
        try:
            self._papermill(item.task, report, folder.work if folder is not None else out_dir)
        except BaseException:
            if last_good:
                print(f"  the outputs of {item.task.name}'s last good run are still in place; this run's work "
                      f"waits in {folder.work} for a rerun with the same inputs", file=sys.stderr, flush=True)
            raise
        if self.html:
            _write_html(report, self.show_code)
        if folder is not None:
            folder.commit()
        _print_bad_fields(out_dir)
        previous = item.manifest["outputs"] if item.manifest and not stage.derived else None
        record.update(status="complete", finished_at=_now(), duration_s=round(time.monotonic() - began, 1),
                      outputs=record_outputs(out_dir, self.layout.root, previous))
        _write_manifest(manifest_path, record)

    def _papermill(self, task: Task, report: Path, work_dir: Path) -> None:
        parameters = {
            "dataset": self.params.dataset,
            "params_path": str(Path(self.params.source_path).resolve()),
            "fold": task.fold,
            "runs_dir": str(Path(self.layout.runs_dir).resolve()),
            "reports_dir": str(Path(self.layout.reports_dir).resolve()),
            "work_dir": str(Path(work_dir).resolve()),
        }
        report.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="image2reg-") as tmp:
            source = Path(tmp) / f"{task.stage.id}.ipynb"
            nbformat.write(jupytext.read(self.notebook(task.stage)), source)
            # papermill saves the output after every cell, so a failure leaves the partial report.
            # The kernel runs in its own session, out of reach of Ctrl-C; nbclient's SIGINT handler
            # shuts it down, and only an immediate shutdown stops the running cell (KeyboardInterrupt).
            try:
                papermill.execute_notebook(
                    str(source), str(report), parameters=parameters, kernel_name="python3", language="python",
                    cwd=str(self.root), progress_bar=True, log_output=False, shutdown_kernel="immediate",
                    coalesce_streams=True,  # a progress bar's updates become its final line, not hundreds
                    kernel_manager_class=IpcKernelManager,
                )
            finally:  # no worker of the stage outlives it, whether it finished, failed or was stopped
                end_kernel_groups()

    def _failure_report(self, task: Task, error: BaseException) -> str:
        name = getattr(error, "ename", type(error).__name__)
        value = getattr(error, "evalue", str(error))
        failure = f"{name}: {value}" if value else name
        lines = [f"task {task.name} failed: {failure}"]
        traceback = getattr(error, "traceback", None)
        if traceback:
            text = _ANSI.sub("", "\n".join(traceback)).splitlines()
            # the frames only: the error itself, often several lines long, is printed above
            raised = [i for i, line in enumerate(text) if line.startswith(name)]
            frames = text[:raised[-1]] if raised else text
            lines.append(f"  traceback of cell [{error.exec_count}] (last lines):")
            lines += [f"    {line}" for line in frames[-TRACEBACK_LINES:]]
        report = self.layout.report(task.stage, task.fold)
        if report.exists():
            lines.append(f"  partially executed notebook: {report}")
        lines.append(f"  manifest: {self.layout.manifest(task.stage, task.fold)}")
        return "\n".join(lines)

    @staticmethod
    def _summary(counts: dict[str, int], began: float) -> None:
        ran, skipped, failed = counts["ran"], counts["skipped"], counts["failed"]
        print(f"ran {ran}, skipped {skipped}, failed {failed} in {time.monotonic() - began:.1f} s", flush=True)

    # ----------------------------------------------------------------------------------------
    # Reporting without running
    # ----------------------------------------------------------------------------------------
    def print_list(self, planned: Sequence[PlannedTask]) -> None:
        """A table of the tasks with their state and last run."""
        rows = [("task", "per-fold", "state", "last run")]
        for item in planned:
            rows.append((item.task.name, "yes" if item.task.stage.per_fold else "no", item.state,
                         _last_run(item.manifest)))
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])

    def print_dry_run(self, planned: Sequence[PlannedTask]) -> None:
        """The tasks a run would execute, with the reason for each, and those it would skip."""
        running = sum(item.runs for item in planned)
        print(f"dry run: {running} of {len(planned)} tasks would run (nothing is executed)")
        width = max((len(item.task.name) for item in planned), default=0)
        for item in planned:
            why = (item.reason or "forced (--force)") if item.runs else "up to date"
            print(f"  {'run ' if item.runs else 'skip'}  {item.task.name.ljust(width)}  {why}")


def _print_bad_fields(folder: Path, shown: int = 10) -> None:
    """Name in the console the raw fields a stage skipped as bad (its ``images.parquet`` tables' ``error``)."""
    import pandas as pd  # here: only a finished stage with image tables needs it

    for table in sorted(folder.rglob(artifact_name("images", "images"))):
        if any(part.startswith(".") for part in table.relative_to(folder).parts):
            continue
        images = pd.read_parquet(table, columns=["image_path", "error"])
        bad = images[images["error"] != ""]
        if bad.empty:
            continue
        print(f"  {len(bad)} of {len(images)} fields skipped as bad (the error column of {table}):", flush=True)
        for path, error in bad.head(shown).itertuples(index=False):
            print(f"    {path}: {error}", flush=True)
        if len(bad) > shown:
            print(f"    ... and {len(bad) - shown} more", flush=True)


def _exit_code(error: BaseException) -> int:
    """130 for Ctrl-C, whether it reached the runbook or the notebook's cell; 1 for any other failure."""
    interrupted = isinstance(error, KeyboardInterrupt) or getattr(error, "ename", None) == "KeyboardInterrupt"
    return 130 if interrupted else 1


def _last_run(manifest: dict[str, Any] | None) -> str:
    if manifest is None:
        return "-"
    if manifest["status"] != "complete":
        return f"{manifest['started_at']} (not finished)"
    return f"{manifest['finished_at']} ({manifest['duration_s']} s)"


#: Process groups of the kernels this process started (a kernel runs in its own session, so its group holds
#: the kernel and every process it started: pool workers, the resource tracker, local Dask workers).
_KERNEL_GROUPS: set[int] = set()


class IpcKernelManager(AsyncKernelManager):
    """A kernel reached over local IPC sockets instead of TCP: no port is opened, and the kernel has no
    "running over TCP without encryption" warning to print into every stage's output. Its process group is
    recorded so that :func:`end_kernel_groups` can end whatever the kernel left behind."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        group = getattr(self.provisioner, "pgid", None)
        if group and group != os.getpgid(0):
            _KERNEL_GROUPS.add(group)


def end_kernel_groups(grace_s: float = 3.0) -> None:
    """End every process left in the kernels' process groups: SIGTERM, then SIGKILL after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for group in _KERNEL_GROUPS:
            try:
                os.killpg(group, sig)
                alive.add(group)
            except (ProcessLookupError, PermissionError):
                pass
        _KERNEL_GROUPS.intersection_update(alive)
        deadline = time.monotonic() + grace_s
        while _KERNEL_GROUPS and sig == signal.SIGTERM and time.monotonic() < deadline:
            time.sleep(0.1)
            for group in list(_KERNEL_GROUPS):
                try:
                    os.killpg(group, 0)
                except (ProcessLookupError, PermissionError):
                    _KERNEL_GROUPS.discard(group)
    _KERNEL_GROUPS.clear()


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM stops a run the way Ctrl-C does: the stage is interrupted and everything it started ends."""
    raise KeyboardInterrupt(f"signal {signum}")


#: Wide tables scroll sideways instead of being cut, in the HTML copies of the reports.
_WIDE_TABLES = ("<style>.jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow-x: auto; } "
                ".jp-RenderedHTMLCommon table { display: block; max-width: 100%; overflow-x: auto; }</style>")


def _write_html(report: Path, show_code: bool = False) -> None:
    """The HTML copy of an executed notebook: code hidden unless ``show_code`` (the ``.ipynb`` keeps it)."""
    exporter = HTMLExporter(exclude_input=not show_code, exclude_input_prompt=not show_code,
                            exclude_output_prompt=not show_code)
    body, _ = exporter.from_notebook_node(nbformat.read(report, as_version=4))
    write_text_atomic(report.with_suffix(".html"), body.replace("</head>", _WIDE_TABLES + "</head>", 1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="run params/<DATASET>.yml of the project")
    source.add_argument("--params", type=Path, help="run this params file")
    parser.add_argument("--stages", nargs="+", metavar="STAGE", help="only these stages (id, number or name)")
    parser.add_argument("--from", dest="start", metavar="STAGE", help="this stage and the later ones")
    parser.add_argument("--force", action="store_true",
                        help="recompute the selected stages from scratch, even if up to date (no finished shard or "
                             "model is reused; the last outputs stay in place until the new ones are complete)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="print every task with its state and exit")
    mode.add_argument("--dry-run", action="store_true", help="print what would run and why; run nothing")
    parser.add_argument("--runs-dir", type=Path, help="artifacts folder (default <root>/runs)")
    parser.add_argument("--reports-dir", type=Path, help="executed notebooks folder (default <root>/reports)")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML copies of the reports")
    parser.add_argument("--show-code", action="store_true", help="show the code cells in the HTML reports")
    return parser


def main(argv: list[str] | None = None, *, root: str | Path | None = None,
         stages: Sequence[Stage] = STAGES) -> int:
    """Command line entry point; returns the exit code (2: bad params or arguments, nothing ran).

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).
    root
        The project root (default: the one at or above the working directory).
    stages
        The stages in run order.
    """
    args = _parser().parse_args(argv)
    try:
        root = Path(root).resolve() if root else find_project_root()
        params_path = args.params.resolve() if args.params else params_path_for(args.dataset, root)
        params = load_params(params_path)
        if args.dataset and params.dataset != args.dataset:
            raise ParamsError(f"{params_path}: dataset is '{params.dataset}', not '{args.dataset}'")
        layout = RunLayout(params.dataset, (args.runs_dir or root / "runs").resolve(),
                           (args.reports_dir or root / "reports").resolve())
        runbook = Runbook(root, params, layout, stages, html=not args.no_html, show_code=args.show_code)
        selected = runbook.select(args.stages, args.start)
        if args.list or args.dry_run:
            planned = runbook.plan(selected, force=args.force)
            (runbook.print_list if args.list else runbook.print_dry_run)(planned)
            return 0
        runbook.check_inputs(selected)
        lock = FolderLock(layout.root, what=f"runbook.py {' '.join(sys.argv[1:] if argv is None else argv)}")
        lock.acquire()
    except (ParamsError, RunbookError, FileNotFoundError, LockHeldError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (a test): SIGTERM keeps its default
        previous = None
    try:
        try:
            planned = runbook.plan(selected, force=args.force)
        except RunbookError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return runbook.run(planned, force=args.force)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lock.release()
