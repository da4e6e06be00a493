"""Transfer evaluation (stage 08): fit on training genes, rank unseen test genes among all candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image2reg.translation.loto import model_fit_predict
from image2reg.translation.metrics import topk_accuracy
from image2reg.translation.statistics import permutation_p_value
from image2reg.translation.transfer import (
    baseline_transfer_ranks,
    permutation_transfer_ranks,
    regulatory_clusters,
    restricted_test,
    transfer_predictions,
    transfer_ranks,
)


def planted(n_genes: int = 60, dim: int = 6, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regulatory embeddings and image embeddings that are an exact linear function of them."""
    rng = np.random.default_rng(seed)
    genes = [f"G{k:02d}" for k in range(n_genes)]
    regulatory = pd.DataFrame(rng.standard_normal((n_genes, dim)), index=genes)
    image = pd.DataFrame(regulatory.to_numpy() @ rng.standard_normal((dim, 10)), index=genes)
    return image, regulatory


def test_a_planted_linear_relation_ranks_every_test_gene_first():
    image, regulatory = planted()
    genes = list(regulatory.index)
    train, test = genes[:30], genes[30:]
    ranks = transfer_ranks(image, regulatory, train, test, model_fit_predict("linear", 0.0))
    assert ranks.index.tolist() == test and (ranks == 0).all()
    predicted = transfer_predictions(image, regulatory, train, test, model_fit_predict("linear", 0.0))
    np.testing.assert_allclose(predicted.to_numpy(), regulatory.loc[test].to_numpy(), atol=1e-8)


def test_the_fit_never_sees_the_test_genes():
    image, regulatory = planted()
    genes = list(regulatory.index)
    train, test = genes[:20], genes[20:]
    seen = []

    def spy(x_train, y_train, x_test):
        seen.append(y_train.copy())
        return np.zeros((len(x_test), y_train.shape[1]))

    transfer_ranks(image, regulatory, train, test, spy)
    np.testing.assert_array_equal(seen[0], regulatory.loc[train].to_numpy())


def test_mean_baselines_rank_by_distance_to_the_mean():
    regulatory = pd.DataFrame([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [-2.0, 0.0]], index=["a", "b", "c", "d"])
    # mean of all = (0.5, 0): distances a .5, b .5, c 2.5, d 2.5 → ties are pessimistic
    ranks = baseline_transfer_ranks(regulatory, ["a", "b"], ["c", "d"], "mean_all")
    assert ranks.to_dict() == {"c": 3, "d": 3}
    # mean of training genes a, c = (1.5, 0): b (.5) is nearest, then a/c (1.5), then d (3.5)
    ranks = baseline_transfer_ranks(regulatory, ["a", "c"], ["b", "d"], "train_mean")
    assert ranks.to_dict() == {"b": 0, "d": 3}
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_transfer_ranks(regulatory, ["a", "c"], ["b"], "median")


def test_shuffled_pairs_break_a_planted_relation():
    image, regulatory = planted(seed=3)
    genes = list(regulatory.index)
    train, test = genes[:30], genes[30:]
    fit_predict = model_fit_predict("ntk", 0.1)
    observed = topk_accuracy(transfer_ranks(image, regulatory, train, test, fit_predict).to_numpy(), 5)[4]
    null = permutation_transfer_ranks(image, regulatory, train, test, fit_predict, repeats=50, seed=1)
    assert null.shape == (50, len(test)) and null.min() >= 0 and null.max() < len(genes)
    again = permutation_transfer_ranks(image, regulatory, train, test, fit_predict, repeats=50, seed=1)
    np.testing.assert_array_equal(null, again)
    null_top5 = [topk_accuracy(row, 5)[4] for row in null]
    assert observed > 0.8 and permutation_p_value(observed, null_top5) < 0.05


def test_clusters_and_the_restricted_evaluation():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    genes = [f"G{k}" for k in range(30)]
    regulatory = pd.DataFrame(np.repeat(centres, 10, axis=0) + rng.normal(0, 0.1, (30, 2)), index=genes)
    clusters = regulatory_clusters(regulatory, 3, seed=0)
    assert clusters.groupby(np.arange(30) // 10).nunique().eq(1).all() and clusters.nunique() == 3
    train = ["G0", "G1", "G10"]  # two in the first cluster, one in the second, none in the third
    test = ["G2", "G11", "G20"]
    assert restricted_test(clusters, train, test, 2) == ["G2"]
    assert restricted_test(clusters, train, test, 1) == ["G2", "G11"]
    assert restricted_test(clusters, train, test, 0) == test
    with pytest.raises(ValueError, match="n_clusters"):
        regulatory_clusters(regulatory, 31, seed=0)
    with pytest.raises(KeyError, match="without a cluster: X"):
        restricted_test(clusters, train, ["X"], 1)


def test_bad_gene_lists_are_refused_by_name():
    image, regulatory = planted()
    fit_predict = model_fit_predict("ntk", 1.0)
    with pytest.raises(ValueError, match="at least two training genes"):
        transfer_ranks(image, regulatory, ["G00"], ["G01"], fit_predict)
    with pytest.raises(ValueError, match="both in training and test: G01"):
        transfer_ranks(image, regulatory, ["G00", "G01"], ["G01"], fit_predict)
    with pytest.raises(KeyError, match="without image embeddings: NOPE"):
        transfer_ranks(image, regulatory, ["G00", "G01"], ["NOPE"], fit_predict)
    with pytest.raises(ValueError, match="no test genes"):
        transfer_ranks(image, regulatory, ["G00", "G01"], [], fit_predict)


def test_transfer_comparison_scores_the_method_against_its_baselines():
    from image2reg.translation.transfer import transfer_comparison

    genes = [f"G{i}" for i in range(8)]
    ranks = pd.DataFrame({"ntk": [0] * 8, "mean of all genes": list(range(8)), "mean of training genes": [30] * 8},
                         index=genes)
    table, curves, bands = transfer_comparison(ranks, genes, "ntk", 40, None, max_k=10, auc_ks=[5, 10],
                                               random_repeats=200, seed=0)
    assert table.loc["ntk", "top5"] == 1.0 and table.loc["ntk", "score"] == pytest.approx(2.0)
    assert table.loc["random gene (expected)", "top5"] == pytest.approx(5 / 40)
    assert table.loc["ntk", "p_random_top5"] == pytest.approx(1 / 201)  # no random ranking does as well
    # exact sign flips: 8 targets differ from the training mean (2⁻⁸), 3 from the mean of all genes (2⁻³)
    assert table.loc["ntk", "p_train_mean_top5"] == pytest.approx(2 ** -8)
    assert table.loc["ntk", "p_mean_all_top5"] == pytest.approx(2 ** -3)
    assert set(curves) == {"ntk", "mean of all genes", "mean of training genes"} and list(bands) == ["random gene"]
