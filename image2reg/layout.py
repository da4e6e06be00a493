"""Where every artifact of a run lives: one place, no path strings elsewhere.

::

    runs/<dataset>/raw/                     stage 00: raw inputs (downloaded or synthesized)
    runs/<dataset>/<NN>_<stage>/[fold-k/]   artifacts of a stage (the only hand-off between stages)
    runs/<dataset>/.manifests/              what the runbook knows about each finished stage
    reports/<dataset>/<NN>_<stage>[__fold-k].ipynb (+ .html)   executed notebooks

Every artifact file name is spelled here once: :data:`STAGE_FILES` (what each stage writes into its
folder, reached with :meth:`RunLayout.artifact` or :func:`artifact_name`), :class:`TaskFiles` (the
files of one model's task folder) and :class:`RawLayout` (the raw inputs and a synthetic world's
truth). A test keeps these names out of every other module and notebook.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from image2reg.stages import Stage, stage_by_name

_UMASK = os.umask(0)
os.umask(_UMASK)

#: What each derived stage writes into its folder: stage name → {key: file or folder name}.
STAGE_FILES: dict[str, dict[str, str]] = {
    "images": {"images": "images.parquet", "nuclei": "nuclei.parquet", "nuclei_dropped": "nuclei_dropped.parquet",
               "crops": "nuclei.zarr", "shards": "shards", "illumination": "illumination",
               "crop_scales": "crop_scales.json", "summary": "summary.json"},
    "pretrain": {"encoder": "encoder.pt", "training": "training", "probe": "probe.parquet", "summary": "summary.json"},
    "screen": {"profiles": "profiles.parquet", "models": "models", "skipped_genes": "skipped_genes.parquet",
               "screen_results": "screen_results.parquet", "specificity": "specificity.parquet",
               "impactful_genes": "impactful_genes.txt", "truth_check": "truth_check.json", "summary": "summary.json"},
    "embeddings": {"models": "models", "metrics": "metrics.parquet", "nucleus_embeddings": "nucleus_embeddings.h5ad",
                   "gene_embeddings": "gene_embeddings.h5ad", "activity": "activity.parquet",
                   "summary": "summary.json"},
    "loto": {"models": "models", "metrics": "metrics.parquet", "gene_embeddings_loto": "gene_embeddings_loto.h5ad",
             "summary": "summary.json"},
    "interactome": {"graphml": "interactome.graphml", "nodes": "nodes.parquet", "edges": "edges.parquet",
                    "beta_sweep": "beta_sweep.parquet", "enrichment": "enrichment.parquet",
                    "interactome_genes": "interactome_genes.txt", "summary": "summary.json"},
    "regulatory": {"models": "models", "metrics": "metrics.parquet", "all_genes": "all",
                   "regulatory_embeddings": "regulatory_embeddings.h5ad",
                   "regulatory_embeddings_loto": "regulatory_embeddings_loto.h5ad",
                   "regulatory_embeddings_replicates": "regulatory_embeddings_replicates.h5ad",
                   "summary": "summary.json"},
    "translation": {"ranks": "ranks.parquet", "grid": "grid.parquet", "queries": "queries",
                    "queries_work": "queries_work", "predict_held_out": "predict_held_out.parquet",
                    "summary": "summary.json"},
    "validation": {"images": "images", "screen": "screen", "models": "models",
                   "gene_embeddings": "gene_embeddings.h5ad",
                   "ranks": "ranks.parquet", "summary": "summary.json"},
}


#: Raw inputs in the project's own layout (the synthetic world, a folder screen, and the image metadata and gene
#: list of every source), relative to the raw folder; the published files of Rohban and JUMP keep their own names
#: (:data:`image2reg.data.raw.RAW_INPUTS`).
RAW_FILES: dict[str, str] = {
    "image_metadata": "metadata/images.csv", "scrnaseq": "expression/scrnaseq_counts.h5ad",
    "bulk_expression": "expression/bulk_expression.csv", "bulk_sample_info": "expression/bulk_sample_info.csv",
    "ppi": "ppi/ppi_costs.tsv", "genesets": "genesets/genesets.gmt", "screen_genes": "genesets/screen_genes.txt",
}


def artifact_name(stage: str, key: str) -> str:
    """The file (or folder) name of artifact ``key`` of ``stage``: ``("images", "nuclei")`` → ``nuclei.parquet``."""
    files = STAGE_FILES.get(stage)
    if files is None:
        raise KeyError(f"no stage '{stage}' writes artifacts; stages: {', '.join(STAGE_FILES)}")
    if key not in files:
        raise KeyError(f"stage '{stage}' has no artifact '{key}'; it has: {', '.join(files)}")
    return files[key]


class TaskFiles:
    """Names inside a task folder (one CNN, one graph autoencoder) and its training folder."""

    DONE = "done.json"  #: written last: the task is finished (its content: the task's metrics)
    METRICS = "metrics.json"
    TRAINING = "training"  #: a CNN's checkpoint folder inside the task folder
    CHECKPOINT = "checkpoint.pt"
    BEST_MODEL = "best_model.pt"
    HISTORY = "history.csv"
    EMBEDDINGS = "embeddings.h5ad"  #: a CNN task's nucleus embeddings
    GAE_EMBEDDINGS = "embeddings.npy"  #: a graph autoencoder task's gene embeddings
    GAE_HISTORY = "history.parquet"
    SHARD_DONE = "done"  #: marks a finished shard of stage 01
    SHARD_CROPS = "crops.npy"
    PRETRAIN_NUCLEI = "nuclei.npy"  #: the rows of the crop array a self-supervised pretraining draws from


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

    def file(self, key: str) -> Path:
        """The raw input ``key`` of :data:`RAW_FILES` (the project's own layout)."""
        if key not in RAW_FILES:
            raise KeyError(f"no raw input '{key}' in the project's layout; known: {', '.join(RAW_FILES)}")
        return self.root / RAW_FILES[key]

    @property
    def image_metadata(self) -> Path:
        """One row per field of view: ``Metadata_*`` columns (see ``image2reg.data.cellpainting``) or the
        Rohban database convention (``Image_Metadata_*``)."""
        return self.file("image_metadata")

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
        return self.file("screen_genes")

    @property
    def truth(self) -> Path:
        """Ground truth of a synthetic world (absent for real data)."""
        return self.root / "truth"

    @property
    def truth_genes(self) -> Path:
        """The synthetic world's genes: module, effect class, impactful, program (one row per gene)."""
        return self.truth / "genes.parquet"

    @property
    def truth_ppi(self) -> Path:
        """The synthetic world's PPI edges with their kind (module, complex, noise)."""
        return self.truth / "ppi_edges.parquet"

    @property
    def truth_nuclei(self) -> Path:
        return self.truth / "nuclei.parquet"

    @property
    def truth_fields(self) -> Path:
        return self.truth / "fields.parquet"

    @property
    def world(self) -> Path:
        """The synthetic world's description (params, seed, generator version)."""
        return self.truth / "world.json"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one dataset's run: artifacts under ``runs_dir``, executed notebooks under ``reports_dir``."""

    dataset: str
    runs_dir: Path = Path("runs")
    reports_dir: Path = Path("reports")
    #: ``(stage id, fold, folder)``: the task that is running writes into ``folder`` (the runbook's work folder
    #: beside its artifact folder, swapped into place when the task completes).
    work: tuple[str, int | None, str] | None = None

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
        if self.work is not None and self.work[:2] == (stage.id, fold):
            return Path(self.work[2])
        base = self.root / stage.id
        return base if fold is None else base / f"fold-{fold}"

    def stage_dir_of(self, name: str, fold: int | None = None) -> Path:
        """Artifact folder of the stage called ``name`` (name, number or id), e.g. an input stage's."""
        stage = stage_by_name(name)
        if stage is None:
            raise KeyError(f"unknown stage '{name}'")
        return self.stage_dir(stage, fold)

    def artifact(self, stage: str, key: str, fold: int | None = None) -> Path:
        """Path of artifact ``key`` of the stage called ``stage`` (see :data:`STAGE_FILES`)."""
        return self.stage_dir_of(stage, fold) / artifact_name(stage, key)

    def task_name(self, stage: Stage, fold: int | None = None) -> str:
        return stage.id if fold is None else f"{stage.id}__fold-{fold}"

    def report(self, stage: Stage, fold: int | None = None) -> Path:
        return self.reports / f"{self.task_name(stage, fold)}.ipynb"

    def manifest(self, stage: Stage, fold: int | None = None) -> Path:
        return self.root / ".manifests" / f"{self.task_name(stage, fold)}.json"


def portable_path(path: str | Path, folder: str | Path, within: str | Path | None) -> str:
    """How an artifact in ``folder`` stores ``path``: relative to ``folder`` when the file lies inside ``within``
    (the dataset's runs folder), so a runs folder copied elsewhere keeps working; absolute otherwise (a lab's
    own image folder) or when ``within`` is None."""
    path = Path(os.path.abspath(path))
    if within is not None and path.is_relative_to(Path(os.path.abspath(within))):
        return Path(os.path.relpath(path, os.path.abspath(folder))).as_posix()
    return str(path)


def stored_path(value: str | Path, folder: str | Path) -> Path:
    """The file a path stored by an artifact in ``folder`` names (see :func:`portable_path`)."""
    value = Path(value)
    return value if value.is_absolute() else Path(os.path.normpath(Path(folder).absolute() / value))


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
    """Write ``text`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_parquet(table, target: str | Path, *, index: bool | None = None) -> Path:
    """Write a DataFrame to ``target`` as parquet, atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=index)
    return Path(target)


def write_h5ad(table, target: str | Path) -> Path:
    """Write an AnnData to ``target`` as h5ad, atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        table.write_h5ad(tmp)
    return Path(target)


def write_json(data, target: str | Path) -> Path:
    """Write JSON-able ``data`` (plain Python values, floats at full precision) indented, atomically."""
    write_text_atomic(target, json.dumps(data, indent=2) + "\n")
    return Path(target)


def write_summary(summary: dict, target: str | Path) -> Path:
    """Write a stage's ``summary.json`` (or another flat record): indented JSON with pandas' encoding of NumPy
    and pandas values (floats to 10 significant digits), atomically; returns ``target``."""
    import pandas as pd  # here: the layout is imported by params code that needs no pandas

    write_text_atomic(target, pd.Series(summary).to_json(indent=2) + "\n")
    return Path(target)
