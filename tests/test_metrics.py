"""Ranks and top-k metrics of the translation: pessimistic ties, accuracies, areas, the selection score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image2reg.translation.loto import random_ranks
from image2reg.translation.metrics import distance_ranks, random_topk, selection_score, topk_accuracy, topk_auc


def test_distance_ranks_hand_made_with_pessimistic_ties():
    candidates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])  # rows 1 and 3 are the same point
    predictions = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.9], [0.0, 0.0], [0.5, 0.0]])
    truth = np.array([1, 3, 2, 0, 0])
    # (1, 0): its twin ties → rank 1 either way; (0, .9): only row 0 is closer; (0, 0): exact; (.5, 0): rows 1
    # and 3 are at the truth's distance 0.5 and count against it
    np.testing.assert_array_equal(distance_ranks(predictions, candidates, truth), [1, 1, 1, 0, 2])
    constant = np.tile(candidates.mean(axis=0), (4, 1))
    assert (distance_ranks(constant, np.ones((4, 2)), np.arange(4)) == 3).all()  # all tie: worst rank


def test_distance_ranks_match_brute_force_with_duplicated_candidates():
    rng = np.random.default_rng(3)
    candidates = rng.normal(size=(50, 20))
    candidates[10:20] = candidates[0]  # eleven identical rows
    predictions = np.vstack([rng.normal(size=(30, 20)), candidates[:5] + 1e-3, np.tile(candidates[0], (3, 1))])
    truth = rng.integers(0, 50, len(predictions))
    truth[-3:] = [0, 15, 30]
    distances = ((predictions[:, None, :] - candidates[None, :, :]) ** 2).sum(axis=2)
    own = distances[np.arange(len(truth)), truth][:, None]
    expected = (distances <= own).sum(axis=1) - 1
    ranks = distance_ranks(predictions, candidates, truth)
    np.testing.assert_array_equal(ranks, expected)
    assert ranks[-3] == ranks[-2] == 10  # the prediction equals the duplicated point: the 10 twins come first


def test_distance_ranks_refuse_bad_input():
    with pytest.raises(ValueError, match="columns"):
        distance_ranks(np.zeros((2, 3)), np.zeros((4, 2)), [0, 1])
    with pytest.raises(ValueError, match="below the 4 candidates"):
        distance_ranks(np.zeros((2, 2)), np.zeros((4, 2)), [0, 4])
    with pytest.raises(ValueError, match="entries for 2 predictions"):
        distance_ranks(np.zeros((2, 2)), np.zeros((4, 2)), [0])
    with pytest.raises(ValueError, match="finite"):
        distance_ranks(np.full((1, 2), np.nan), np.zeros((4, 2)), [0])


def test_topk_accuracy_and_auc_on_hand_made_ranks():
    ranks = [0, 1, 3, 10]
    accuracy = topk_accuracy(ranks, max_k=5)
    np.testing.assert_allclose(accuracy, [0.25, 0.5, 0.5, 0.75, 0.75])
    assert topk_auc(accuracy, 4) == pytest.approx(0.5)
    assert topk_auc(accuracy, 1) == pytest.approx(0.25)
    assert len(topk_accuracy(ranks)) == 50 and topk_accuracy(ranks)[-1] == 1.0
    with pytest.raises(ValueError, match="exceeds"):
        topk_auc(accuracy, 6)
    with pytest.raises(ValueError, match="max_k"):
        topk_accuracy(ranks, max_k=0)
    with pytest.raises(ValueError, match="non-negative"):
        topk_accuracy([0, -1])
    with pytest.raises(ValueError, match="integers"):
        topk_accuracy([0.5, 1])


def test_selection_score_known_value():
    # acc(1..4) = .25, .5, .5, .75: AUC(2) = .375, AUC(4) = .5
    assert selection_score([0, 1, 3, 10], [2, 4]) == pytest.approx(0.875)
    assert selection_score(pd.Series([0, 0]), [20, 50]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="ks"):
        selection_score([0, 1], [])


def test_random_topk_agrees_with_simulated_random_ranks():
    n = 40
    expected = random_topk(n, 50)
    np.testing.assert_allclose(expected[:3], [1 / 40, 2 / 40, 3 / 40])
    assert (expected[39:] == 1.0).all()
    simulated = random_ranks(n, n_targets=10, repeats=2000, seed=0)
    assert simulated.shape == (2000, 10) and simulated.min() == 0 and simulated.max() == n - 1
    mean_accuracy = np.mean([topk_accuracy(row, 50) for row in simulated], axis=0)
    np.testing.assert_allclose(mean_accuracy, expected, atol=0.015)
    assert topk_auc(expected, 20) == pytest.approx(21 / 80)  # (K + 1) / (2N)


def test_rank_scores_of_a_report_row():
    from image2reg.translation.metrics import curve_scores, rank_scores

    row = rank_scores([0, 3, 12], 5, [3, 5, 20], score=True)  # auc20 is beyond max_k: left out
    assert row["top1"] == pytest.approx(1 / 3) and row["top5"] == pytest.approx(2 / 3) and "top10" not in row
    assert row["auc3"] == pytest.approx(1 / 3) and row["auc5"] == pytest.approx((3 * 1 / 3 + 2 * 2 / 3) / 5)
    assert row["score"] == pytest.approx(row["auc3"] + row["auc5"]) and "auc20" not in row
    assert curve_scores(random_topk(10, 5), [5]) == pytest.approx({"top1": 0.1, "top5": 0.5, "auc5": 0.3})
