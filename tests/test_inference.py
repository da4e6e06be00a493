"""Stage 05's helpers: the gene universe, indexed networks and module recovery against a permutation null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image2reg.network.inference import IndexedNetwork, module_recovery
from image2reg.network.pruning import universe_edges


def edges(*pairs: tuple[str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["gene1", "gene2", "cost"])


def test_universe_is_the_largest_component_on_genes_measured_everywhere():
    ppi = edges(("A", "B", 0.1), ("B", "C", 0.2), ("C", "D", 0.3), ("E", "F", 0.4), ("X", "A", 0.5))
    # X is not expressed in single cells, F not in bulk: E is left alone, A-B-C-D is the component
    network, steps = universe_edges(ppi, [list("ABCDEF"), list("ABCDE")], targets=["A", "E", "X"])
    assert sorted(map(tuple, network[["gene1", "gene2"]].to_numpy())) == [("A", "B"), ("B", "C"), ("C", "D")]
    assert steps["n_nodes"].tolist() == [7, 4, 4]
    assert steps["n_edges"].tolist() == [5, 3, 3]
    assert steps["targets_covered"].tolist() == [3, 1, 1]


def test_indexed_network_round_trips_gene_names():
    table = edges(("B", "C", 0.2), ("A", "C", 0.1))
    network = IndexedNetwork.from_edges(table)
    assert network.genes.tolist() == ["A", "B", "C"]
    assert network.edges.tolist() == [[1, 2], [0, 2]]
    assert network.genes[network.edges].tolist() == table[["gene1", "gene2"]].to_numpy().tolist()
    assert network.indices(["C", "Z", "A"]).tolist() == [2, 0]  # unknown genes are skipped


def planted(modules: int = 4, size: int = 15, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    genes = [f"G{i:03d}" for i in range(modules * size)]
    module = pd.Series(np.repeat(np.arange(modules), size), index=genes)
    pairs = [(a, b) for i, a in enumerate(genes) for b in genes[i + 1:]
             if rng.random() < (0.4 if module[a] == module[b] else 0.01)]
    return module, pd.DataFrame(pairs, columns=["gene1", "gene2"])


def test_module_recovery_finds_planted_modules_and_not_random_ones():
    module, network = planted()
    recovery = module_recovery(module, module, network, repeats=200, seed=1)
    assert recovery.loc["nmi", "observed"] == pytest.approx(1.0)
    assert recovery.loc["ari", "observed"] == pytest.approx(1.0)
    assert recovery["p_value"].tolist() == pytest.approx([1 / 201] * 3)
    assert recovery.loc["within_module_edges", "observed"] > 0.8 > recovery.loc["within_module_edges", "null_q95"]
    # the null's expectation of the within-module share is the share of same-module pairs (about 1/4 here)
    assert recovery.loc["within_module_edges", "null_mean"] == pytest.approx(0.25, abs=0.03)
    # clusters unrelated to the modules: nothing beyond chance
    shuffled = pd.Series(np.random.default_rng(2).permutation(module.to_numpy()), index=module.index)
    unrelated = module_recovery(shuffled, module, network, repeats=200, seed=1)
    assert unrelated.loc["nmi", "p_value"] > 0.05 and unrelated.loc["ari", "p_value"] > 0.05


def test_module_recovery_is_seeded_and_ignores_genes_without_a_module():
    module, network = planted()
    clusters = module.copy()
    clusters["EXTRA"] = 0
    first = module_recovery(clusters, module, network, repeats=50, seed=3)
    assert first.equals(module_recovery(module, module, network, repeats=50, seed=3))
    with pytest.raises(ValueError, match="fewer than two"):
        module_recovery(pd.Series({"EXTRA": 0}), module, network)
