"""What the report of stage 05 computes: the tables, selections and summary behind its notebook.

In the notebook's order:

- :func:`prune_network`: the confidence and hub scans of the reference and the pruned PPI;
- :func:`pcst_inputs`: the pruned PPI as arrays with its edge costs and node prizes;
- :func:`select_solution`: the β sweep, the β kept and its PCST solution;
- :func:`interactome_tables`: the interactome's node and edge tables (Louvain clusters, robustness),
  written by :func:`save_interactome`;
- :func:`interactome_summary`: the stage's summary.

Stage 06's report is :mod:`image2reg.network.regulatory_report`. Every artifact is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from image2reg.data import expression
from image2reg.data.network_inputs import InteractomeInputs
from image2reg.execute import ExecutionParams
from image2reg.layout import artifact_name, write_text_atomic
from image2reg.network import pruning
from image2reg.network.inference import IndexedNetwork
from image2reg.network.io import write_interactome
from image2reg.network.pcst import PcstSolution, beta_sweep, node_prizes, robustness, select_beta, spearman_edge_costs


def confidence_cutoffs(step: float) -> np.ndarray:
    """The cut-offs of the confidence scan: ``step, 2·step, … 1`` (rounded to 10 decimals).

    Parameters
    ----------
    step
        Step of the scan, in (0, 1).

    Returns
    -------
    numpy.ndarray
        ``round(1 / step)`` increasing cut-offs, the last 1 when ``1 / step`` is an integer.
    """
    if not 0 < step < 1:
        raise ValueError(f"the scan step must lie in (0, 1), got {step}")
    return np.round(np.arange(1, int(round(1 / step)) + 1) * step, 10)


@dataclass(frozen=True)
class PrunedNetwork:
    """The PPI after the confidence and hub pruning of the reference, with the scans behind them.

    Attributes
    ----------
    edges
        The pruned edge table (``gene1``, ``gene2``, ``cost``).
    confidence_scan
        :func:`~image2reg.network.pruning.confidence_scan` of the network before pruning.
    hub_scan
        :func:`~image2reg.network.pruning.hub_scan` of the network after the confidence pruning.
    hubs
        The hubs removed (highest degree first; empty without hub pruning).
    summary
        :func:`~image2reg.network.pruning.summarize` of the pruned network.
    """

    edges: pd.DataFrame
    confidence_scan: pd.DataFrame
    hub_scan: pd.DataFrame
    hubs: list[str]
    summary: dict[str, float]


def prune_network(network: pd.DataFrame, targets: Sequence[str], *, scan_step: float,
                  confidence_cutoff: float | None, hub_quantiles: Sequence[float],
                  hub_quantile: float | None) -> PrunedNetwork:
    """Scan and prune the PPI as the reference did (method §5.1): confidence cut-off first, then hubs.

    Parameters
    ----------
    network
        The PPI on the gene universe (``gene1``, ``gene2``, ``cost``).
    targets
        The impactful genes (counted in the scans, kept by the hub pruning's component).
    scan_step
        Step of the confidence scan (:func:`confidence_cutoffs`).
    confidence_cutoff
        Keep the edges cheaper than this, then the largest component; ``None``: no confidence pruning.
    hub_quantiles
        Degree quantiles of the hub scan (run on the network after the confidence pruning).
    hub_quantile
        Remove the nodes whose degree reaches this quantile; ``None``: no hub pruning.

    Returns
    -------
    PrunedNetwork
        The pruned edges, both scans, the hubs removed and the pruned network's summary.
    """
    confidence = pruning.confidence_scan(network, confidence_cutoffs(scan_step), targets)
    if confidence_cutoff is not None:
        network = pruning.prune_confidence(network, confidence_cutoff)
    hub_table = pruning.hub_scan(network, hub_quantiles, targets)
    hubs: list[str] = []
    if hub_quantile is not None:
        network, hubs = pruning.prune_hubs(network, hub_quantile, targets)
    return PrunedNetwork(edges=network, confidence_scan=confidence, hub_scan=hub_table, hubs=hubs,
                         summary=pruning.summarize(network, targets))


@dataclass(frozen=True)
class PcstInputs:
    """The pruned PPI as the PCST takes it.

    Attributes
    ----------
    network
        Node order (``network.genes``), E × 2 edge indices and the edge table.
    costs
        E edge costs.
    prizes
        N node prizes, in node order.
    targets
        Node indices of the impactful genes in the network.
    """

    network: IndexedNetwork
    costs: np.ndarray
    prizes: np.ndarray
    targets: np.ndarray

    @property
    def genes(self) -> np.ndarray:
        """The network's genes, in node order (sorted)."""
        return self.network.genes


def pcst_inputs(network: pd.DataFrame, inputs: InteractomeInputs, targets: Sequence[str],
                edge_cost: str = "spearman") -> PcstInputs:
    """Edge costs and node prizes of the pruned PPI (method §5.1).

    Parameters
    ----------
    network
        The pruned edge table (``gene1``, ``gene2``, ``cost``).
    inputs
        The stage's inputs: single cells for the costs, the bulk marker table (``log_fc``) for the prizes,
        the PPI for the gene universe whose largest ``|logFC|`` the targets get.
    targets
        The impactful genes.
    edge_cost
        ``"spearman"``: ``1 − |ρ|`` over single cells (:func:`~image2reg.network.pcst.spearman_edge_costs`);
        ``"ppi"``: the PPI's own cost.

    Returns
    -------
    PcstInputs
    """
    if edge_cost not in ("spearman", "ppi"):
        raise ValueError(f"edge_cost must be 'spearman' or 'ppi', got {edge_cost!r}")
    indexed = IndexedNetwork.from_edges(network)
    genes = indexed.genes
    if edge_cost == "spearman":
        costs = spearman_edge_costs(expression.dense_expression(inputs.single_cell[:, genes]), indexed.edges)
    else:
        costs = network["cost"].to_numpy()
    gene_lists = [inputs.single_cell.var_names, inputs.markers.index]
    universe = sorted(pruning.universe_genes(inputs.ppi, gene_lists))
    in_network = set(genes)
    prizes = node_prizes(inputs.markers["log_fc"].reindex(genes), [t for t in targets if t in in_network],
                         universe_fold_change=inputs.markers["log_fc"].reindex(universe))
    return PcstInputs(network=indexed, costs=costs, prizes=prizes.reindex(genes).to_numpy(),
                      targets=indexed.indices(targets))


@dataclass(frozen=True)
class BetaSelection:
    """The β sweep, the β kept and its solution."""

    sweep: pd.DataFrame
    beta: float
    solution: PcstSolution


def select_solution(pcst: PcstInputs, betas: Sequence[float], beta: float | None = None, *, seed: int = 0,
                    execution: ExecutionParams | None = None, progress_bar: bool = False) -> BetaSelection:
    """Sweep β and keep one solution (method §5.2).

    Parameters
    ----------
    pcst
        Costs and prizes (:func:`pcst_inputs`).
    betas
        The β values of the sweep.
    beta
        The β to keep; ``None``: the smallest β covering the most targets
        (:func:`~image2reg.network.pcst.select_beta`). A β outside the sweep is solved on its own.
    seed
        Seed of the Louvain clustering of each solution.
    execution
        Where the solves run.
    progress_bar
        Show a bar over the β values.

    Returns
    -------
    BetaSelection
    """
    network = pcst.network
    sweep, solutions = beta_sweep(network.edges, pcst.costs, pcst.prizes, betas, pcst.targets, seed=seed,
                                  execution=execution, progress_bar=progress_bar)
    chosen = beta if beta is not None else select_beta(sweep)
    if chosen not in solutions:
        solutions = beta_sweep(network.edges, pcst.costs, pcst.prizes, [chosen], pcst.targets, seed=seed,
                               execution=execution)[1]
    return BetaSelection(sweep=sweep, beta=chosen, solution=solutions[chosen])


@dataclass(frozen=True)
class Interactome:
    """The interactome: a PCST solution and every PPI edge among its genes.

    Attributes
    ----------
    genes
        The selected genes, in node order.
    nodes
        Indexed by gene (``gene``): ``prize``, ``log_fc``, ``is_target``, ``cluster`` (Louvain),
        ``degree`` and, when computed, ``robustness``.
    edges
        ``gene1``, ``gene2``, ``ppi_cost``, ``cost`` (the PCST's) and ``in_tree``.
    clusters
        Gene → Louvain cluster (0: the largest), in the order of the clusters.
    n_clusters
        Number of Louvain clusters.
    """

    genes: np.ndarray
    nodes: pd.DataFrame
    edges: pd.DataFrame
    clusters: pd.Series
    n_clusters: int

    @property
    def n_tree_edges(self) -> int:
        """Edges of the Steiner tree itself."""
        return int(self.edges["in_tree"].sum())

    def coverage(self, targets: Sequence[str]) -> tuple[list[str], list[str]]:
        """The ``targets`` in the interactome and those missing from it, each sorted."""
        return sorted(set(targets) & set(self.genes)), sorted(set(targets) - set(self.genes))


def interactome_tables(pcst: PcstInputs, solution: PcstSolution, log_fold_change: pd.Series,
                       targets: Sequence[str], *, seed: int = 0, robustness_repeats: int = 0,
                       robustness_noise: float = 0.1, execution: ExecutionParams | None = None) -> Interactome:
    """The interactome's node and edge tables (method §5.2).

    Parameters
    ----------
    pcst
        The network, costs and prizes the solution was found on.
    solution
        The PCST solution kept (:func:`select_solution`).
    log_fold_change
        Gene → bulk ``log_fc`` of the screen's cell line (a column of the nodes).
    targets
        The impactful genes.
    seed
        Seed of the Louvain clustering and of the robustness noise.
    robustness_repeats
        Re-solves under edge-cost noise for the nodes' ``robustness`` (0: no such column).
    robustness_noise
        Relative standard deviation of the cost noise.
    execution
        Where the robustness solves run.

    Returns
    -------
    Interactome
        Louvain clusters are numbered from the largest (ties: by first gene).
    """
    table = pcst.network.table
    selected = pcst.genes[solution.nodes]
    edges = table.iloc[solution.augmented_edges][["gene1", "gene2"]].reset_index(drop=True)
    edges["ppi_cost"] = table["cost"].to_numpy()[solution.augmented_edges]
    edges["cost"] = pcst.costs[solution.augmented_edges]
    edges["in_tree"] = np.isin(solution.augmented_edges, solution.tree_edges)
    graph = nx.Graph()
    graph.add_nodes_from(selected)
    graph.add_edges_from(edges[["gene1", "gene2"]].itertuples(index=False))
    communities = nx.community.louvain_communities(graph, seed=seed)
    communities = sorted((sorted(c) for c in communities), key=lambda c: (-len(c), c[0]))
    clusters = pd.Series({gene: k for k, members in enumerate(communities) for gene in members})
    nodes = pd.DataFrame(index=pd.Index(selected, name="gene"))
    nodes["prize"] = pcst.prizes[solution.nodes]
    nodes["log_fc"] = log_fold_change.reindex(selected).to_numpy()
    nodes["is_target"] = np.isin(selected, targets)
    nodes["cluster"] = clusters.reindex(selected).to_numpy()
    nodes["degree"] = pd.Series(dict(graph.degree())).reindex(selected).to_numpy()
    if robustness_repeats:
        frequency = robustness(pcst.network.edges, pcst.costs, pcst.prizes, solution.beta, repeats=robustness_repeats,
                               noise=robustness_noise, seed=seed, execution=execution)
        nodes["robustness"] = frequency[solution.nodes]
    return Interactome(genes=selected, nodes=nodes, edges=edges, clusters=clusters, n_clusters=len(communities))


def save_interactome(folder: str | Path, interactome: Interactome) -> dict[str, Path]:
    """Write the interactome into stage 05's ``folder``: GraphML, node and edge tables, and the gene list.

    Returns the paths by artifact key (``graphml``, ``nodes``, ``edges``, ``interactome_genes``).
    """
    paths = write_interactome(folder, interactome.nodes, interactome.edges)
    paths["interactome_genes"] = Path(folder) / artifact_name("interactome", "interactome_genes")
    write_text_atomic(paths["interactome_genes"], "\n".join(interactome.genes) + "\n")
    return paths


def interactome_summary(interactome: Interactome, beta: float, targets: Sequence[str], hubs: Sequence[str],
                        enriched: pd.DataFrame, fdr: float, recovery: pd.DataFrame | None = None) -> dict[str, Any]:
    """Stage 05's summary: the interactome's size, β, clusters, targets, hubs, modules and gene sets.

    Parameters
    ----------
    interactome
        :func:`interactome_tables`.
    beta
        The β kept.
    targets
        The impactful genes.
    hubs
        The hubs removed by the pruning.
    enriched
        The gene-set enrichment table (column ``fdr``).
    fdr
        Sets with an FDR below this count as enriched.
    recovery
        :func:`~image2reg.network.inference.module_recovery` of the Louvain clusters (synthetic data only).

    Returns
    -------
    dict
        ``n_genes``, ``n_edges``, ``beta``, ``n_clusters``, ``targets``, ``targets_covered``,
        ``targets_missing``, ``hubs_removed``, ``module_recovery`` (with ``recovery``) and
        ``enriched_gene_sets``.
    """
    covered, missing = interactome.coverage(targets)
    summary: dict[str, Any] = {"n_genes": len(interactome.nodes), "n_edges": len(interactome.edges), "beta": beta,
                               "n_clusters": interactome.n_clusters, "targets": len(targets),
                               "targets_covered": len(covered), "targets_missing": missing,
                               "hubs_removed": list(hubs)}
    if recovery is not None:
        summary["module_recovery"] = recovery.to_dict(orient="index")
    summary["enriched_gene_sets"] = int((enriched["fdr"] < fdr).sum())
    return summary
