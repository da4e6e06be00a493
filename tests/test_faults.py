"""Faults leave nothing stale and lose nothing: stopped runs, failed reruns, --force, two runs at once.

Each test drives the runbook CLI on a tiny fake project (tests/conftest.py ``make_project``) whose one stage is
written to show the fault: a pool of workers that keep writing, a stage paused on a ``hold`` file, a failing
rerun. The real stages go through the same runbook paths.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_runbook import DERIVED_DATA, DRIVER, RESUMABLE, manifest, wait_until

# A stage whose process pool keeps writing files: the kernel records its process group first.
WORKERS = """
import os, sys
sys.path.insert(0, os.getcwd())
from image2reg.execute import ExecutionParams, map_tasks
from slow_work import write_slowly
out = Path(work_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "group.txt").write_text(str(os.getpgid(0)))
for _ in map_tasks(write_slowly, [(str(out), i) for i in range(2)], ExecutionParams(backend="processes", workers=2),
                   progress_bar=False):
    pass
"""

SLOW_WORK = """
import time
from pathlib import Path


def write_slowly(task):
    folder, index = task
    for step in range(600):
        Path(folder, f"w{index}-{step}.txt").write_text("x")
        time.sleep(0.05)
    return index
"""


def _start(root: Path, cli_args) -> subprocess.Popen:
    (root / "drive.py").write_text(DRIVER)
    (root / "slow_work.py").write_text(SLOW_WORK)
    return subprocess.Popen([sys.executable, str(root / "drive.py"), *cli_args(root)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _group_gone(group: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _written(folder: Path) -> int:
    return len(list(folder.glob("w*.txt")))


@pytest.mark.slow  # starts a kernel and a process pool, then waits for them to end
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_run_ends_its_kernel_and_workers_and_nothing_writes_after(make_project, cli_args, sig):
    root = make_project({"00_data": WORKERS})
    out = root / "runs" / "smoke" / ".00_data.work"
    temp_before = set(Path(tempfile.gettempdir()).glob("image2reg-*"))
    process = _start(root, cli_args)
    try:
        wait_until(lambda: _written(out) >= 4, process)
        group = int((out / "group.txt").read_text())
        os.kill(process.pid, sig)
        process.wait(timeout=30)
        assert _group_gone(group, timeout=10), "processes of the stage's kernel are still alive 10 s after"
        count = _written(out)
        time.sleep(1.0)
        assert _written(out) == count, "a worker went on writing after the run was stopped"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    if sig != signal.SIGKILL:
        assert process.returncode == 130
        assert set(Path(tempfile.gettempdir()).glob("image2reg-*")) <= temp_before  # its temp folder is gone
    assert manifest(root)["status"] == "started"


@pytest.mark.slow  # two runbooks with kernels
def test_a_second_run_of_the_same_dataset_is_refused_naming_the_first(make_project, cli_args, run_cli, capsys):
    root = make_project({"00_data": RESUMABLE})
    (root / "hold").touch()
    process = _start(root, cli_args)
    try:
        wait_until(lambda: (root / "runs" / "smoke" / ".00_data.work" / "resumed.txt").is_file(), process)
        assert run_cli(root, stages=DERIVED_DATA) == 2
        assert f"in use by PID {process.pid}" in capsys.readouterr().err
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (root / "hold").unlink()
    assert run_cli(root, stages=DERIVED_DATA) == 0  # the dead run's lock is taken over
    assert "taking over its lock" in capsys.readouterr().err


def test_a_failed_rerun_leaves_the_last_good_outputs_in_place(make_project, run_cli, capsys):
    root = make_project({"00_data": RESUMABLE})
    assert run_cli(root, stages=DERIVED_DATA) == 0
    out = root / "runs" / "smoke" / "00_data"
    good = manifest(root)
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    notebook = root / "notebooks" / "00_data.py"
    notebook.write_text(notebook.read_text() + '\n# %%\nraise ValueError("a broken input")\n')
    assert run_cli(root, stages=DERIVED_DATA) == 1
    assert "the outputs of 00_data's last good run are still in place" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before  # not even touched
    assert manifest(root) == good  # the record of what is in place, not of the failed run
    work = root / "runs" / "smoke" / ".00_data.work"
    assert (work / "done.txt").is_file()  # the failed run's work waits for a rerun with the same key
    assert run_cli(root, "--list", stages=DERIVED_DATA) == 0
    assert "stale: notebook changed" in capsys.readouterr().out


def test_force_recomputes_from_an_empty_folder(make_project, run_cli):
    root = make_project({"00_data": RESUMABLE})
    assert run_cli(root, stages=DERIVED_DATA) == 0
    out = root / "runs" / "smoke" / "00_data"
    (out / "extra.txt").write_text("left by the last run")
    assert run_cli(root, "--force", stages=DERIVED_DATA) == 0
    assert (out / "resumed.txt").read_text() == "False"  # part 1 was not reused
    assert not (out / "extra.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [".lock", ".manifests", "00_data"]  # no work left
    assert json.loads((root / "runs" / "smoke" / ".manifests" / "00_data.json").read_text())["status"] == "complete"


def test_force_is_explained_in_the_help(capsys):
    from image2reg.runbook import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "from scratch" in capsys.readouterr().out


def test_a_stage_whose_input_stage_is_neither_configured_nor_run_is_an_error_before_anything_runs(make_project,
                                                                                                   run_cli, capsys):
    root = make_project({"00_data": RESUMABLE})
    params = root / "params" / "smoke.yml"
    params.write_text(params.read_text() + "  screen:\n    n_inner: 2\n")  # stage 02 without its input stage 01
    assert run_cli(root) == 2
    err = capsys.readouterr().err
    assert "stage 02_screen reads stage 01_images" in err and "does not configure" in err
    assert not (root / "runs").exists()


def _descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_run_inside(stage_args: list[str], root: Path, ready, timeout: float = 120) -> subprocess.Popen:
    """Start the runbook CLI (``stage_args``) in its own session, SIGTERM it once ``ready()`` holds, and check
    that no process it started (its kernel, pool workers, resource tracker) is alive 10 s later."""
    process = subprocess.Popen([sys.executable, str(root / "runbook.py"), *stage_args], cwd=root,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(ready, process, timeout=timeout)
        started = _descendants(process.pid)
        assert len(started) >= 2, "no kernel and workers to stop"
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in started), "processes of the stopped run outlive it"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process


@pytest.mark.slow  # stage 01 of the smoke world three times
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_stage_01_resumes_to_the_artifacts_of_an_uninterrupted_run(tmp_path, run_cli, cli_args):
    import shutil

    import numpy as np
    import pandas as pd

    from image2reg.images.store import open_crops

    repo = Path(__file__).resolve().parents[1]
    runs = {}
    for name in ("whole", "cut"):
        (tmp_path / name / "params").mkdir(parents=True)
        shutil.copy(repo / "params" / "smoke.yml", tmp_path / name / "params" / "smoke.yml")
        runs[name] = tmp_path / name / "runs" / "smoke"
    assert run_cli(tmp_path / "whole", "--stages", "data", "images", "--no-html", root=repo) == 0
    assert run_cli(tmp_path / "cut", "--stages", "data", "--no-html", root=repo) == 0
    stop_run_inside([*cli_args(tmp_path / "cut"), "--stages", "images", "--no-html"], repo,
                    lambda: any(runs["cut"].glob(".01_images.work/shards/*/done")))
    assert run_cli(tmp_path / "cut", "--stages", "images", "--no-html", root=repo) == 0

    whole, cut = runs["whole"] / "01_images", runs["cut"] / "01_images"
    for table in ("images", "nuclei", "nuclei_dropped"):
        a, b = (pd.read_parquet(folder / f"{table}.parquet") for folder in (whole, cut))
        for frame, root in ((a, tmp_path / "whole"), (b, tmp_path / "cut")):  # the paths differ by their root
            for column in frame.select_dtypes(include="object").columns:
                frame[column] = frame[column].astype(str).str.replace(str(root), "<root>", regex=False)
        pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(open_crops(whole)[:], open_crops(cut)[:])
    assert (whole / "summary.json").read_text() == (cut / "summary.json").read_text()


@pytest.mark.slow  # stages 00-01 of the smoke world
def test_a_runs_folder_copied_elsewhere_is_up_to_date_and_its_fields_are_found(tmp_path, run_cli, capsys):
    import shutil

    import pandas as pd

    from image2reg.cnn.datasets import RegionCutter
    from image2reg.layout import stored_path

    repo = Path(__file__).resolve().parents[1]
    first = tmp_path / "first"
    (first / "params").mkdir(parents=True)
    shutil.copy(repo / "params" / "smoke.yml", first / "params" / "smoke.yml")
    assert run_cli(first, "--stages", "data", "images", "--no-html", root=repo) == 0
    moved = tmp_path / "moved"
    shutil.copytree(first, moved, symlinks=True)
    shutil.rmtree(first)
    capsys.readouterr()

    assert run_cli(moved, "--list", root=repo) == 0
    states = capsys.readouterr().out
    assert "00_data" in states and "01_images" in states and "stale" not in states and "never run" not in states
    images_dir = moved / "runs" / "smoke" / "01_images"
    nuclei = pd.read_parquet(images_dir / "nuclei.parquet")
    assert not nuclei["image_path"].str.startswith("/").any()  # stored relative to the stage's folder
    assert all(stored_path(path, images_dir).is_file() for path in nuclei["image_path"].unique())
    field = nuclei.iloc[:1]
    cutter = RegionCutter({field["image_path"].iat[0]: str(field["Metadata_Plate"].iat[0])},
                          {str(field["Metadata_Plate"].iat[0]): None}, size=32, base=images_dir)
    assert tuple(cutter.cut(field).shape) == (1, 1, 32, 32)


@pytest.mark.slow  # stages 00-01 of the smoke world through the runbook
def test_a_truncated_field_is_named_in_the_console_and_skipped(tmp_path, run_cli, capsys):

    import pandas as pd

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "params").mkdir()
    params = (repo / "params" / "smoke.yml").read_text()
    params = params.replace("    crop_size: 64\n", "    crop_size: 64\n    max_bad_fraction: 0.1\n")  # 1 of 18 bad
    (tmp_path / "params" / "smoke.yml").write_text(params)
    assert run_cli(tmp_path, "--stages", "data", "--no-html", root=repo) == 0
    victim = sorted((tmp_path / "runs" / "smoke" / "raw" / "images").rglob("*.tif"))[3]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated, as by a full disk
    capsys.readouterr()
    assert run_cli(tmp_path, "--stages", "images", "--no-html", root=repo) == 0
    out = capsys.readouterr().out
    assert "1 of " in out and "fields skipped as bad" in out and victim.name in out
    images = pd.read_parquet(tmp_path / "runs" / "smoke" / "01_images" / "images.parquet")
    assert images.loc[images["error"] != "", "image_path"].str.endswith(victim.name).tolist() == [True]
