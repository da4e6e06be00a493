"""The raw inputs each dataset needs, and a check that says precisely what is missing.

The same logical inputs exist for every dataset (images + metadata, single-cell and bulk expression,
an interactome, gene sets, the screened gene list); only file names and sources differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from image2reg.data.cellpainting import ImageTableError, read_image_table
from image2reg.layout import RAW_FILES, RawLayout


@dataclass(frozen=True)
class RawInput:
    key: str
    path: str  # relative to the raw folder
    what: str
    source: str

    @property
    def needed_by(self) -> tuple[str, ...]:
        """The stages that read this input: it is required only when one of them is configured."""
        return _NEEDED_BY.get(self.key, ("images",))


_NEEDED_BY = {
    "image_metadata": ("images",),
    "scrnaseq": ("interactome",), "gene_ids": ("interactome",), "bulk_expression": ("interactome",),
    "bulk_sample_info": ("interactome",), "ppi": ("interactome",),
    "genesets": ("regulatory",),
    "screen_genes": ("screen",),
}


_COMMON_OMICS = (
    RawInput("scrnaseq", "expression/GSE146773_Counts.csv.gz", "FUCCI U2OS single-cell counts (cells × Ensembl genes)",
             "GEO GSE146773 (Mahdessian et al. 2021), file GSE146773_Counts.csv.gz"),
    RawInput("gene_ids", "expression/hgnc_complete_set.txt",
             "Ensembl gene IDs → HGNC symbols (columns ensembl_gene_id, symbol) for the single-cell counts",
             "HGNC complete set, https://www.genenames.org/download/statistics-and-files/ (hgnc_complete_set.txt)"),
    RawInput("bulk_expression", "expression/CCLE_expression.csv", "bulk log2(TPM+1) over cell lines",
             "DepMap 21Q2, CCLE_expression.csv"),
    RawInput("bulk_sample_info", "expression/sample_info.csv", "cell-line annotation (stripped_cell_line_name)",
             "DepMap 21Q2, sample_info.csv"),
    RawInput("ppi", "ppi/iRefIndex_v14_MIScore_interactome_C9.costs.txt",
             "protein–protein interactions with costs (protein1, protein2, cost)",
             "OmicsIntegrator2 example/OI2_pipeline_data (fraenkel-lab), iRefIndex v14 MIScore"),
    RawInput("genesets", "genesets/h.all.v7.4.symbols.gmt", "MSigDB Hallmark gene sets (GAE node features)",
             "MSigDB v7.4, h.all.v7.4.symbols.gmt"),
)

RAW_INPUTS: dict[str, tuple[RawInput, ...]] = {
    "synthetic": (
        RawInput("image_metadata", RAW_FILES["image_metadata"], "per-field metadata (Rohban columns)", "synthesized"),
        RawInput("scrnaseq", RAW_FILES["scrnaseq"], "single-cell counts", "synthesized"),
        RawInput("bulk_expression", RAW_FILES["bulk_expression"], "bulk expression (CCLE layout)", "synthesized"),
        RawInput("bulk_sample_info", RAW_FILES["bulk_sample_info"], "cell-line annotation", "synthesized"),
        RawInput("ppi", RAW_FILES["ppi"], "interactome with costs", "synthesized"),
        RawInput("genesets", RAW_FILES["genesets"], "gene sets", "synthesized"),
        RawInput("screen_genes", RAW_FILES["screen_genes"], "screened genes", "synthesized"),
    ),
    "folder": (
        RawInput("image_metadata", RAW_FILES["image_metadata"],
                 "the fields of view (written by stage 00 from the table)",
                 "params data.folder.metadata"),
        RawInput("scrnaseq", RAW_FILES["scrnaseq"], "single-cell counts (.h5ad or .csv)",
                 "params data.folder.single_cell"),
        RawInput("bulk_expression", RAW_FILES["bulk_expression"], "bulk expression (CCLE layout)",
                 "params data.folder.bulk_expression"),
        RawInput("bulk_sample_info", RAW_FILES["bulk_sample_info"], "cell-line annotation",
                 "params data.folder.bulk_sample_info"),
        RawInput("ppi", RAW_FILES["ppi"], "interactome with costs", "params data.folder.ppi"),
        RawInput("genesets", RAW_FILES["genesets"], "gene sets", "params data.folder.gene_sets"),
    ),
    "rohban": (
        RawInput("image_metadata", RAW_FILES["image_metadata"],
                 "per-field metadata of the Hoechst images (Image_Metadata_* columns)",
                 "Cell Painting Gallery cpg0017-rohban-pathways (or IDR idr0033 database export)"),
        *_COMMON_OMICS,
        RawInput("screen_genes", RAW_FILES["screen_genes"], "the 190 screened ORF genes, one per line",
                 "Zenodo 10.5281/zenodo.8415537, target_list/gene_target_list.txt"),
    ),
    "jump": (
        RawInput("image_metadata", RAW_FILES["image_metadata"], "per-field metadata of the DNA images (normalised)",
                 "Cell Painting Gallery cpg0016-jump source_4 + jump-cellpainting/datasets metadata"),
        *_COMMON_OMICS,
        RawInput("screen_genes", RAW_FILES["screen_genes"], "the ORF genes to use (interactome genes in JUMP)",
                 "written by the Rohban run's interactome stage"),
    ),
}


def raw_input_path(raw: RawLayout, source: str, key: str) -> Path | None:
    """Where the raw input ``key`` of a data source lies, or ``None`` when the source has no such input."""
    if source not in RAW_INPUTS:
        raise KeyError(f"unknown data source '{source}' (known: {', '.join(RAW_INPUTS)})")
    for item in RAW_INPUTS[source]:
        if item.key == key:
            return _present_form(raw.root / item.path)
    return None


def _present_form(path: Path) -> Path:
    """Single-cell counts may be an .h5ad file or a counts CSV: the form that is there."""
    if path.is_file() or not path.name.endswith(".h5ad"):
        return path
    stem = path.name.removesuffix(".h5ad")
    return next((p for p in (path.with_name(stem + ".csv"), path.with_name(stem + ".csv.gz")) if p.is_file()), path)


class MissingRawInputsError(FileNotFoundError):
    """Raw inputs of a dataset are missing; the message lists each one with its source."""


def check_raw_inputs(raw: RawLayout, source: str, stages: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per expected raw input: key, path, present, needed, description and where to get it.

    For the image metadata, the images it names (``images/<plate>/<file>``) are checked too.

    Parameters
    ----------
    raw
        The raw folder.
    source
        The data source (``synthetic``, ``rohban``, ``jump``).
    stages
        The stages the params file configures: an input is ``needed`` when one of them reads it
        (the expression data only when the interactome stage runs, ...). None: every input is needed.
    """
    if source not in RAW_INPUTS:
        raise KeyError(f"unknown data source '{source}' (known: {', '.join(RAW_INPUTS)})")
    configured = None if stages is None else set(stages)
    rows = []
    for item in RAW_INPUTS[source]:
        path = _present_form(raw.root / item.path)
        rows.append({"key": item.key, "path": str(path), "present": path.is_file(),
                     "needed": configured is None or bool(configured & set(item.needed_by)),
                     "what": item.what, "source": item.source})
    table = pd.DataFrame(rows)
    table.loc[len(table)] = {**_check_images(raw), "needed": configured is None or "images" in configured}
    return table


