"""What a stage notebook needs in its first cells: params, paths and a seed, from a few injected values.

The runbook injects ``dataset``, ``params_path``, ``fold``, ``runs_dir`` and ``reports_dir`` with
papermill; in JupyterLab the defaults of the notebook's ``parameters`` cell apply (the dataset's
params file and the project's ``runs/``), so a user can step through any stage by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from image2reg.config import RunParams, StrictModel, load_params, params_path_for
from image2reg.layout import RunLayout, find_project_root
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
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    return StageContext(stage=found, params=params, layout=layout, fold=fold)
