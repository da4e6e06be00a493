"""Statistics of LOTO results: permutation and paired p-values, exact intervals of a top-k accuracy, and the
fewest hits a test can accept at a number of targets (what the targets can show)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom, binomtest

from image2reg.translation.metrics import _check_k, _check_ks, _integer_array


def permutation_p_value(observed: float, null: np.ndarray | Sequence[float]) -> float:
    """One-sided p-value of a higher-is-better statistic: ``(1 + #(null ≥ observed)) / (1 + len(null))``."""
    null = np.asarray(null, dtype=np.float64).reshape(-1)
    if null.size == 0 or not np.isfinite(null).all():
        raise ValueError("null must be a non-empty array of finite values")
    if not np.isfinite(observed):
        raise ValueError(f"observed must be finite, got {observed}")
    return float((1 + np.count_nonzero(null >= observed)) / (1 + null.size))


#: Targets up to which :func:`paired_p_value` enumerates every sign pattern (2¹⁶ = 65,536 patterns).
EXACT_PAIRED_TARGETS = 16


def target_scores(ranks: np.ndarray | pd.Series | Sequence[int], metric: str) -> np.ndarray:
    """Each target's part of a score, as integers: ``top<K>``: 1 if its rank is below K, else 0;
    ``auc<K>``: ``max(0, K − rank)``, K times its share of the area under the top-k curve up to K (the
    mean over targets, divided by K, is :func:`topk_auc`)."""
    ranks = _integer_array(ranks, "ranks", 1)
    kind, k = _metric(metric)
    return (ranks < k).astype(np.int64) if kind == "top" else np.maximum(k - ranks, 0).astype(np.int64)


def _metric(metric: str) -> tuple[str, int]:
    kind, digits = metric[:3], metric[3:]
    if kind not in ("top", "auc") or not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"metric must be 'top<K>' or 'auc<K>' with K ≥ 1, got {metric!r}")
    return kind, int(digits)


def paired_p_value(ranks: np.ndarray | pd.Series | Sequence[int], baseline: np.ndarray | pd.Series | Sequence[int],
                   metric: str, *, repeats: int = 10_000, seed: int = 0) -> float:
    """One-sided paired p-value that ``ranks`` beat ``baseline`` on ``metric``, target by target.

    The two rankings are of the same targets, in the same order. Under the null hypothesis the two
    methods are exchangeable for every target, so each per-target difference of :func:`target_scores` is
    as likely to have either sign. The p-value is the share of sign patterns whose summed difference
    is at least the observed one: exact over all 2ⁿ patterns for up to :data:`EXACT_PAIRED_TARGETS`
    targets, else ``(1 + count) / (1 + repeats)`` over ``repeats`` random patterns drawn with ``seed``.
    Targets on which both methods score the same do not move it.
    """
    a, b = target_scores(ranks, metric), target_scores(baseline, metric)
    if a.shape != b.shape:
        raise ValueError(f"ranks and baseline must rank the same targets: {len(a)} against {len(b)}")
    difference = a - b
    observed = int(difference.sum())
    n = len(difference)
    if n <= EXACT_PAIRED_TARGETS:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        return float(np.count_nonzero(signs @ difference >= observed) / 2**n)
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    signs = np.random.default_rng(seed).choice(np.array([-1, 1]), size=(repeats, n))
    return float((1 + np.count_nonzero(signs @ difference >= observed)) / (1 + repeats))


def accuracy_interval(ranks: np.ndarray | pd.Series | Sequence[int], k: int,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) confidence interval of the top-``k`` accuracy of ``ranks``.

    The hits are a binomial count over the targets, so with few targets the interval is wide: 2 hits of 15
    give 0.017–0.405 at 95 %.
    """
    ranks = _integer_array(ranks, "ranks", 1)
    k = _check_k(k, "k")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    interval = binomtest(int(np.count_nonzero(ranks < k)), len(ranks)).proportion_ci(confidence, method="exact")
    return float(interval.low), float(interval.high)


def hits_needed(n_targets: int, n_candidates: int, k: int, alpha: float = 0.05) -> dict[str, int | None]:
    """The fewest top-``k`` hits among ``n_targets`` that a one-sided test at level ``alpha`` can call significant.

    ``"random"``: against random genes, each target a hit with chance ``k / n_candidates`` (the binomial
    tail that :func:`random_ranks` samples). ``"paired"``: in :func:`paired_p_value` against a baseline
    that hits none of the targets, where ``h`` hits give ``p = 2^-h``. ``None`` where even every target
    hit would not do.
    """
    n_targets, n_candidates, k = (_check_k(n_targets, "n_targets"), _check_k(n_candidates, "n_candidates"),
                                  _check_k(k, "k"))
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    hits = np.arange(n_targets + 1)
    random_p = binom.sf(hits - 1, n_targets, min(k / n_candidates, 1.0))  # P(X ≥ h)
    paired_p = 0.5 ** hits

    def first(p: np.ndarray) -> int | None:
        below = np.flatnonzero(p < alpha)
        return int(below[0]) if below.size else None

    return {"random": first(random_p), "paired": first(paired_p)}


def power_table(ranks: np.ndarray | pd.Series | Sequence[int], n_candidates: int, ks: Sequence[int] = (5, 10), *,
                confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """What a set of targets can show, one row per ``top<K>``: ``hits``, ``targets``, ``accuracy``, the
    :func:`accuracy_interval` (``ci_low``, ``ci_high``) and the :func:`hits_needed` at ``alpha``
    (``needed_random``, ``needed_paired``; nullable integers, missing where no count would do)."""
    ranks = _integer_array(ranks, "ranks", 1)
    rows = {}
    for k in _check_ks(ks):
        hits = int(np.count_nonzero(ranks < k))
        low, high = accuracy_interval(ranks, k, confidence)
        needed = hits_needed(len(ranks), n_candidates, k, alpha)
        rows[f"top{k}"] = {"hits": hits, "targets": len(ranks), "accuracy": hits / len(ranks), "ci_low": low,
                           "ci_high": high, "needed_random": needed["random"], "needed_paired": needed["paired"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.astype({"needed_random": "Int64", "needed_paired": "Int64"})


def power_summary(table: pd.DataFrame) -> dict[str, float | int | None]:
    """The rows of :func:`power_table` as flat JSON-ready keys: ``top5_ci_low``, ``top5_hits_needed_random``, …"""
    summary: dict[str, float | int | None] = {}
    for metric, row in table.iterrows():
        summary.update({f"{metric}_ci_low": float(row["ci_low"]), f"{metric}_ci_high": float(row["ci_high"])})
        for against in ("random", "paired"):
            value = row[f"needed_{against}"]
            summary[f"{metric}_hits_needed_{against}"] = None if pd.isna(value) else int(value)
    return summary
