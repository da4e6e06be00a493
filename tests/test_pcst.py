"""PCST, edge costs and prizes of the interactome stage against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from image2reg.network.pcst import UNDEFINED_COST, node_prizes, scale_prizes, solve_pcst, spearman_edge_costs

# Path 0-1-2-3-4 plus a costly chord 0-2 and a costly edge 0-4. Prizes 10, 0, 10, 0, 1 (scaled: 1, 0, 1, 0, 0.1).
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 2], [0, 4]])
COSTS = np.array([0.3, 0.3, 0.5, 0.1, 5.0, 5.0])
PRIZES = np.array([10.0, 0.0, 10.0, 0.0, 1.0])


def test_pcst_finds_the_known_optimal_tree():
    # {0, 1, 2} through the two cheap edges: edge cost 0.6 + uncollected prize 0.1 = 0.7, the optimum
    # (a single node leaves 1.1; reaching node 4 costs 0.6 more for a prize of 0.1)
    solution = solve_pcst(EDGES, COSTS, PRIZES, beta=1.0)
    assert solution.nodes.tolist() == [0, 1, 2]
    assert solution.tree_edges.tolist() == [0, 1]
    # the augmented solution adds back the chord 0-2 among the selected nodes
    assert solution.augmented_edges.tolist() == [0, 1, 4]


def test_a_larger_beta_buys_a_larger_tree_and_a_small_one_a_single_node():
    # beta 10: node 4's prize becomes 1 > 0.6 for the path 2-3-4
    assert solve_pcst(EDGES, COSTS, PRIZES, beta=10.0).nodes.tolist() == [0, 1, 2, 3, 4]
    # beta 0.2: two prizes of 0.2 do not pay 0.6 of edges; one node, no edge
    small = solve_pcst(EDGES, COSTS, PRIZES, beta=0.2)
    assert len(small.nodes) == 1 and small.nodes[0] in (0, 2) and len(small.tree_edges) == 0


def test_pcst_refuses_bad_input():
    with pytest.raises(ValueError, match="E × 2"):
        solve_pcst(EDGES[:, :1], COSTS, PRIZES)
    with pytest.raises(ValueError, match="index the 5 prizes"):
        solve_pcst(EDGES + 1, COSTS, PRIZES)
    with pytest.raises(ValueError, match="non-negative"):
        solve_pcst(EDGES, -COSTS, PRIZES)
    with pytest.raises(ValueError, match="beta"):
        solve_pcst(EDGES, COSTS, PRIZES, beta=0)


def test_prizes_are_min_max_scaled():
    assert scale_prizes(np.array([2.0, 4.0, 6.0])).tolist() == [0.0, 0.5, 1.0]
    assert scale_prizes(np.array([3.0, 3.0])).tolist() == [0.0, 0.0]


def test_node_prizes_are_absolute_fold_changes_with_targets_at_the_maximum():
    logfc = pd.Series({"A": -3.0, "B": 1.5, "C": np.nan, "D": 0.5})
    prizes = node_prizes(logfc, targets=["D", "T"])
    assert prizes.to_dict() == {"A": 3.0, "B": 1.5, "C": 0.0, "D": 3.0, "T": 3.0}

    # the reference: the targets get the maximum of the whole universe's marker table, here of a gene
    # ("Z") that pruning removed from the network; after min-max scaling the other genes sit lower
    universe = pd.Series({"A": -3.0, "B": 1.5, "C": np.nan, "D": 0.5, "Z": 6.0})
    prizes = node_prizes(logfc, targets=["D"], universe_fold_change=universe)
    assert prizes.to_dict() == {"A": 3.0, "B": 1.5, "C": 0.0, "D": 6.0}
    assert scale_prizes(prizes.to_numpy()).tolist() == [0.5, 0.25, 0.0, 1.0]


def test_edge_costs_are_one_minus_absolute_spearman():
    rng = np.random.default_rng(0)
    expression = rng.poisson(2.0, size=(60, 6)).astype(float)  # many ties
    expression[:, 1] = expression[:, 0] * 2 + 1                  # ρ = 1 with gene 0
    expression[:, 2] = -expression[:, 0]                         # ρ = −1 with gene 0
    expression[:, 5] = 4.0                                       # constant: ρ undefined
    edges = np.array([[0, 1], [0, 2], [3, 4], [4, 0], [2, 3], [0, 5]])
    costs = spearman_edge_costs(expression, edges, chunk=4)
    expected = [1 - abs(spearmanr(expression[:, i], expression[:, j]).statistic) for i, j in edges[:5]]
    np.testing.assert_allclose(costs[:5], expected, atol=1e-12)
    assert costs[0] == pytest.approx(0.0) and costs[1] == pytest.approx(0.0)
    assert costs[5] == UNDEFINED_COST


def test_edge_costs_refuse_edges_outside_the_expression():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        spearman_edge_costs(np.ones((4, 3)), np.array([[0, 3]]))


def test_the_beta_sweep_describes_each_solution_and_selects_the_smallest_beta_covering_most_targets():
    from image2reg.execute import ExecutionParams
    from image2reg.network.pcst import beta_sweep, select_beta

    sweep, solutions = beta_sweep(EDGES, COSTS, PRIZES, [0.2, 1.0, 10.0, 20.0], targets=np.array([1, 4]),
                                  execution=ExecutionParams(backend="inprocess"))
    assert sweep["n_nodes"].tolist() == [1, 3, 5, 5]
    assert sweep["targets_covered"].tolist() == [0, 1, 2, 2]
    assert sweep.loc[1, ["n_tree_edges", "n_edges", "n_components"]].tolist() == [2, 3, 1]
    assert sweep.loc[1, "mean_degree"] == pytest.approx(2.0)  # 3 edges on 3 nodes
    assert sweep.loc[0, "n_clusters"] == 0 and sweep.loc[2, "n_clusters"] >= 1
    assert select_beta(sweep) == 10.0
    assert solutions[1.0].nodes.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="empty"):
        select_beta(sweep.iloc[:0])


def test_robustness_is_the_selection_frequency_under_cost_noise():
    from image2reg.execute import ExecutionParams
    from image2reg.network.pcst import robustness

    here = ExecutionParams(backend="inprocess")
    assert robustness(EDGES, COSTS, PRIZES, 1.0, repeats=3, noise=0.0, execution=here).tolist() == [1, 1, 1, 0, 0]
    noisy = robustness(EDGES, COSTS, PRIZES, 1.0, repeats=20, noise=0.5, seed=3, execution=here)
    assert np.array_equal(noisy, robustness(EDGES, COSTS, PRIZES, 1.0, repeats=20, noise=0.5, seed=3,
                                            execution=here))
    assert ((0 <= noisy) & (noisy <= 1)).all() and noisy[[0, 2]].min() >= noisy[[3, 4]].max()
    with pytest.raises(ValueError, match="repeats"):
        robustness(EDGES, COSTS, PRIZES, 1.0, repeats=0)
