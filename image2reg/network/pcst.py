"""Prize-collecting Steiner trees on the interactome (method §5.2): costs, prizes, one solve, the β sweep.

The interactome of the method is the prize-collecting Steiner tree (PCST) of the PPI: a tree that
collects genes with large prizes (deregulated in the cell line, or perturbed in the screen) through
cheap edges (genes whose expression is correlated across single cells). Its parts:

- :func:`spearman_edge_costs`: ``1 − |ρ|`` of the two genes' single-cell expression, for all edges at
  once (ranks are standardised per gene, so ρ of an edge is the dot product of two columns; no
  Python loop over edges);
- :func:`node_prizes`: ``|logFC|`` with the impactful targets set to the maximum;
- :func:`solve_pcst`: one unrooted, single-tree, strongly pruned solve of ``pcst_fast``
  (``pcst-fast2``, whose NumPy-2 build works; the ``pcst_fast`` 1.0.10 wheel silently returns
  nothing with NumPy 2) with the prizes min–max scaled and multiplied by β, as the reference did,
  and the *augmented* solution: every PPI edge among the selected nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pcst_fast
from scipy.stats import rankdata

from image2reg.execute import ExecutionParams, map_tasks

#: Edges whose single-cell ρ is undefined (a gene constant over the cells) cost this: no evidence.
UNDEFINED_COST = 1.0


def spearman_edge_costs(expression: np.ndarray, edges: np.ndarray, chunk: int = 20000) -> np.ndarray:
    """``1 − |Spearman ρ|`` of the expression of each edge's two genes over the cells.

    Parameters
    ----------
    expression
        Cells × genes (dense), e.g. log-normalised counts; column ``g`` is gene ``g``.
    edges
        E × 2 integer column indices of ``expression``.
    chunk
        Edges per vectorised block (bounds memory at ``chunk × cells`` floats).

    Returns
    -------
    numpy.ndarray
        E float64 costs in [0, 1]; :data:`UNDEFINED_COST` for an edge with a constant gene.
    """
    values = np.asarray(expression, dtype=np.float64)
    edges = np.asarray(edges)
    if values.ndim != 2:
        raise ValueError(f"expression must be cells × genes, got shape {values.shape}")
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must be E × 2, got shape {edges.shape}")
    if len(edges) and (edges.min() < 0 or edges.max() >= values.shape[1]):
        raise ValueError(f"edge indices must lie in [0, {values.shape[1]}) (the expression's gene columns)")
    ranks = rankdata(values, axis=0)  # average ranks of ties, as scipy.stats.spearmanr
    ranks -= ranks.mean(axis=0)
    norms = np.linalg.norm(ranks, axis=0)
    constant = norms == 0
    ranks /= np.where(constant, 1.0, norms)
    costs = np.empty(len(edges))
    for start in range(0, len(edges), chunk):
        block = edges[start:start + chunk]
        rho = np.einsum("ce,ce->e", ranks[:, block[:, 0]], ranks[:, block[:, 1]])
        costs[start:start + chunk] = 1.0 - np.clip(np.abs(rho), 0.0, 1.0)
    costs[constant[edges[:, 0]] | constant[edges[:, 1]]] = UNDEFINED_COST
    return costs


def node_prizes(log_fold_change: pd.Series, targets: Sequence[str] = (),
                universe_fold_change: pd.Series | None = None) -> pd.Series:
    """Prizes of the reference: ``|logFC|``, every target set to the largest (method §5.1).

    The largest is taken over ``universe_fold_change`` when given: the reference computes its marker
    table on the whole gene universe (FUCCI ∩ PPI ∩ CCLE, before confidence and hub pruning) and gives
    the targets that table's maximum, which may belong to a gene the pruning removed
    (``src/utils/notebooks/ppi/...``, the prize cell of the interactome notebook). Without it, the maximum
    over ``log_fold_change`` itself. Targets absent from ``log_fold_change`` are added with the maximum;
    missing fold changes count 0.
    """
    prizes = log_fold_change.abs().fillna(0.0).astype(np.float64)
    pool = prizes if universe_fold_change is None else universe_fold_change.abs().dropna().astype(np.float64)
    top = float(pool.max()) if len(pool) else 1.0
    for target in targets:
        prizes.loc[target] = top
    return prizes.rename("prize")


@dataclass(frozen=True)
class PcstSolution:
    """One PCST solve: the tree and its augmented subgraph.

    Attributes
    ----------
    beta
        Multiplier of the min–max scaled prizes.
    nodes
        Indices of the selected nodes, sorted.
    tree_edges
        Indices (rows of the edge array) of the tree's edges, sorted.
    augmented_edges
        Indices of every edge with both ends among ``nodes`` (the reference's induced subgraph).
    """

    beta: float
    nodes: np.ndarray
    tree_edges: np.ndarray
    augmented_edges: np.ndarray


def scale_prizes(prizes: np.ndarray) -> np.ndarray:
    """Min–max scaling to [0, 1] (all zeros when every prize is equal)."""
    prizes = np.asarray(prizes, dtype=np.float64)
    span = prizes.max() - prizes.min() if len(prizes) else 0.0
    return (prizes - prizes.min()) / span if span > 0 else np.zeros_like(prizes)


def solve_pcst(edges: np.ndarray, costs: np.ndarray, prizes: np.ndarray, beta: float = 1.0,
               pruning: str = "strong") -> PcstSolution:
    """Unrooted single-tree PCST with prizes ``beta × minmax(prizes)`` (method §5.2).

    Parameters
    ----------
    edges
        E × 2 node indices (0 … N−1).
    costs
        E non-negative edge costs (not scaled).
    prizes
        N non-negative node prizes (scaled here).
    beta
        The reference's only knob: larger β, larger trees.
    pruning
        ``pcst_fast``'s pruning (``"strong"`` in the reference).
    """
    edges = np.ascontiguousarray(edges, dtype=np.int64)
    costs = np.ascontiguousarray(costs, dtype=np.float64)
    prizes = np.asarray(prizes, dtype=np.float64)
    if edges.ndim != 2 or edges.shape[1] != 2 or len(costs) != len(edges):
        raise ValueError(f"edges must be E × 2 with E costs, got {edges.shape} and {costs.shape}")
    if len(edges) and (edges.min() < 0 or edges.max() >= len(prizes)):
        raise ValueError(f"edge endpoints must index the {len(prizes)} prizes")
    if np.any(costs < 0) or np.any(prizes < 0) or not np.all(np.isfinite(costs)) or not np.all(np.isfinite(prizes)):
        raise ValueError("costs and prizes must be finite and non-negative")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    nodes, tree = pcst_fast.pcst_fast(edges, np.ascontiguousarray(scale_prizes(prizes) * beta), costs, -1, 1,
                                      pruning, 0)
    nodes, tree = np.sort(np.asarray(nodes, dtype=np.int64)), np.sort(np.asarray(tree, dtype=np.int64))
    selected = np.zeros(len(prizes), bool)
    selected[nodes] = True
    augmented = np.flatnonzero(selected[edges[:, 0]] & selected[edges[:, 1]]) if len(edges) else np.zeros(0, np.int64)
    return PcstSolution(beta=float(beta), nodes=nodes, tree_edges=tree, augmented_edges=augmented)


def beta_sweep(edges: np.ndarray, costs: np.ndarray, prizes: np.ndarray, betas: Sequence[float],
               targets: np.ndarray | None = None, seed: int = 0, execution: ExecutionParams | None = None,
               progress_bar: bool = False) -> tuple[pd.DataFrame, dict[float, PcstSolution]]:
    """Solve for every β and describe each augmented solution (method §5.2); the β values run in parallel.

    Parameters
    ----------
    edges, costs, prizes
        As for :func:`solve_pcst`.
    betas
        The β values (the reference: 0.1, 0.2, … 9.9).
    targets
        Node indices of the impactful targets, counted in each solution.
    seed
        Seed of the Louvain clustering.
    execution
        Where the solves run (default: a process pool over all cores).
    progress_bar
        Show a bar over the β values.

    Returns
    -------
    table : pandas.DataFrame
        One row per β, in the order given: ``n_nodes``, ``n_tree_edges``, ``n_edges`` (augmented),
        ``mean_degree``, ``n_components``, ``n_clusters`` (Louvain on the augmented solution),
        ``targets_covered``.
    solutions : dict
        β → :class:`PcstSolution`.
    """
    targets = np.asarray([] if targets is None else targets, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.int64)
    tasks = [(edges, np.asarray(costs, dtype=np.float64), np.asarray(prizes, dtype=np.float64), float(beta),
              targets, seed) for beta in betas]
    results: list = [None] * len(tasks)
    for position, result in map_tasks(_describe_solution, tasks, execution, progress_bar=progress_bar,
                                      desc="β sweep", unit="β"):
        results[position] = result
    return pd.DataFrame([row for row, _ in results]), {solution.beta: solution for _, solution in results}


def _describe_solution(task: tuple) -> tuple[dict[str, Any], PcstSolution]:
    edges, costs, prizes, beta, targets, seed = task
    solution = solve_pcst(edges, costs, prizes, beta)
    graph = nx.Graph()
    graph.add_nodes_from(solution.nodes.tolist())
    graph.add_edges_from(edges[solution.augmented_edges].tolist())
    clusters = nx.community.louvain_communities(graph, seed=seed) if graph.number_of_edges() else []
    row = {"beta": beta, "n_nodes": len(solution.nodes), "n_tree_edges": len(solution.tree_edges),
           "n_edges": len(solution.augmented_edges),
           "mean_degree": 2 * len(solution.augmented_edges) / max(len(solution.nodes), 1),
           "n_components": nx.number_connected_components(graph) if len(solution.nodes) else 0,
           "n_clusters": len(clusters), "targets_covered": int(np.isin(targets, solution.nodes).sum())}
    return row, solution


def select_beta(sweep: pd.DataFrame) -> float:
    """The reference's rule: the smallest β whose solution covers the most targets."""
    if sweep.empty:
        raise ValueError("the sweep is empty")
    best = sweep[sweep["targets_covered"] == sweep["targets_covered"].max()]
    return float(best["beta"].min())


def robustness(edges: np.ndarray, costs: np.ndarray, prizes: np.ndarray, beta: float, *, repeats: int = 100,
               noise: float = 0.1, seed: int = 0, execution: ExecutionParams | None = None) -> np.ndarray:
    """How often each node is selected when the edge costs are perturbed (OmicsIntegrator's robustness).

    Every repeat multiplies each cost by ``1 + noise · ε`` (ε standard normal, the factor clipped at
    0) and solves again; the result is each node's selection frequency over the repeats, so nodes
    kept whatever the noise score 1.

    Parameters
    ----------
    edges, costs, prizes, beta
        As for :func:`solve_pcst`.
    repeats
        Perturbed solves.
    noise
        Relative standard deviation of the cost noise.
    seed
        Seed of the noise; the same seed gives the same frequencies.
    execution
        Where the solves run (default: a process pool over all cores).
    """
    if repeats < 1 or noise < 0:
        raise ValueError(f"repeats must be at least 1 and noise non-negative, got {repeats} and {noise}")
    costs = np.asarray(costs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    tasks = [(edges, np.clip(costs * (1 + noise * rng.standard_normal(len(costs))), 0, None), prizes, beta)
             for _ in range(repeats)]
    counts = np.zeros(len(prizes))
    for _, nodes in map_tasks(_solve_nodes, tasks, execution, progress_bar=False):
        counts[nodes] += 1
    return counts / repeats


def _solve_nodes(task: tuple) -> np.ndarray:
    edges, costs, prizes, beta = task
    return solve_pcst(edges, costs, prizes, beta).nodes
