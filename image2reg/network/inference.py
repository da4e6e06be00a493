"""Interactome inference helpers of stage 05: the PCST's integer arrays and how well a network recovers modules.

The inputs are read by :mod:`image2reg.data.network_inputs` and the gene universe is built by
:func:`image2reg.network.pruning.universe_edges`; :class:`IndexedNetwork` turns an edge table into the
integer arrays the PCST
solver takes; :func:`module_recovery` measures, on synthetic data, whether an interactome's
clusters and edges follow the hidden regulatory modules better than chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


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
