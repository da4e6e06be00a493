"""Statistics of LOTO results: permutation and paired p-values, exact intervals, hits needed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from image2reg.translation.metrics import topk_accuracy, topk_auc
from image2reg.translation.statistics import (
    accuracy_interval,
    hits_needed,
    paired_p_value,
    permutation_p_value,
    power_summary,
    power_table,
    target_scores,
)


def test_permutation_p_value_formula():
    assert permutation_p_value(0.5, [0.1, 0.5, 0.9]) == pytest.approx(3 / 4)
    assert permutation_p_value(1.0, np.zeros(99)) == pytest.approx(1 / 100)
    with pytest.raises(ValueError, match="non-empty"):
        permutation_p_value(0.5, [])


def test_target_scores_add_up_to_the_top_k_accuracy_and_area():
    ranks = np.array([0, 3, 4, 9, 60])
    assert target_scores(ranks, "top5").tolist() == [1, 1, 1, 0, 0]
    assert target_scores(ranks, "auc10").tolist() == [10, 7, 6, 1, 0]
    accuracy = topk_accuracy(ranks, 10)
    assert target_scores(ranks, "top5").mean() == pytest.approx(accuracy[4])
    assert target_scores(ranks, "auc10").mean() / 10 == pytest.approx(topk_auc(accuracy, 10))
    for bad in ("top", "auc0", "mrr5", "top-3"):
        with pytest.raises(ValueError, match="metric must be 'top<K>' or 'auc<K>'"):
            target_scores(ranks, bad)


def test_paired_p_value_on_hand_counted_sign_patterns():
    # five targets, each a hit for the method and a miss for the baseline: only 1 of the 32 patterns ties
    assert paired_p_value([0, 1, 2, 3, 4], [50, 60, 70, 80, 90], "top5") == pytest.approx(1 / 32)
    # differences +1, +1, −1: sums over the 8 patterns are 3, 1, 1, 1, −1, −1, −1, −3, so 4 reach 1
    assert paired_p_value([0, 0, 50], [50, 50, 0], "top5") == pytest.approx(0.5)
    # the same rankings: every pattern sums to 0
    assert paired_p_value([3, 7, 20], [3, 7, 20], "auc10") == 1.0
    # worse than the baseline everywhere: every pattern but the all-negative one is at least as good
    assert paired_p_value([50, 50], [0, 0], "top5") == 1.0
    # the area counts how far ahead: ranks 0 against 9 differ by 9 units of auc10 on one target
    assert paired_p_value([0, 5], [9, 5], "auc10") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same targets: 2 against 3"):
        paired_p_value([0, 1], [0, 1, 2], "top5")


def test_paired_p_value_samples_patterns_for_many_targets_deterministically():
    better = np.zeros(30, dtype=int)
    worse = np.full(30, 80)
    p = paired_p_value(better, worse, "top10", repeats=2000, seed=1)
    assert p == pytest.approx(1 / 2001)  # 2⁻³⁰: no random pattern reaches it
    method, baseline = np.array([0] * 16 + [80] * 14), np.array([80] * 16 + [0] * 14)
    first = paired_p_value(method, baseline, "top10", repeats=2000, seed=1)
    assert first == paired_p_value(method, baseline, "top10", repeats=2000, seed=1)
    # +1 sixteen times and −1 fourteen times: P(sum of 30 random signs ≥ 2) = P(Binomial(30, ½) ≥ 16) = 0.428
    assert first == pytest.approx(0.428, abs=0.03)


def _tail_at_least(hits: int, n: int, p: float) -> float:
    """P(X ≥ hits) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, h) * p**h * (1 - p) ** (n - h) for h in range(hits, n + 1))


def test_accuracy_interval_matches_the_clopper_pearson_closed_forms():
    # no hit: the upper bound solves (1 − p)^n = α/2; every target a hit: the lower bound solves p^n = α/2
    assert accuracy_interval([99] * 15, 5) == pytest.approx((0.0, 1 - 0.025 ** (1 / 15)))
    assert accuracy_interval([0] * 10, 5) == pytest.approx((0.025 ** (1 / 10), 1.0))
    low, high = accuracy_interval([0, 4] + [50] * 13, 5)  # 2 hits of 15

    assert _tail_at_least(2, 15, low) == pytest.approx(0.025, abs=1e-6)  # P(X ≥ 2 | low) = α/2
    assert 1 - _tail_at_least(3, 15, high) == pytest.approx(0.025, abs=1e-6)  # P(X ≤ 2 | high) = α/2
    assert low < 2 / 15 < high
    with pytest.raises(ValueError, match="confidence"):
        accuracy_interval([0, 1], 5, confidence=1.0)
    with pytest.raises(ValueError, match="k"):
        accuracy_interval([0, 1], 0)


def test_hits_needed_against_random_genes_and_in_the_paired_test():
    needed = hits_needed(15, 132, 5)
    # the demo's sizes: 2 hits of 15 are not enough against random genes (p ≈ 0.11), 3 are
    assert _tail_at_least(2, 15, 5 / 132) > 0.05 > _tail_at_least(3, 15, 5 / 132)
    assert needed == {"random": 3, "paired": 5}
    # the paired count agrees with paired_p_value against a baseline that misses every target
    miss = np.full(15, 100)
    for hits in range(16):
        ranks = np.where(np.arange(15) < hits, 0, 100)
        assert (paired_p_value(ranks, miss, "top5") < 0.05) == (hits >= needed["paired"])
    # a test that nothing can pass: top-5 of 4 candidates, or 3 targets in the paired test
    assert hits_needed(3, 4, 5) == {"random": None, "paired": None}
    with pytest.raises(ValueError, match="alpha"):
        hits_needed(15, 132, 5, alpha=0.0)


def test_power_table_rows_and_their_flat_summary():
    ranks = np.array([0, 4, 7, 60, 90])  # top-5: 2 hits, top-10: 3 hits of 5 targets
    table = power_table(ranks, 4, [5, 10])
    assert list(table.index) == ["top5", "top10"]
    assert table.loc["top5", ["hits", "targets"]].tolist() == [2, 5]
    assert table.loc["top10", "accuracy"] == pytest.approx(0.6)
    assert (table.loc["top5", "ci_low"], table.loc["top5", "ci_high"]) == pytest.approx(
        accuracy_interval(ranks, 5))
    assert table["needed_random"].isna().all()  # k ≥ 4 candidates: random genes always hit
    assert table.loc["top5", "needed_paired"] == 5  # 5 targets: only all five hits give p = 1/32
    summary = power_summary(table)
    assert summary["top5_hits_needed_random"] is None and summary["top10_hits_needed_paired"] == 5
    assert summary["top10_ci_high"] == pytest.approx(table.loc["top10", "ci_high"])
    json.dumps(summary)  # JSON-ready: no numpy or pandas scalars
