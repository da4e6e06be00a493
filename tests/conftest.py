"""Shared fixtures: throwaway image2reg projects (``params/`` + ``notebooks/``) and a runbook CLI caller."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from image2reg.config import load_params
from image2reg.data import synthetic
from image2reg.data.cellpainting import read_image_table
from image2reg.execute import ExecutionParams
from image2reg.images import pipeline
from image2reg.layout import RawLayout
from image2reg.runbook import main
from image2reg.stages import STAGES, Stage

REPO = Path(__file__).resolve().parents[1]
#: Real data of the Rohban and JUMP screens beside the project (``../shared/data``); absent in a user's clone.
SHARED_DATA = REPO.parent / "shared" / "data"
REAL = SHARED_DATA / "real"


def real_file(relative: str) -> Path:
    """A file under ``../shared/data/real``; the calling test is skipped when it is absent."""
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/data/real/{relative} (real screen files, not distributed with the project)")
    return path

# Every stage notebook starts with the cell papermill overwrites; ``Path`` is there for the bodies.
PARAMETERS_CELL = """\
# %% tags=["parameters"]
dataset = "smoke"
params_path = None
fold = None
runs_dir = "runs"
reports_dir = "reports"
work_dir = None

# %%
from pathlib import Path
"""


def write_notebook(root: Path, stage_id: str, body: str) -> Path:
    """Write ``notebooks/<stage_id>.py``: the parameters cell, then ``body`` (py:percent, dedented)."""
    path = root / "notebooks" / f"{stage_id}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PARAMETERS_CELL + textwrap.dedent(body))
    return path


@pytest.fixture(scope="session")
def make_project(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, str]], Path]:
    """Factory of fake projects: a copy of ``params/smoke.yml`` and the given notebooks (stage id -> body)."""

    def make(notebooks: dict[str, str]) -> Path:
        root = tmp_path_factory.mktemp("project")
        (root / "params").mkdir()
        # the fake projects have notebooks for stage 00 (and their own stages) only
        params = yaml.safe_load((REPO / "params" / "smoke.yml").read_text())
        params["stages"] = {"data": params["stages"]["data"]}
        (root / "params" / "smoke.yml").write_text(yaml.safe_dump(params, sort_keys=False))
        for stage_id, body in notebooks.items():
            write_notebook(root, stage_id, body)
        return root

    return make


def _cli_args(workdir: Path, *extra: str) -> list[str]:
    return ["--params", str(workdir / "params" / "smoke.yml"), "--runs-dir", str(workdir / "runs"),
            "--reports-dir", str(workdir / "reports"), *extra]


@pytest.fixture(scope="session")
def cli_args() -> Callable[..., list[str]]:
    """Runbook arguments that keep params, artifacts and reports inside a work folder."""
    return _cli_args


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., int]:
    """Call the runbook's ``main`` on a work folder (params, runs, reports) with notebooks from ``root``."""

    def run(workdir: Path, *extra: str, root: Path | None = None, stages: Sequence[Stage] = STAGES) -> int:
        return main(_cli_args(workdir, *extra), root=root or workdir, stages=stages)

    return run


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory: pytest.TempPathFactory) -> RawLayout:
    """The synthetic world of ``params/smoke.yml``, made once per session; tests must not modify it."""
    params = load_params(REPO / "params" / "smoke.yml")
    raw = RawLayout(tmp_path_factory.mktemp("smoke_world") / "raw")
    synthetic.synthesize_world(params.stage("data").synthetic, raw, params.seed, progress_bar=False)
    return raw


@pytest.fixture(scope="session")
def run_stage01() -> Callable[[RawLayout, Path], Path]:
    """Stage 01 with the smoke params, in-process, on a raw world; returns the output folder."""

    def run(raw: RawLayout, out: Path) -> Path:
        params = load_params(REPO / "params" / "smoke.yml").stage("images")
        params = params.model_copy(update={"execution": ExecutionParams(backend="inprocess")})
        fields = pipeline.field_inputs(read_image_table(raw), raw, supplied_masks=False)
        pipeline.preprocess_images(fields, out, params, progress_bar=False)
        return out

    return run


@pytest.fixture(scope="session")
def smoke_stage01(smoke_world, tmp_path_factory, run_stage01) -> Path:
    """Stage 01 of the smoke world, made once per session; tests must not modify it."""
    return run_stage01(smoke_world, tmp_path_factory.mktemp("smoke_images"))


@pytest.fixture(scope="session")
def two_plate_stage01(tmp_path_factory, run_stage01) -> Path:
    """Stage 01 on the smoke world laid out on 2 plates with 2 sites per well; tests must not modify it.

    The smoke world itself has one well per gene on one plate (at most 4 fields per gene, only one
    gene screenable with 2 folds); twice the fields give three screenable genes and three too small.
    """
    params = load_params(REPO / "params" / "smoke.yml")
    world = params.stage("data").synthetic
    world = world.model_copy(update={"screen": world.screen.model_copy(update={"n_plates": 2, "sites_per_well": 2})})
    raw = RawLayout(tmp_path_factory.mktemp("two_plate_world") / "raw")
    synthetic.synthesize_world(world, raw, params.seed, progress_bar=False)
    return run_stage01(raw, tmp_path_factory.mktemp("two_plate_images"))
