"""The runbook runs stage notebooks in order, skips what is up to date, resumes what was killed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from image2reg.layout import RunLayout
from image2reg.outputs import recorded_digest
from image2reg.runbook import Runbook, RunbookError
from image2reg.stages import STAGES, Stage

REPO = Path(__file__).resolve().parents[1]

PER_FOLD_STAGES = (
    Stage("00", "data", "Data", derived=False),
    Stage("01", "folds", "Work done per fold", per_fold=True, inputs=("data",)),
    Stage("02", "summary", "Reads every fold", inputs=("folds",)),
)
DERIVED_DATA = (Stage("00", "data", "Data as a derived stage"),)
REFERENCE_STAGES = (
    Stage("00", "data", "Data", derived=False),
    Stage("01", "regulatory", "Made by the reference dataset", inputs=("data",)),
    Stage("02", "validation", "Reads stage 01 of its reference", inputs=("data", "regulatory"),
          reference_inputs=("regulatory",)),
)


def recording_notebook(folder: str) -> str:
    """A stage body writing ``runs/<dataset>/<folder>[/fold-k]/result.txt`` and logging its execution.

    The log lives in the project root, the kernel's working directory, so it counts executions.
    """
    return f"""
    out = Path(runs_dir) / dataset / "{folder}"
    out = out if fold is None else out / f"fold-{{fold}}"
    out = Path(work_dir) if work_dir else out  # the runbook's work folder, swapped into place when done
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.txt").write_text(f"made with fold={{fold}}")
    (out / ".cache").write_text("hidden files are not outputs")
    with open("executions.log", "a") as log:
        log.write(f"{folder} fold={{fold}}\\n")
    """


# Resumable work: part 1 is skipped when present; the next cell waits while the file `hold` exists.
RESUMABLE = """
out = Path(work_dir) if work_dir else Path(runs_dir) / dataset / "00_data"
out.mkdir(parents=True, exist_ok=True)
part = out / "part1.txt"
resumed = part.exists()
if not resumed:
    part.write_text("written before the kill")
(out / "resumed.txt").write_text(str(resumed))

# %%
import time
while Path("hold").exists():
    time.sleep(0.1)
(out / "done.txt").write_text("done")
"""

FAILING = """
(Path(runs_dir) / dataset / "raw").mkdir(parents=True, exist_ok=True)

# %%
raise ValueError("boom in cell")
"""

# The runbook CLI on the derived stage. Python ignores Ctrl-C when started by a shell that does,
# so the driver restores the default handler.
DRIVER = """
import signal
import sys
from pathlib import Path

from image2reg.runbook import main
from image2reg.stages import Stage

