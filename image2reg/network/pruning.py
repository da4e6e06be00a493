"""The PPI as a graph: the gene universe and the reference's pruning scans (method §5.1).

Edge tables are those of :mod:`image2reg.data.ppi` (``gene1``, ``gene2``, ``cost``). Graph work
(components, degrees) runs on scipy sparse matrices, so a scan over a thousand cut-offs of the
182k-edge human interactome takes seconds.

- :func:`restrict_to_genes` and :func:`largest_component`: the gene universe (PPI ∩ expression)
  and its largest connected component;
- :func:`confidence_scan` / :func:`prune_confidence`: edges with ``cost < cutoff``, over a range of
  cut-offs (nodes, edges, mean degree and targets covered in the largest component);
- :func:`hub_scan` / :func:`prune_hubs`: removal of nodes whose degree reaches the ``q`` quantile,
  then the component holding the most targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def restrict_to_genes(edges: pd.DataFrame, genes: Iterable[str]) -> pd.DataFrame:
    """The edges with both ends in ``genes`` (the induced subgraph on the gene universe)."""
    keep = set(genes)
    return edges[edges["gene1"].isin(keep) & edges["gene2"].isin(keep)].reset_index(drop=True)


def largest_component(edges: pd.DataFrame, targets: Sequence[str] | None = None) -> pd.DataFrame:
    """The edges of the largest connected component, or of the component holding the most ``targets``.

    Ties go to the larger component, then to the component of the first gene in sorted order.
    """
    if edges.empty:
        return edges.copy()
    genes, labels = _components(edges)
    sizes = np.bincount(labels)
    if targets:
        hits = np.bincount(labels[np.flatnonzero(np.isin(genes, list(targets)))], minlength=len(sizes))
        best = int(np.lexsort((-np.arange(len(sizes)), sizes, hits))[-1])
    else:
        best = int(np.lexsort((-np.arange(len(sizes)), sizes))[-1])
    component = set(genes[labels == best])
    return edges[edges["gene1"].isin(component)].reset_index(drop=True)


def prune_confidence(edges: pd.DataFrame, cutoff: float) -> pd.DataFrame:
    """Edges with ``cost < cutoff``, then the largest connected component (method §5.1, step 3)."""
    return largest_component(edges[edges["cost"] < cutoff])


def prune_hubs(edges: pd.DataFrame, quantile: float, targets: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Remove the nodes whose degree reaches the ``quantile`` of all degrees, keep the targets' component.

    Returns the pruned edges and the removed hubs (highest degree first).
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    degrees = node_degrees(edges)
    cutoff = np.quantile(degrees.to_numpy(), quantile)
    hubs = degrees[degrees >= cutoff].sort_values(ascending=False, kind="stable").index.tolist()
    kept = edges[~edges["gene1"].isin(hubs) & ~edges["gene2"].isin(hubs)]
    return largest_component(kept, targets), hubs


def node_degrees(edges: pd.DataFrame) -> pd.Series:
    """Degree of every node, indexed by gene (sorted)."""
    return pd.concat([edges["gene1"], edges["gene2"]]).value_counts().sort_index().rename("degree")


def summarize(edges: pd.DataFrame, targets: Sequence[str] = ()) -> dict[str, float]:
    """Nodes, edges, mean degree and targets covered of an edge table."""
    genes = pd.unique(np.concatenate([edges["gene1"].to_numpy(), edges["gene2"].to_numpy()]))
    n_nodes = len(genes)
    return {"n_nodes": n_nodes, "n_edges": len(edges), "mean_degree": 2 * len(edges) / n_nodes if n_nodes else 0.0,
            "targets_covered": int(np.isin(list(targets), genes).sum()) if len(targets) else 0}


def confidence_scan(edges: pd.DataFrame, cutoffs: Sequence[float], targets: Sequence[str] = ()) -> pd.DataFrame:
    """For every cut-off, the largest component of the edges cheaper than it: its size and targets covered.

    One pass over the edges sorted by cost with a union–find, so a scan of a thousand cut-offs costs
    about as much as one: each row equals :func:`summarize` of :func:`prune_confidence` at its
    cut-off (the same tie rule: the larger component, then the one holding the first gene in
    sorted order).
    """
    order = np.argsort(edges["cost"].to_numpy(), kind="stable")
    codes, genes = pd.factorize(pd.concat([edges["gene1"], edges["gene2"]], ignore_index=True), sort=True)
    m = len(edges)
    first, second, costs = codes[:m][order], codes[m:][order], edges["cost"].to_numpy()[order]
    parent = np.arange(len(genes))
    size = np.ones(len(genes), np.int64)
    n_edges = np.zeros(len(genes), np.int64)
    hits = np.isin(np.asarray(genes), list(targets)).astype(np.int64)
    lowest = np.arange(len(genes))  # smallest gene code of each component (the tie rule)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    best, position, rows = -1, 0, []
    for cutoff in sorted(float(value) for value in cutoffs):
        while position < m and costs[position] < cutoff:
            a, b = root(first[position]), root(second[position])
            if a != b:
                if size[a] < size[b]:
                    a, b = b, a
                parent[b] = a
                size[a] += size[b]
                n_edges[a] += n_edges[b]
                hits[a] += hits[b]
                lowest[a] = min(lowest[a], lowest[b])
            n_edges[a] += 1
            if best < 0 or root(best) == a or (size[a], -lowest[a]) > (size[root(best)], -lowest[root(best)]):
                best = a
            position += 1
        top = root(best) if best >= 0 else -1
        nodes = int(size[top]) if top >= 0 else 0
        count = int(n_edges[top]) if top >= 0 else 0
        rows.append({"cutoff": cutoff, "n_nodes": nodes, "n_edges": count,
                     "mean_degree": 2 * count / nodes if nodes else 0.0,
                     "targets_covered": int(hits[top]) if top >= 0 and len(targets) else 0})
    return pd.DataFrame(rows)


def hub_scan(edges: pd.DataFrame, quantiles: Sequence[float], targets: Sequence[str] = ()) -> pd.DataFrame:
    """For every quantile, the network after hub removal: size, targets covered and hubs removed."""
    rows = []
    for quantile in quantiles:
        pruned, hubs = prune_hubs(edges, quantile, targets)
        rows.append({"quantile": float(quantile), "n_hubs": len(hubs), **summarize(pruned, targets)})
    return pd.DataFrame(rows)


def _components(edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    codes, genes = pd.factorize(pd.concat([edges["gene1"], edges["gene2"]], ignore_index=True), sort=True)
    n, m = len(genes), len(edges)
    graph = coo_matrix((np.ones(m), (codes[:m], codes[m:])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(genes), labels


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
    induced = restrict_to_genes(edges, genes)
    component = largest_component(induced)
    steps = [{"step": name, **summarize(table, targets)}
             for name, table in (("PPI", edges), ("on the expressed genes", induced),
                                 ("largest component", component))]
    return component, pd.DataFrame(steps).set_index("step")
