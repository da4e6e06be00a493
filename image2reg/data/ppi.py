"""Protein–protein interactions, read (method §5.1): the real formats, with errors naming the file and the row.

An interactome here is an edge table with the columns ``gene1``, ``gene2`` and ``cost`` (lower is
more confident; iRefIndex costs as distributed with OmicsIntegrator, or ``1 − score/1000`` for
STRING), one row per undirected edge, without self-loops: :func:`read_irefindex` and
:func:`read_string_links` return it. What is done with it (the gene universe, pruning scans) is in
:mod:`image2reg.network.pruning`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

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