signal.signal(signal.SIGINT, signal.default_int_handler)
stages = (Stage("00", "data", "Data as a derived stage"),)
raise SystemExit(main(sys.argv[1:], root=Path(__file__).parent, stages=stages))
"""


@dataclass
class FakeParams:
    """Stand-in for RunParams with any stages: ``stages`` maps a stage name to its params."""

    root: Path
    stages: dict[str, dict]
    overrides: dict[tuple[str, int], dict] = field(default_factory=dict)
    dataset: str = "smoke"
    folds: int = 2

    @property
    def source_path(self) -> Path:
        return self.root / "params" / "smoke.yml"

    def stage_names(self) -> list[str]:
        return list(self.stages)

    def fingerprint(self, name: str, fold: int | None = None) -> str:
        return json.dumps([self.stages[name], self.overrides.get((name, fold)), fold], sort_keys=True)

    def stage(self, name: str, fold: int | None = None) -> SimpleNamespace:
        return SimpleNamespace(**self.stages[name])


def make_runbook(root: Path, params: FakeParams, stages: tuple[Stage, ...] = PER_FOLD_STAGES) -> Runbook:
    return Runbook(root, params, RunLayout("smoke", root / "runs", root / "reports"), stages)


def manifest(workdir: Path, task: str = "00_data") -> dict:
    return json.loads((workdir / "runs" / "smoke" / ".manifests" / f"{task}.json").read_text())


def executions(root: Path) -> list[str]:
    log = root / "executions.log"
    return log.read_text().splitlines() if log.exists() else []


def task_states(runbook: Runbook, names: list[str] | None = None) -> dict[str, str]:
    return {item.task.name: item.state for item in runbook.plan(runbook.select(names))}


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the runbook exited before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the runbook to start the task"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# The real stage 00 on the smoke params
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, run_cli) -> tuple[Path, int]:
    workdir = tmp_path_factory.mktemp("smoke")
    (workdir / "params").mkdir()
    shutil.copy(REPO / "params" / "smoke.yml", workdir / "params" / "smoke.yml")
    return workdir, run_cli(workdir, "--stages", "data", root=REPO)


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Path:
    return Path(shutil.copytree(smoke_run[0], tmp_path / "smoke"))


def test_first_run_executes_the_data_stage(smoke_run):
    workdir, code = smoke_run
    assert code == 0
    report = workdir / "reports" / "smoke" / "00_data.ipynb"
    assert report.is_file() and report.with_suffix(".html").is_file()
    record = manifest(workdir)
    assert record["status"] == "complete" and record["finished_at"]
    assert record["outputs"] and all(name.startswith("raw/") for name in record["outputs"])
    for name, (size, mtime, digest) in record["outputs"].items():
        path = workdir / "runs" / "smoke" / name
        assert path.stat().st_size == size and path.stat().st_mtime_ns == mtime
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    injected = [cell.source for cell in nbformat.read(report, as_version=4).cells
                if "injected-parameters" in cell.metadata.get("tags", [])]
    assert str((workdir / "runs").resolve()) in injected[0] and "fold = None" in injected[0]
    # the progress bar's updates are stored as its final line only
    streams = "".join(output.get("text", "") for cell in nbformat.read(report, as_version=4).cells
                      for output in cell.get("outputs", []) if output.get("output_type") == "stream")
    assert streams.count("synthesizing fields") == 1 and "100%" in streams


def test_second_run_skips_the_up_to_date_task(smoke_copy, run_cli, capsys):
    before = manifest(smoke_copy)
    report = smoke_copy / "reports" / "smoke" / "00_data.ipynb"
    report_written = report.stat().st_mtime_ns
    assert run_cli(smoke_copy, "--stages", "data", root=REPO) == 0
    out = capsys.readouterr().out
    assert "[1/1] 00_data ... skipped (up to date)" in out and "ran 0, skipped 1, failed 0" in out
    assert manifest(smoke_copy) == before
    assert report.stat().st_mtime_ns == report_written


def test_changed_data_param_reruns(smoke_copy, run_cli, capsys):
    params = smoke_copy / "params" / "smoke.yml"
    text = params.read_text()
    assert "nuclei_per_field: 8" in text
    params.write_text(text.replace("nuclei_per_field: 8", "nuclei_per_field: 9"))
    before = manifest(smoke_copy)

    assert run_cli(smoke_copy, "--dry-run", "--stages", "data", root=REPO) == 0
    assert "run   00_data  params changed" in capsys.readouterr().out
    assert run_cli(smoke_copy, "--stages", "data", root=REPO) == 0
    assert "ran 1, skipped 0, failed 0" in capsys.readouterr().out
    after = manifest(smoke_copy)
    assert after["status"] == "complete" and after["key"] != before["key"]
    assert after["components"]["params"] != before["components"]["params"]
    assert after["components"]["notebook"] == before["components"]["notebook"]


# --------------------------------------------------------------------------------------------
# A fake stage 00 that runs in a second
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_run(make_project, run_cli) -> Path:
    root = make_project({"00_data": recording_notebook("raw")})
    assert run_cli(root) == 0
    return root


@pytest.fixture
def fake_copy(fake_run, tmp_path) -> Path:
    return Path(shutil.copytree(fake_run, tmp_path / "project"))


def test_manifest_records_visible_outputs_with_their_contents(fake_run):
    record = manifest(fake_run)
    text = b"made with fold=None"
    assert list(record["outputs"]) == ["raw/result.txt"]
    size, _, digest = record["outputs"]["raw/result.txt"]
    assert size == len(text) and digest == hashlib.sha256(text).hexdigest()
    assert record["task"] == "00_data" and record["fold"] is None and record["duration_s"] >= 0
    assert executions(fake_run) == ["raw fold=None"]


def test_list_shows_each_task_with_state_and_last_run(fake_run, run_cli, capsys):
    assert run_cli(fake_run, "--list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "per-fold", "state", "last", "run"]
    assert lines[1].startswith("00_data  no        up to date  ")
    assert f"{manifest(fake_run)['finished_at']} (" in lines[1]


def test_edited_notebook_reruns(fake_copy, run_cli, capsys):
    notebook = fake_copy / "notebooks" / "00_data.py"
    notebook.write_text(notebook.read_text() + "print('edited')\n")
    assert run_cli(fake_copy, "--list") == 0
    assert "stale: notebook changed" in capsys.readouterr().out
    assert run_cli(fake_copy) == 0
    assert run_cli(fake_copy) == 0
    assert executions(fake_copy) == ["raw fold=None"] * 2


def test_rerun_of_the_data_stage_never_clears_its_raw_folder(fake_copy, run_cli):
    params = fake_copy / "params" / "smoke.yml"
    params.write_text(params.read_text().replace("nuclei_per_field: 8", "nuclei_per_field: 9"))
    downloaded = fake_copy / "runs" / "smoke" / "raw" / "downloaded.bin"
    downloaded.write_bytes(b"raw data is never deleted")
    assert run_cli(fake_copy) == 0
    assert executions(fake_copy) == ["raw fold=None"] * 2
    assert downloaded.read_bytes() == b"raw data is never deleted"


def test_force_reruns_an_up_to_date_task_and_no_html_drops_the_copy(fake_copy, run_cli, capsys):
    html = fake_copy / "reports" / "smoke" / "00_data.html"
    assert html.is_file()
    assert run_cli(fake_copy, "--force", "--no-html") == 0
    assert "00_data ... running (forced)" in capsys.readouterr().out
    assert executions(fake_copy) == ["raw fold=None"] * 2
    assert not html.exists() and html.with_suffix(".ipynb").is_file()


def test_missing_output_reruns(fake_copy, run_cli, capsys):
    output = fake_copy / "runs" / "smoke" / "raw" / "result.txt"
    output.unlink()
    assert run_cli(fake_copy, "--list") == 0
    assert "stale: outputs missing: raw/result.txt" in capsys.readouterr().out
    assert run_cli(fake_copy) == 0
    assert output.is_file() and executions(fake_copy) == ["raw fold=None"] * 2


def test_output_of_another_size_is_stale(fake_copy, run_cli, capsys):
    with open(fake_copy / "runs" / "smoke" / "raw" / "result.txt", "a") as output:
        output.write(" and edited by hand")
    assert run_cli(fake_copy, "--dry-run") == 0
    assert "run   00_data  outputs changed: raw/result.txt" in capsys.readouterr().out


def test_an_edit_of_the_same_size_is_noticed_and_a_touch_is_not(fake_copy, run_cli, capsys):
    output = fake_copy / "runs" / "smoke" / "raw" / "result.txt"
    os.utime(output, ns=(output.stat().st_atime_ns, output.stat().st_mtime_ns + 10**9))  # touched, same bytes
    assert run_cli(fake_copy, "--dry-run") == 0
    assert "skip  00_data  up to date" in capsys.readouterr().out
    output.write_text(output.read_text().upper())  # same size, other content
    assert run_cli(fake_copy, "--dry-run") == 0
    assert "run   00_data  outputs changed: raw/result.txt (same size, other content)" in capsys.readouterr().out


def test_dry_run_runs_nothing(make_project, run_cli, capsys):
    root = make_project({"00_data": recording_notebook("raw")})
    assert run_cli(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 of 1 tasks would run" in out and "run   00_data  never run" in out
    assert not (root / "runs").exists() and not (root / "reports").exists() and not executions(root)


@pytest.mark.parametrize("selection", [["--stages", "data"], ["--stages", "00"], ["--from", "00_data"]])
def test_stages_are_selected_by_name_number_or_id(fake_run, run_cli, capsys, selection):
    assert run_cli(fake_run, "--dry-run", *selection) == 0
    assert "skip  00_data  up to date" in capsys.readouterr().out


def test_unknown_stage_is_an_error_listing_the_known_ones(fake_run, run_cli, capsys):
    assert run_cli(fake_run, "--stages", "99") == 2
    assert "unknown stage '99'; known stages: 00_data" in capsys.readouterr().err


def test_params_error_exits_2_naming_the_file(make_project, run_cli, capsys):
    root = make_project({"00_data": recording_notebook("raw")})
    params = root / "params" / "smoke.yml"
    params.write_text(params.read_text().replace("nuclei_per_field:", "nuclei_per_feld:"))
    assert run_cli(root) == 2
    err = capsys.readouterr().err
    assert str(params) in err and "nuclei_per_feld" in err
    assert not (root / "runs").exists() and not executions(root)


def test_root_script_finds_its_project_from_any_cwd(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "runbook.py"), "--dataset", "smoke", "--stages", "nope"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown stage 'nope'; known stages: " + ", ".join(stage.id for stage in STAGES) in result.stderr


def test_select_keeps_run_order_and_starts_from_a_stage(tmp_path):
    runbook = make_runbook(tmp_path, FakeParams(tmp_path, {"data": {}, "folds": {}, "summary": {}}))
    assert [stage.id for stage in runbook.select(["summary", "00"])] == ["00_data", "02_summary"]
    assert [stage.id for stage in runbook.select(start="01")] == ["01_folds", "02_summary"]
    assert [stage.id for stage in runbook.select(["data", "summary"], start="folds")] == ["02_summary"]
    only_data = make_runbook(tmp_path, FakeParams(tmp_path, {"data": {}}))
    with pytest.raises(RunbookError, match="stage 02_summary is not configured"):
        only_data.select(["summary"])


# --------------------------------------------------------------------------------------------
# Failures, kills and resumes
# --------------------------------------------------------------------------------------------
def test_failing_notebook_stops_the_run_and_points_to_the_partial_report(make_project, capsys):
    root = make_project({"00_data": FAILING, "01_after": recording_notebook("01_after")})
    stages = (STAGES[0], Stage("01", "after", "Runs after data", inputs=("data",)))
    runbook = make_runbook(root, FakeParams(root, {"data": {}, "after": {}}), stages)
    assert runbook.run(runbook.plan(runbook.select())) == 1
    captured = capsys.readouterr()
    report = root / "reports" / "smoke" / "00_data.ipynb"
    assert "[1/2] 00_data ... FAILED" in captured.out and "failed 1" in captured.out
    assert "task 00_data failed: ValueError: boom in cell" in captured.err
    assert 'raise ValueError("boom in cell")' in captured.err and "\x1b[" not in captured.err
    assert f"partially executed notebook: {report}" in captured.err
    assert report.is_file() and "boom in cell" in report.read_text()
    assert not report.with_suffix(".html").exists()
    assert manifest(root)["status"] == "started"
    assert not (root / "reports" / "smoke" / "01_after.ipynb").exists() and not executions(root)


def test_killed_run_is_interrupted_and_resumes_its_partial_work(make_project, run_cli, cli_args, capsys):
    root = make_project({"00_data": RESUMABLE})
    (root / "drive.py").write_text(DRIVER)
    (root / "hold").touch()
    out_dir = root / "runs" / "smoke" / "00_data"
    process = subprocess.Popen([sys.executable, str(root / "drive.py"), *cli_args(root)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (out_dir.parent / ".00_data.work" / "resumed.txt").is_file(), process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (root / "hold").unlink()
    assert manifest(root)["status"] == "started"

    assert run_cli(root, "--list", stages=DERIVED_DATA) == 0
    assert "interrupted (started " in capsys.readouterr().out
    assert run_cli(root, stages=DERIVED_DATA) == 0
    assert manifest(root)["status"] == "complete"
    assert (out_dir / "resumed.txt").read_text() == "True"
    assert (out_dir / "part1.txt").read_text() == "written before the kill"
    assert (out_dir / "done.txt").is_file()


def test_ctrl_c_stops_the_run_with_exit_code_130(make_project, cli_args):
    root = make_project({"00_data": RESUMABLE})
    (root / "drive.py").write_text(DRIVER)
    (root / "hold").touch()
    process = subprocess.Popen([sys.executable, str(root / "drive.py"), *cli_args(root)], start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (root / "runs" / "smoke" / ".00_data.work" / "resumed.txt").is_file(), process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130
    assert "00_data ... FAILED" in out and "task 00_data failed: KeyboardInterrupt" in err
    assert manifest(root)["status"] == "started"


def test_derived_stage_with_a_new_key_starts_from_an_empty_folder(make_project, run_cli):
    root = make_project({"00_data": RESUMABLE})
    assert run_cli(root, stages=DERIVED_DATA) == 0
    out_dir = root / "runs" / "smoke" / "00_data"
    (out_dir / "stale.txt").write_text("made from the old params")
    params = root / "params" / "smoke.yml"
    params.write_text(params.read_text().replace("nuclei_per_field: 8", "nuclei_per_field: 9"))
    assert run_cli(root, stages=DERIVED_DATA) == 0
    assert not (out_dir / "stale.txt").exists()
    assert (out_dir / "resumed.txt").read_text() == "False"


# --------------------------------------------------------------------------------------------
# Per-fold stages and dependencies
# --------------------------------------------------------------------------------------------
def content_key(record: dict) -> str:
    """What a reader's key holds of a finished task: its key and the digest of its outputs' contents."""
    digest = recorded_digest(record["outputs"])
    return hashlib.sha256(json.dumps([record["key"], digest], sort_keys=True).encode()).hexdigest()


def test_per_fold_stage_runs_once_per_fold_and_follows_its_inputs(make_project):
    root = make_project({stage.id: recording_notebook("raw" if stage.name == "data" else stage.id)
                         for stage in PER_FOLD_STAGES})
    params = FakeParams(root, {"data": {"size": 1}, "folds": {"epochs": 1}, "summary": {}})
    runbook = make_runbook(root, params)
    assert runbook.run(runbook.plan(runbook.select())) == 0

    reports = sorted(path.name for path in (root / "reports" / "smoke").glob("*.ipynb"))
    assert reports == ["00_data.ipynb", "01_folds__fold-0.ipynb", "01_folds__fold-1.ipynb", "02_summary.ipynb"]
    assert executions(root) == ["raw fold=None", "01_folds fold=0", "01_folds fold=1", "02_summary fold=None"]
    fold_1 = manifest(root, "01_folds__fold-1")
    assert list(fold_1["outputs"]) == ["01_folds/fold-1/result.txt"]
    assert fold_1["outputs"]["01_folds/fold-1/result.txt"][0] == len("made with fold=1")
    assert list(fold_1["components"]["inputs"]) == ["00_data"]
    assert sorted(manifest(root, "02_summary")["components"]["inputs"]) == ["01_folds__fold-0", "01_folds__fold-1"]
    assert set(task_states(runbook).values()) == {"up to date"}

    params.stages["data"] = {"size": 2}
    assert task_states(runbook) == {
        "00_data": "stale: params changed",
        "01_folds__fold-0": "stale: input 00_data changed",
        "01_folds__fold-1": "stale: input 00_data changed",
        "02_summary": "stale: input 01_folds changed",
    }
    # left out of the run, the stale stage 00 keeps its artifacts, which the later stages match
    assert set(task_states(runbook, ["folds", "summary"]).values()) == {"up to date"}

    params.stages["data"] = {"size": 1}
    params.overrides[("folds", 1)] = {"epochs": 2}
    stale = {name: state for name, state in task_states(runbook).items() if state != "up to date"}
    assert stale == {"01_folds__fold-1": "stale: params changed", "02_summary": "stale: input 01_folds changed"}


def test_a_stage_follows_the_key_of_its_reference_datasets_stage(make_project):
    root = make_project({stage.id: recording_notebook("raw" if stage.name == "data" else stage.id)
                         for stage in REFERENCE_STAGES})
    reference_params = FakeParams(root, {"data": {"size": 1}, "regulatory": {"epochs": 1}}, dataset="ref")
    reference = Runbook(root, reference_params, RunLayout("ref", root / "runs", root / "reports"), REFERENCE_STAGES)
    assert reference.run(reference.plan(reference.select())) == 0
    params = FakeParams(root, {"data": {"size": 1}, "validation": {"reference": "ref"}})
    runbook = make_runbook(root, params, REFERENCE_STAGES)
    assert runbook.run(runbook.plan(runbook.select())) == 0

    recorded = json.loads((root / "runs" / "ref" / ".manifests" / "01_regulatory.json").read_text())
    inputs = manifest(root, "02_validation")["components"]["inputs"]
    assert inputs == {"00_data": content_key(manifest(root)), "ref:01_regulatory": content_key(recorded)}
    assert set(task_states(runbook).values()) == {"up to date"}

    reference_params.stages["regulatory"] = {"epochs": 2}  # the reference redoes its stage 01
    assert reference.run(reference.plan(reference.select(["regulatory"]))) == 0
    assert task_states(runbook) == {"00_data": "up to date", "02_validation": "stale: input ref:01_regulatory changed"}
    shutil.rmtree(root / "runs" / "ref" / ".manifests")  # an unfinished reference reads as incomplete
    assert runbook.plan(runbook.select(["validation"]))[0].components["inputs"]["ref:01_regulatory"] == "incomplete"
