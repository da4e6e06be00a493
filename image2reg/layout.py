"""Where every artifact of a run lives: one place, no path strings elsewhere.

::

    runs/<dataset>/raw/                     stage 00: raw inputs (downloaded or synthesized)
    runs/<dataset>/<NN>_<stage>/[fold-k/]   artifacts of a stage (the only hand-off between stages)
    runs/<dataset>/.manifests/              what the runbook knows about each finished stage
    reports/<dataset>/<NN>_<stage>[__fold-k].ipynb (+ .html)   executed notebooks
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from image2reg.stages import Stage, stage_by_name

_UMASK = os.umask(0)
os.umask(_UMASK)


def find_project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) that holds ``params/`` and ``notebooks/``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    raise FileNotFoundError(f"no image2reg project (a folder with params/ and notebooks/) at or above {here}")


@dataclass(frozen=True)
class RawLayout:
    """Files of a dataset's raw inputs, the same for the synthetic world and the real screens."""

    root: Path

    @property
    def images(self) -> Path:
        """Fields of view, ``images/<plate>/<file name>`` (16-bit TIFF, DNA channel)."""
        return self.root / "images"

    @property
    def masks(self) -> Path:
        """Nuclear label masks named like their image, ``masks/<plate>/<file name>``, when supplied."""
        return self.root / "masks"

    @property
    def image_metadata(self) -> Path:
        """One row per field of view: ``Metadata_*`` columns (see ``image2reg.data.cellpainting``) or the
        Rohban database convention (``Image_Metadata_*``)."""
        return self.root / "metadata" / "images.csv"

    @property
    def expression(self) -> Path:
        return self.root / "expression"

    @property
    def ppi(self) -> Path:
        return self.root / "ppi"

    @property
    def genesets(self) -> Path:
        return self.root / "genesets"

    @property
    def screen_genes(self) -> Path:
        """The genes the specificity screen tests, one symbol per line (optional for real data)."""
        return self.genesets / "screen_genes.txt"

    @property
    def truth(self) -> Path:
        """Ground truth of a synthetic world (absent for real data)."""
        return self.root / "truth"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one dataset's run: artifacts under ``runs_dir``, executed notebooks under ``reports_dir``."""

    dataset: str
    runs_dir: Path = Path("runs")
    reports_dir: Path = Path("reports")

    @property
    def root(self) -> Path:
        return Path(self.runs_dir) / self.dataset

    @property
    def raw(self) -> RawLayout:
        return RawLayout(self.root / "raw")

    @property
    def reports(self) -> Path:
        return Path(self.reports_dir) / self.dataset

    def stage_dir(self, stage: Stage, fold: int | None = None) -> Path:
        """Artifact folder of a stage (the raw folder for the data stage)."""
        if not stage.derived:
            return self.raw.root
        base = self.root / stage.id
        return base if fold is None else base / f"fold-{fold}"

    def stage_dir_of(self, name: str, fold: int | None = None) -> Path:
        """Artifact folder of the stage called ``name`` (name, number or id), e.g. an input stage's."""
        stage = stage_by_name(name)
        if stage is None:
            raise KeyError(f"unknown stage '{name}'")
        return self.stage_dir(stage, fold)

    def task_name(self, stage: Stage, fold: int | None = None) -> str:
        return stage.id if fold is None else f"{stage.id}__fold-{fold}"

    def report(self, stage: Stage, fold: int | None = None) -> Path:
        return self.reports / f"{self.task_name(stage, fold)}.ipynb"

    def manifest(self, stage: Stage, fold: int | None = None) -> Path:
        return self.root / ".manifests" / f"{self.task_name(stage, fold)}.json"


def resolve_path(value: str | Path, base: str | Path) -> Path:
    """A path a user gave: ``~`` expanded, and relative to ``base`` unless absolute."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else Path(base) / path).resolve()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the previous version in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes files private; give them the usual mode
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
