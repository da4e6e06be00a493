"""What a stage notebook needs in its first cells: params, paths and a seed, from a few injected values.

The runbook injects ``dataset``, ``params_path``, ``fold``, ``runs_dir`` and ``reports_dir`` with
papermill; in JupyterLab the defaults of the notebook's ``parameters`` cell apply (the dataset's
params file and the project's ``runs/``), so a user can step through any stage by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from image2reg.config import RunParams, StrictModel, load_params, params_path_for, resolve_pretrained
from image2reg.images.pipeline import illumination_files
from image2reg.layout import RunLayout, artifact_name, find_project_root
from image2reg.stages import Stage, stage_by_name


@dataclass(frozen=True)
class StageContext:
    """Everything a stage notebook reads: its params, where to write, and its seed."""

    stage: Stage
    params: RunParams
    layout: RunLayout
    fold: int | None

    @property
    def stage_params(self) -> StrictModel:
        return self.params.stage(self.stage.name, self.fold)

    @property
    def out_dir(self) -> Path:
        """The stage's artifact folder (created)."""
        path = self.layout.stage_dir(self.stage, self.fold)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def seed(self) -> int:
        """The params seed, offset per fold so folds draw independent randomness."""
        return self.params.seed + (0 if self.fold is None else 1000 * (self.fold + 1))


def setup_stage(
    stage: str,
    dataset: str,
    params_path: str | Path | None = None,
    fold: int | None = None,
    runs_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> StageContext:
    """Resolve a stage notebook's context; the defaults are those of an interactive session.

    Parameters
    ----------
    stage
        The stage's name (``data``), number or id.
    dataset
        The dataset; its params file is ``params/<dataset>.yml`` unless ``params_path`` is given.
    params_path, runs_dir, reports_dir
        Overrides injected by the runbook.
    work_dir
        Where the runbook has this run write its artifacts (a work folder beside the stage's folder, swapped
        into place when the run completes, so the last good outputs stay in place until then); None: the
        stage's folder itself (an interactive session).
    fold
        The fold of a per-fold stage; ``None`` for the others.
    """
    found = stage_by_name(stage)
    if found is None:
        raise KeyError(f"unknown stage '{stage}'")
    if found.per_fold and fold is None:
        raise ValueError(f"stage '{found.id}' runs per fold: set `fold` in the parameters cell")
    root = None
    if params_path is None or runs_dir is None or reports_dir is None:
        root = find_project_root()
    params = load_params(params_path or params_path_for(dataset, root))
    if params.dataset != dataset:
        raise ValueError(f"{params.source_path} is for dataset '{params.dataset}', not '{dataset}'")
    layout = RunLayout(
        dataset=dataset,
        runs_dir=Path(runs_dir) if runs_dir else root / "runs",
        reports_dir=Path(reports_dir) if reports_dir else root / "reports",
        work=None if work_dir is None or not found.derived else (found.id, fold, str(work_dir)),
    )
    params = resolve_pretrained(params, found.name, layout.artifact("pretrain", "encoder"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    pd.set_option("display.max_columns", None)  # wide tables are shown whole (the HTML reports scroll them)
    pd.set_option("display.width", 200)
    return StageContext(stage=found, params=params, layout=layout, fold=fold)


@dataclass(frozen=True)
class CnnInputs:
    """What the CNN stages after the screen (03, 04) read from the stages before them."""

    control: str
    images_dir: Path
    screen_dir: Path
    impactful: list[str]
    illumination: dict[str, str | None] | None
    truth: pd.DataFrame | None

    @property
    def profiles(self) -> Path:
        """The classical profiles of every nucleus, computed by the screen stage."""
        return self.screen_dir / artifact_name("screen", "profiles")


def impactful_genes(layout: RunLayout) -> list[str]:
    """The impactful genes the screen stage selected (its ``impactful_genes.txt``)."""
    listed = layout.artifact("screen", "impactful_genes")
    if not listed.is_file():
        raise FileNotFoundError(f"{listed} is missing: run the screen stage first")
    return listed.read_text().split()


def ground_truth(layout: RunLayout) -> pd.DataFrame | None:
    """The synthetic world's genes table (modules, programs, effects), indexed by gene; None for real data."""
    path = layout.raw.truth_genes
    return pd.read_parquet(path).set_index("gene") if path.is_file() else None


def cnn_inputs(ctx: StageContext) -> CnnInputs:
    """The control, the stage-01 and screen folders, the impactful genes, illumination files and ground truth.

    Illumination files (plate → file) are only looked up when the stage's model has a region
    branch; the ground truth (genes table, indexed by gene) only exists for the synthetic world.
    """
    layout = ctx.layout
    images_dir, screen_dir = layout.stage_dir_of("images"), layout.stage_dir_of("screen")
    impactful = impactful_genes(layout)
    illumination = None
    if "region" in ctx.stage_params.model.branches:
        illumination = illumination_files(layout.raw, images_dir, ctx.params.stage("images"))
    return CnnInputs(control=ctx.params.stage("screen").control, images_dir=images_dir, screen_dir=screen_dir,
                     impactful=impactful, illumination=illumination, truth=ground_truth(layout))
