"""Stage 05 in a few calls: the inputs of the interactome, the gene universe, and how well it recovers modules.

:func:`load_inputs` reads the PPI, the single-cell counts (mapped to symbols and preprocessed as the
reference did), the bulk marker table and the gene sets of a dataset's raw folder;
:func:`universe_edges` restricts the PPI to genes measured in both expression data sets and keeps its
largest component; :class:`IndexedNetwork` turns an edge table into the integer arrays the PCST
solver takes; :func:`module_recovery` measures, on synthetic data, whether an interactome's
clusters and edges follow the hidden regulatory modules better than chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from image2reg.data import expression, ppi
from image2reg.data.raw import raw_input_path
from image2reg.layout import RawLayout
from image2reg.network.enrichment import read_gmt

if TYPE_CHECKING:
    from image2reg.config import InteractomeStageParams


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


def universe_genes(edges: pd.DataFrame, gene_lists: Sequence[Sequence[str]]) -> set[str]:
    """The genes of the PPI that are in every list: the reference's gene universe (FUCCI ∩ PPI ∩ CCLE)."""
    genes = set(edges["gene1"]) | set(edges["gene2"])
    for values in gene_lists:
        genes &= set(values)
    return genes


def universe_edges(edges: pd.DataFrame, gene_lists: Sequence[Sequence[str]], targets: Sequence[str] = ()
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The PPI on the genes present in every list, then its largest component (method §5.1, step 2).

    Returns the edges and a table of the nodes, edges and ``targets`` covered after each step.
    """
    genes = universe_genes(edges, gene_lists)
    induced = ppi.restrict_to_genes(edges, genes)
    component = ppi.largest_component(induced)
    steps = [{"step": name, **ppi.summarize(table, targets)}
             for name, table in (("PPI", edges), ("on the expressed genes", induced),
                                 ("largest component", component))]
    return component, pd.DataFrame(steps).set_index("step")


@dataclass(frozen=True)
class IndexedNetwork:
    """An edge table as arrays: node ``i`` is ``genes[i]`` (sorted), edge ``e`` joins ``edges[e]``."""

    genes: np.ndarray
    edges: np.ndarray
    table: pd.DataFrame

    @classmethod
    def from_edges(cls, table: pd.DataFrame) -> IndexedNetwork:
        table = table.reset_index(drop=True)
        genes = np.unique(np.concatenate([table["gene1"].to_numpy(str), table["gene2"].to_numpy(str)]))
        index = pd.Series(np.arange(len(genes)), index=genes)
        pairs = np.column_stack([index.loc[table["gene1"]].to_numpy(), index.loc[table["gene2"]].to_numpy()])
        return cls(genes=genes, edges=pairs.astype(np.int64).reshape(-1, 2), table=table)

    def indices(self, genes: Sequence[str]) -> np.ndarray:
        """Node indices of those ``genes`` that are in the network, in the order given."""
        position = pd.Series(np.arange(len(self.genes)), index=self.genes)
        return position.reindex(list(genes)).dropna().to_numpy(np.int64)


def module_recovery(clusters: pd.Series, modules: pd.Series, edges: pd.DataFrame, *, repeats: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """How well an interactome follows known modules, each measure against a permutation null.

    Parameters
    ----------
    clusters
        Gene → cluster of the interactome (e.g. Louvain).
    modules
        Gene → true module (the synthetic ground truth); genes of ``clusters`` without a module are ignored.
    edges
        The interactome's edges (``gene1``, ``gene2``).
    repeats
        Permutations of the module labels over the interactome's genes.
    seed
        Seed of the permutations.

    Returns
    -------
    pandas.DataFrame
        Rows ``nmi`` and ``ari`` (clusters against modules) and ``within_module_edges`` (the share of
        edges joining two genes of one module); columns ``observed``, ``null_mean``, ``null_q95`` and
        ``p_value`` (one-sided, ``(1 + #null ≥ observed) / (1 + repeats)``).
    """
    genes = clusters.index.intersection(modules.index)
    if len(genes) < 2:
        raise ValueError("fewer than two interactome genes have a module")
    cluster, module = clusters.loc[genes].to_numpy(), modules.loc[genes].to_numpy()
    position = pd.Series(np.arange(len(genes)), index=genes)
    inside = edges[edges["gene1"].isin(genes) & edges["gene2"].isin(genes)]
    first, second = position.loc[inside["gene1"]].to_numpy(), position.loc[inside["gene2"]].to_numpy()

    def measures(labels: np.ndarray) -> np.ndarray:
        within = float(np.mean(labels[first] == labels[second])) if len(first) else np.nan
        return np.array([normalized_mutual_info_score(labels, cluster), adjusted_rand_score(labels, cluster),
                         within])

    observed = measures(module)
    rng = np.random.default_rng(seed)
    null = np.array([measures(rng.permutation(module)) for _ in range(repeats)])
    table = pd.DataFrame({"observed": observed, "null_mean": null.mean(axis=0),
                          "null_q95": np.quantile(null, 0.95, axis=0),
                          "p_value": (1 + (null >= observed).sum(axis=0)) / (1 + repeats)},
                         index=pd.Index(["nmi", "ari", "within_module_edges"], name="measure"))
    return table
