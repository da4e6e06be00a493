"""Ranks and top-k metrics of the translation (method §7.2): distance ranks, top-k accuracy, its area, the
grid's selection score.

Ranks are pessimistic about ties: a candidate at exactly the truth's distance counts as closer, so a
prediction that cannot tell candidates apart never looks good.

- ``topk_accuracy(k)``: the fraction of targets whose rank is below ``k`` (``k = 1 … max_k``).
- ``AUC(K)``: the plain mean of the top-k accuracies over ``k = 1 … K``. A random ranking of ``N``
  candidates scores ``(K + 1) / (2N)``, a perfect one 1 (see :func:`topk_auc` for the reference's scales).
- Selection score of a grid setting: ``Σ_K AUC(K)`` over a list of ``K`` (Rohban: 20 and 50; JUMP: 10 to
  50 by 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

_DISTANCE_BLOCK = 1 << 22  # predictions × candidates entries per block of distances

# --------------------------------------------------------------------------------------------------------------
# ranks and metrics


def _finite_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return array


def _integer_array(values: Any, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all()
                and (array == np.round(array)).all()):
            raise ValueError(f"{name} must hold integers")
    array = array.astype(np.int64)
    if (array < 0).any():
        raise ValueError(f"{name} must be non-negative")
    return array


def _check_k(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    return int(value)


def _check_ks(ks: Sequence[int]) -> list[int]:
    if isinstance(ks, str) or not isinstance(ks, Sequence | np.ndarray) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty sequence of integers ≥ 1, got {ks!r}")
    return [_check_k(k, "every K in ks") for k in ks]


def distance_ranks(predictions: np.ndarray, candidates: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The 0-based rank of each prediction's true candidate by Euclidean distance.

    Parameters
    ----------
    predictions
        m × p predicted embeddings.
    candidates
        N × p candidate embeddings (all interactome genes).
    truth
        m indices into ``candidates``: the true candidate of each prediction.

    Returns
    -------
    np.ndarray
        m integer ranks: the number of *other* candidates whose distance to the prediction is at most the
        truth's (ties count against the truth, so a constant prediction cannot look good).

    Notes
    -----
    Distances come from ``|ŷ|² + |c|² − 2 ŷ·c`` (one matrix product); candidates within that formula's
    rounding bound of the truth's distance are compared again with exact differences, so the ties are
    exact (duplicated candidate rows always tie).
    """
    predictions = _finite_matrix(predictions, "predictions")
    candidates = _finite_matrix(candidates, "candidates")
    if predictions.shape[1] != candidates.shape[1]:
        raise ValueError(f"predictions have {predictions.shape[1]} columns but candidates {candidates.shape[1]}")
    truth = _integer_array(truth, "truth", 1)
    if len(truth) != len(predictions):
        raise ValueError(f"truth has {len(truth)} entries for {len(predictions)} predictions")
    if (truth >= len(candidates)).any():
        raise ValueError(f"truth indices must be below the {len(candidates)} candidates, got {truth.max()}")
    # worst-case rounding of the expansion: a dot product of length p is off by at most ~p·eps·(|ŷ|² + |c|²)
    relative_slack = 4.0 * (candidates.shape[1] + 8) * np.finfo(np.float64).eps
    squared = np.einsum("ij,ij->i", candidates, candidates)
    ranks = np.empty(len(predictions), dtype=np.int64)
    block = max(1, _DISTANCE_BLOCK // len(candidates))
    for start in range(0, len(predictions), block):
        rows = predictions[start:start + block]
        own = truth[start:start + block]
        scale = np.einsum("ij,ij->i", rows, rows)[:, None] + squared[None, :]
        approx = scale - 2.0 * (rows @ candidates.T)
        slack = relative_slack * scale + np.finfo(np.float64).tiny
        at = np.arange(len(rows))
        low = (approx[at, own] - slack[at, own])[:, None]
        high = (approx[at, own] + slack[at, own])[:, None]
        closer = approx + slack < low  # surely strictly closer than the truth
        unsure = ~closer & (approx - slack <= high)
        unsure[at, own] = False
        counts = closer.sum(axis=1)
        for i in np.flatnonzero(unsure.any(axis=1)):
            others = np.flatnonzero(unsure[i])
            # one array, one reduction per row: identical candidate rows give identical distances
            exact = ((candidates[np.append(others, own[i])] - rows[i]) ** 2).sum(axis=1)
            counts[i] += int((exact[:-1] <= exact[-1]).sum())
        ranks[start:start + block] = counts
    return ranks


def _hit_counts(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """rows × max_k: how many ranks of each row are below k, for k = 1 … max_k."""
    return (ranks[:, :, None] < np.arange(1, max_k + 1)).sum(axis=1)


def topk_accuracy(ranks: np.ndarray | pd.Series | Sequence[int], max_k: int = 50) -> np.ndarray:
    """Top-k accuracy for k = 1 … ``max_k``: entry ``k − 1`` is the fraction of ``ranks`` below ``k``."""
    max_k = _check_k(max_k, "max_k")
    ranks = _integer_array(ranks, "ranks", 1)
    return _hit_counts(ranks[None, :], max_k)[0] / len(ranks)


def topk_auc(accuracy: np.ndarray, max_k: int) -> float:
    """Area under the top-k curve up to ``max_k``: the mean of ``accuracy[:max_k]`` (k = 1 … ``max_k``).

    This is the reference's JUMP definition (``np.sum(acc[k < max_k + 1]) / max_k``, in
    ``notebooks/jump/translation/jump_translation_prediction_final.ipynb``), on a 0–1 scale where a
    perfect ranking scores 1. The reference's Rohban notebooks summed the same ``max_k`` accuracies but
    divided by ``max_k + 1`` (their ``auc_ks`` were 21 and 51, named "20nn_auc" and "50nn_auc"), so
    their published Rohban areas are this value times ``max_k / (max_k + 1)``: the reference's 20-NN AUC
    0.161 and 50-NN AUC 0.325 are 0.169 and 0.332 here (checked: 0.161172·21·39 and 0.325289·51·39
    are whole numbers of hits over its 39 targets). Ties rank pessimistically here.
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    max_k = _check_k(max_k, "max_k")
    if accuracy.ndim != 1:
        raise ValueError(f"accuracy must be 1-D, got shape {accuracy.shape}")
    if max_k > len(accuracy):
        raise ValueError(f"max_k = {max_k} exceeds the {len(accuracy)} accuracies given")
    return float(accuracy[:max_k].mean())


def random_topk(n_candidates: int, max_k: int = 50) -> np.ndarray:
    """Expected top-k accuracy of a random ranking of ``n_candidates``: ``min(k / N, 1)`` for k = 1 … ``max_k``."""
    n_candidates = _check_k(n_candidates, "n_candidates")
    max_k = _check_k(max_k, "max_k")
    return np.minimum(np.arange(1, max_k + 1) / n_candidates, 1.0)


def selection_score(ranks: np.ndarray | pd.Series | Sequence[int], ks: Sequence[int]) -> float:
    """The grid search's criterion: ``Σ_K AUC(K)`` over ``K`` in ``ks`` (higher is better)."""
    ks = _check_ks(ks)
    accuracy = topk_accuracy(ranks, max(ks))
    return float(sum(topk_auc(accuracy, k) for k in ks))


def _score_numerators(ranks: np.ndarray, ks: list[int]) -> np.ndarray:
    """Per row of a rank matrix, an integer proportional to its selection score (for exact comparisons)."""
    counts = _hit_counts(ranks, max(ks)).cumsum(axis=1)  # Σ_{k ≤ K} hits(k)
    common = math.lcm(*ks)
    if common * len(ks) * int(counts.max(initial=0)) >= 2**62:  # e.g. ks = 1 … 50: exact Python integers
        counts = counts.astype(object)
    return sum(counts[:, k - 1] * (common // k) for k in ks)


def rank_scores(ranks: np.ndarray | pd.Series | Sequence[int], max_k: int, auc_ks: Sequence[int], *,
                score: bool = False) -> dict[str, float]:
    """The scores of a report row: top-1/5/10 accuracy and the areas up to each ``K`` of ``auc_ks`` (those up to
    ``max_k``), and with ``score`` their sum (the reference's JUMP selection score)."""
    return curve_scores(topk_accuracy(ranks, max_k), auc_ks, score=score)


def curve_scores(accuracy: np.ndarray, auc_ks: Sequence[int], *, score: bool = False) -> dict[str, float]:
    """:func:`rank_scores` of a top-k curve (``accuracy[k - 1]`` for k = 1 … max_k), e.g. a random gene's."""
    max_k = len(accuracy)
    row = {f"top{k}": float(accuracy[k - 1]) for k in (1, 5, 10) if k <= max_k}
    row.update({f"auc{k}": topk_auc(accuracy, k) for k in auc_ks if k <= max_k})
    if score:
        row["score"] = sum(row[f"auc{k}"] for k in auc_ks if k <= max_k)
    return row
