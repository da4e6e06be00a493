"""The raw inputs of the gene side (stages 05–06), read and cleaned: PPI, expression, gene sets.

:func:`load_inputs` reads the PPI (:mod:`image2reg.data.ppi`), the single-cell counts (mapped to
symbols and preprocessed as the reference did, :func:`load_single_cell`), the bulk marker table and
the gene sets (:func:`read_gmt`, the MSigDB GMT format: one set per line, name, description, genes,
tab-separated) of a dataset's raw folder. What is computed from them is in :mod:`image2reg.network`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd

from image2reg.data import expression, ppi
from image2reg.data.raw import raw_input_path
from image2reg.layout import RawLayout

if TYPE_CHECKING:
    from image2reg.config import InteractomeStageParams


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Gene sets of a GMT file: name → genes (upper-cased, duplicates removed, file order kept)."""
    path = Path(path)
    sets: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 3:
            raise ValueError(f"{path}: line {number} has {len(fields)} tab-separated fields; a GMT line is "
                             f"name, description, genes")
        if fields[0] in sets:
            raise ValueError(f"{path}: line {number} repeats the gene set {fields[0]!r}")
        sets[fields[0]] = list(dict.fromkeys(gene.strip().upper() for gene in fields[2:] if gene.strip()))
    return sets



@dataclass(frozen=True)
class InteractomeInputs:
    """The raw inputs of stage 05, read and preprocessed."""

    ppi: pd.DataFrame
    single_cell: ad.AnnData
    markers: pd.DataFrame
    gene_sets: dict[str, list[str]]


def load_inputs(raw: RawLayout, source: str, params: InteractomeStageParams) -> InteractomeInputs:
    """Read the PPI, single-cell counts, bulk expression and gene sets of a dataset (method §2.4, §5.1).

    Parameters
    ----------
    raw
        The dataset's raw folder.
    source
        The data source (``synthetic``, ``rohban``, ``jump``): it names the files.
    params
        The stage's :class:`~image2reg.config.InteractomeStageParams`.
    """
    if params.ppi.format == "string":
        edges = ppi.read_string_links(raw.root / params.ppi.string_links, raw.root / params.ppi.string_info,
                                      params.ppi.string_min_score)
    else:
        edges = ppi.read_irefindex(raw_input_path(raw, source, "ppi"))
    single_cell = load_single_cell(raw, source, params)
    bulk = expression.read_ccle(raw_input_path(raw, source, "bulk_expression"),
                                raw_input_path(raw, source, "bulk_sample_info"))
    markers = expression.marker_table(bulk, params.target_line)
    return InteractomeInputs(ppi=edges, single_cell=single_cell, markers=markers,
                             gene_sets=read_gmt(raw_input_path(raw, source, "genesets")))


def load_single_cell(raw: RawLayout, source: str, params: InteractomeStageParams) -> ad.AnnData:
    """The dataset's single-cell counts, gene IDs mapped to symbols when the source needs it, preprocessed."""
    counts = expression.read_single_cell(raw_input_path(raw, source, "scrnaseq"), params.single_cell.cells_in_rows)
    ids = raw_input_path(raw, source, "gene_ids")
    if ids is not None:
        counts = expression.map_gene_ids(counts, expression.read_gene_id_table(ids))
    single = params.single_cell
    return expression.preprocess_single_cell(counts, min_genes=single.min_genes, min_cells=single.min_cells,
                                             target_sum=single.target_sum)
