"""Protein–protein interactions: loaders, the gene universe, and the reference's pruning scans (method §5.1).

An interactome here is an edge table with the columns ``gene1``, ``gene2`` and ``cost`` (lower is
more confident; iRefIndex costs as distributed with OmicsIntegrator, or ``1 − score/1000`` for
STRING), one row per undirected edge, without self-loops. Graph work (components, degrees) runs on
scipy sparse matrices, so a scan over a thousand cut-offs of the 182k-edge human interactome takes
seconds.

- :func:`read_irefindex` and :func:`read_string_links`: the real formats, with errors naming the
  file and the row;
- :func:`restrict_to_genes` and :func:`largest_component`: the gene universe (PPI ∩ expression)
  and its largest connected component;
- :func:`confidence_scan` / :func:`prune_confidence`: edges with ``cost < cutoff``, over a range of
  cut-offs (nodes, edges, mean degree and targets covered in the largest component);
- :func:`hub_scan` / :func:`prune_hubs`: removal of nodes whose degree reaches the ``q`` quantile,
  then the component holding the most targets.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

COLUMNS = ["gene1", "gene2", "cost"]


def read_irefindex(path: str | Path) -> pd.DataFrame:
    """An iRefIndex costs table (``protein1``, ``protein2``, ``cost``; tab-separated) as an edge table.

    Self-loops are dropped, and an edge listed twice (in either direction) keeps its lowest cost.
    """
    path = Path(path)
    table = pd.read_csv(path, sep="\t", dtype={"protein1": str, "protein2": str})
    missing = sorted({"protein1", "protein2", "cost"} - set(table.columns))
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (expected protein1, protein2, cost)")
    table = table.rename(columns={"protein1": "gene1", "protein2": "gene2"})[COLUMNS]
    return _clean_edges(table, path)


def read_string_links(links: str | Path, info: str | Path, min_score: int = 0) -> pd.DataFrame:
    """STRING ``protein.links`` (``protein1 protein2 combined_score``) with gene names from ``protein.info``.

    Cost = ``1 − combined_score / 1000``; links scoring below ``min_score`` are dropped. Files may be
    gzip-compressed (as downloaded).
    """
    links, info = Path(links), Path(info)
    with _open(links) as handle:
        table = pd.read_csv(handle, sep=r"\s+", dtype={"protein1": str, "protein2": str})
    missing = sorted({"protein1", "protein2", "combined_score"} - set(table.columns))
    if missing:
        raise ValueError(f"{links}: missing columns {missing} (expected protein1 protein2 combined_score)")
    with _open(info) as handle:
        names = pd.read_csv(handle, sep="\t", dtype=str)
    names = names.rename(columns={names.columns[0]: "string_protein_id"})
    if "preferred_name" not in names:
        raise ValueError(f"{info}: missing column 'preferred_name'")
    mapping = names.set_index("string_protein_id")["preferred_name"]
    table = table[table["combined_score"] >= min_score]
    unknown = ~table["protein1"].isin(mapping.index) | ~table["protein2"].isin(mapping.index)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise ValueError(f"{links}: {int(unknown.sum())} links name proteins absent from {info}, "
                         f"e.g. row {row + 2}: {table['protein1'].iat[row]} {table['protein2'].iat[row]}")
    edges = pd.DataFrame({"gene1": table["protein1"].map(mapping).to_numpy(),
                          "gene2": table["protein2"].map(mapping).to_numpy(),
                          "cost": 1.0 - table["combined_score"].to_numpy(np.float64) / 1000.0})
    return _clean_edges(edges, links)


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


def _clean_edges(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    cost = pd.to_numeric(table["cost"], errors="coerce")
    bad = cost.isna() | ~np.isfinite(cost) | (cost < 0) | table["gene1"].isna() | table["gene2"].isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}: row {row + 2} has no usable gene pair and non-negative cost: "
                         f"{table.iloc[row].to_dict()}")
    table = table.assign(cost=cost.astype(np.float64))
    table = table[table["gene1"] != table["gene2"]]
    ordered = np.sort(table[["gene1", "gene2"]].to_numpy(dtype=str), axis=1)
    table = pd.DataFrame({"gene1": ordered[:, 0], "gene2": ordered[:, 1], "cost": table["cost"].to_numpy()})
    table = table.sort_values(["gene1", "gene2", "cost"], kind="stable").drop_duplicates(["gene1", "gene2"])
    return table.reset_index(drop=True)


def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)