def _check_images(raw: RawLayout) -> dict:
    row = {"key": "images", "path": str(raw.images), "what": "fields of view named in the metadata",
           "source": "images/<plate>/<file name>"}
    if not raw.image_metadata.is_file():
        return {**row, "present": False, "what": row["what"] + " (cannot check without the metadata)"}
    try:
        paths = [raw.root / path for path in read_image_table(raw)["Metadata_PathName"]]
    except ImageTableError as error:
        return {**row, "present": False, "what": f"unreadable image table: {error}"}
    missing = [p for p in paths if not p.is_file()]
    what = f"{len(paths) - len(missing)} of {len(paths)} fields of view present"
    if missing:
        what += f"; first missing: {missing[0]}"
    return {**row, "present": not missing, "what": what}


def raise_for_missing(table: pd.DataFrame, raw: RawLayout, source: str) -> None:
    """Raise :class:`MissingRawInputsError` listing every missing input that a configured stage needs."""
    missing = table[~table["present"] & table.get("needed", True)]
    if not missing.empty:
        lines = [f"  - {row.key}: {row.path}\n      {row.what}; from: {row.source}" for row in missing.itertuples()]
        raise MissingRawInputsError(f"{len(missing)} raw input(s) of '{source}' missing under {raw.root}:\n"
                                    + "\n".join(lines))

