"""What stage 00 computes for its report: the raw inputs it takes in, the screen's inventory and the ground truth.

The stage notebook calls one of these per cell and shows what it returns: the Gallery files to fetch
(:func:`gallery_download_plan`), a folder screen taken in (:func:`take_in_folder_screen`), what the image
table holds (:func:`screen_overview`), the overlap with reference gene lists (:func:`reference_overlap`; a
reference run's lists: :func:`reference_gene_lists`) and a synthetic world's truth (:func:`read_world_truth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import pandas as pd

from image2reg.config import DownloadParams, FolderParams, ImagesStageParams, RunParams, params_relative
from image2reg.data.cellpainting import DownloadPlan, GallerySource, plan_downloads, write_image_table
from image2reg.data.folder import link_inputs, read_folder_screen
from image2reg.data.metadata import (
    check_gene_list,
    condition_counts,
    inventory,
    overlap_table,
    read_gene_list,
    read_gene_table,
    read_rohban_metadata,
)
from image2reg.data.synthetic import read_world_info
from image2reg.images.qc import outlier_fields
from image2reg.layout import RawLayout, RunLayout, resolve_path


def gallery_download_plan(source: str, fetch: DownloadParams, raw: RawLayout, base: str | Path) -> DownloadPlan:
    """The Cell Painting Gallery files a ``download`` block of the params asks for.

    Parameters
    ----------
    source
        ``rohban`` or ``jump``.
    fetch
        The ``data.download`` block: plates, genes and the number of fields to keep (unset or empty: all),
        the server, and for Rohban the reference's per-image table to plan from.
    raw
        The raw folder the files go to.
    base
        The folder relative paths of the params start from (the params file's folder).

    Returns
    -------
    DownloadPlan
        The files to fetch (see :func:`image2reg.data.cellpainting.plan_downloads`).
    """
    subset = {key: value for key, value in
              {"plates": fetch.plates, "genes": fetch.genes, "max_fields": fetch.max_fields}.items() if value}
    fields = (read_rohban_metadata(resolve_path(fetch.metadata, base))
              if source == "rohban" and fetch.metadata else None)
    return plan_downloads(source, raw, subset=subset, source=GallerySource(endpoint_url=fetch.endpoint_url),
                          fields=fields)


def take_in_folder_screen(folder: FolderParams, base: str | Path, raw: RawLayout, *,
                          folds: int) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Check a folder screen whole, then link its optional inputs into ``raw`` and write its image table.

    Parameters
    ----------
    folder
        The ``data.folder`` block.
    base
        The folder relative paths of the params start from (the params file's folder).
    raw
        The raw folder of the run.
    folds
        The run's folds (every gene needs a field per fold).

    Returns
    -------
    screen
        The normalised image table written (:func:`image2reg.data.folder.read_folder_screen`).
    links
        Input key -> the link made in ``raw``.

    Raises
    ------
    image2reg.data.folder.FolderScreenError
        Before anything is written, for a screen or an input that does not pass the checks.
    """
    screen = read_folder_screen(folder, base, folds=folds)
    links = link_inputs(folder, base, raw)
    write_image_table(screen, raw)
    return screen, links


@dataclass(frozen=True)
class ScreenOverview:
    """What an image table holds, for stage 00's report."""

    inventory: pd.DataFrame  #: :func:`image2reg.data.metadata.inventory`, indexed by ``what``
    per_condition: pd.DataFrame  #: :func:`image2reg.data.metadata.condition_counts`
    screen_genes: list[str] | None  #: the checked gene list of the screen (None: the raw folder has none)


def screen_overview(images: pd.DataFrame, raw: RawLayout, images_params: ImagesStageParams | None) -> ScreenOverview:
    """The inventory of the image table, its fields per condition, and the screen's gene list, checked.

    Parameters
    ----------
    images
        The normalised image table (:func:`image2reg.data.cellpainting.read_image_table`).
    raw
        The raw folder; its ``genesets/screen_genes.txt``, when there is one, must name conditions of ``images``.
    images_params
        The params of stage 01, whose outlier plates and wells the inventory counts (None: not counted).

    Returns
    -------
    ScreenOverview

    Raises
    ------
    image2reg.data.metadata.GeneListError
        When the gene list names a gene that is no condition of the screen, or the control.
    """
    outliers = (outlier_fields(images, images_params.qc.outlier_plates, images_params.qc.outlier_wells)
                if images_params is not None else None)
    listed = (check_gene_list(read_gene_list(raw.screen_genes), images["Metadata_Gene"], raw.screen_genes)
              if raw.screen_genes.is_file() else None)
    return ScreenOverview(inventory(images, outliers=outliers).set_index("what"), condition_counts(images), listed)


def reference_gene_lists(reference: RunLayout) -> dict[str, list[str] | str]:
    """A reference run's gene lists: its impactful genes (stage 02) and its interactome (the genes with
    regulatory embeddings, stage 06), or a note for a list that run has not written yet.

    Parameters
    ----------
    reference
        The layout of the reference run (e.g. rohban's, for a JUMP validation screen).

    Returns
    -------
    dict
        ``"<dataset> impactful (stage 02)"`` and ``"<dataset> interactome (stage 06)"`` -> the genes, or a
        note naming the missing file (as :func:`image2reg.data.metadata.overlap_table` shows it).
    """
    files = {"impactful (stage 02)": reference.artifact("screen", "impactful_genes"),
             "interactome (stage 06)": reference.artifact("regulatory", "regulatory_embeddings")}
    lists: dict[str, list[str] | str] = {}
    for name, path in files.items():
        if not path.is_file():
            lists[f"{reference.dataset} {name}"] = f"not yet written by dataset '{reference.dataset}' ({path})"
        elif path.suffix == ".txt":
            lists[f"{reference.dataset} {name}"] = path.read_text().split()
        else:
            lists[f"{reference.dataset} {name}"] = ad.read_h5ad(path, backed="r").obs_names.astype(str).tolist()
    return lists


def reference_overlap(conditions: pd.Series, params: RunParams, layout: RunLayout) -> pd.DataFrame | None:
    """How many genes of the reference gene lists the screen's conditions hold.

    The lists are those of ``data.reference_genes`` (paths relative to the params file) and, for a
    validation screen whose params name a reference dataset, that run's impactful and interactome genes
    (:func:`reference_gene_lists`).

    Parameters
    ----------
    conditions
        ``Metadata_Gene`` of the image table.
    params
        The run's params.
    layout
        The run's layout (the reference run is looked up beside it).

    Returns
    -------
    pandas.DataFrame or None
        :func:`image2reg.data.metadata.overlap_table`; None when there is no list.
    """
    lists = {name: read_gene_table(params_relative(params, path))
             for name, path in params.stage("data").reference_genes.items()}
    validation = params.stages.validation
    if validation is not None and validation.reference is not None:
        lists |= reference_gene_lists(RunLayout(validation.reference, layout.runs_dir, layout.reports_dir))
    return overlap_table(conditions, lists) if lists else None


@dataclass(frozen=True)
class WorldTruth:
    """The ground truth of a synthetic world, as stage 00 shows it."""

    info: dict  #: the world's description (params, seed, generator, summary)
    metadata: pd.DataFrame  #: the world's own per-field table (Rohban columns, ``Image_Metadata_*``)
    genes: pd.DataFrame  #: one row per gene: module, effect class and size, impactful, shifts
    ppi: pd.DataFrame  #: the interactome's edges with their kind

    def summary_table(self) -> pd.DataFrame:
        """The world's summary counts as a one-column table."""
        return pd.Series(self.info["summary"], name="synthetic world", dtype=object).to_frame()


def read_world_truth(raw: RawLayout) -> WorldTruth | None:
    """The ground truth of the synthetic world in ``raw``; None for real data (no world description).

    Parameters
    ----------
    raw
        The raw folder.

    Returns
    -------
    WorldTruth or None
    """
    info = read_world_info(raw)
    if info is None:
        return None
    return WorldTruth(info, pd.read_csv(raw.image_metadata), pd.read_parquet(raw.truth_genes),
                      pd.read_parquet(raw.truth_ppi))
