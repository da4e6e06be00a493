"""Gene-set enrichment of a gene list (e.g. the interactome's nodes) with the hypergeometric test.

:func:`enrichment` asks, for every set, whether the list holds more of its genes than a
random draw of the same size from the universe would (one-sided hypergeometric test, Benjamini–
Hochberg FDR over the sets tested). Only genes of the universe count, in the list and in the sets.
Gene sets are read by :func:`image2reg.data.network_inputs.read_gmt`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats


def enrichment(genes: Iterable[str], gene_sets: dict[str, list[str]], universe: Iterable[str],
               min_size: int = 1) -> pd.DataFrame:
    """Over-representation of every gene set in ``genes`` against ``universe``.

    Parameters
    ----------
    genes
        The list tested (genes outside the universe are ignored).
    gene_sets
        Name → genes, e.g. from :func:`read_gmt`.
    universe
        All genes that could have been in the list (e.g. the PPI's genes).
    min_size
        Sets with fewer genes in the universe are not tested.

    Returns
    -------
    pandas.DataFrame
        One row per tested set, indexed by name, from the smallest p-value: ``set_size`` (in the
        universe), ``overlap``, ``expected`` (``set_size · list size / universe size``),
        ``p_value``, ``fdr`` and ``genes`` (the overlap, comma-separated).
    """
    universe = {gene.upper() for gene in universe}
    listed = {gene.upper() for gene in genes} & universe
    if not universe:
        raise ValueError("the universe is empty")
    rows = []
    for name, members in gene_sets.items():
        inside = [gene for gene in members if gene in universe]
        if len(inside) < min_size:
            continue
        hits = [gene for gene in inside if gene in listed]
        rows.append({"gene_set": name, "set_size": len(inside), "overlap": len(hits),
                     "expected": len(inside) * len(listed) / len(universe),
                     "p_value": float(stats.hypergeom.sf(len(hits) - 1, len(universe), len(inside), len(listed))),
                     "genes": ",".join(sorted(hits))})
    table = pd.DataFrame(rows, columns=["gene_set", "set_size", "overlap", "expected", "p_value", "genes"])
    table["fdr"] = stats.false_discovery_control(table["p_value"].to_numpy()) if len(table) else np.zeros(0)
    table = table.sort_values(["p_value", "gene_set"], kind="stable").set_index("gene_set")
    return table[["set_size", "overlap", "expected", "p_value", "fdr", "genes"]]
