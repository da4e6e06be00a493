"""Saving an interactome: GraphML (opens in Cytoscape) and node/edge parquet tables, written atomically."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from image2reg.layout import artifact_name, atomic_path

GRAPHML, NODES, EDGES = (artifact_name("interactome", key) for key in ("graphml", "nodes", "edges"))


def to_graph(nodes: pd.DataFrame, edges: pd.DataFrame) -> nx.Graph:
    """An undirected graph with the nodes' columns (index = gene) and the edges' extra columns as attributes.

    Every edge end must be a node; values become plain Python ``str``/``int``/``float``/``bool``
    (what GraphML stores); missing values are left out.
    """
    missing = sorted((set(edges["gene1"]) | set(edges["gene2"])) - set(nodes.index))
    if missing:
        raise ValueError(f"{len(missing)} edge ends are not nodes, e.g. {missing[:3]}")
    graph = nx.Graph()
    for gene, row in nodes.iterrows():
        graph.add_node(str(gene), **_plain(row))
    for row in edges.itertuples(index=False):
        values = row._asdict()
        graph.add_edge(str(values.pop("gene1")), str(values.pop("gene2")), **_plain(pd.Series(values)))
    return graph


def write_interactome(folder: str | Path, nodes: pd.DataFrame, edges: pd.DataFrame) -> dict[str, Path]:
    """Write ``interactome.graphml``, ``nodes.parquet`` and ``edges.parquet`` into ``folder``; returns their paths."""
    folder = Path(folder)
    graph = to_graph(nodes, edges)
    paths = {"graphml": folder / GRAPHML, "nodes": folder / NODES, "edges": folder / EDGES}
    with atomic_path(paths["graphml"]) as tmp:
        nx.write_graphml(graph, tmp)
    with atomic_path(paths["nodes"]) as tmp:
        nodes.rename_axis("gene").to_parquet(tmp)
    with atomic_path(paths["edges"]) as tmp:
        edges.reset_index(drop=True).to_parquet(tmp)
    return paths


def _plain(row: pd.Series) -> dict:
    values = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        values[str(key)] = value if isinstance(value, str | int | float | bool) else str(value)
    return values
