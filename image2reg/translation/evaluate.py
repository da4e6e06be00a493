"""Leave-one-target-out (LOTO) evaluation of the translation, its baselines and its grid search (method §7.2–7.4).

For every held-out target ``T`` (an impactful gene that is in both spaces), the models of ``T``'s LOTO
runs give image embeddings of all impactful genes (from the CNN that never saw ``T``) and regulatory
embeddings of all interactome genes (from ``T``'s graph autoencoder). The translation is fitted on the
other targets (sorted by name), predicts ``ŷ`` from ``T``'s image embedding, and every interactome gene
(a *candidate*) is ranked by its Euclidean distance to ``ŷ``; ``T``'s 0-based rank is its ``knn_hit``.

Metrics
-------
- ``topk_accuracy(k)``: the fraction of targets whose rank is below ``k`` (``k = 1 … max_k``).
- ``AUC(K)``: the plain mean of the top-k accuracies over ``k = 1 … K``. A random ranking of ``N``
  candidates scores ``(K + 1) / (2N)``, a perfect one 1. (The reference's code sums ``acc_k / max_k``
  with an off-by-one in its naming; the numbers here are that mean over exactly ``k = 1 … K``.)
- Selection score of a grid setting: ``Σ_K AUC(K)`` over a list of ``K`` (Rohban: 20 and 50; JUMP: 10 to
  50 by 10). Choosing a setting on the evaluated targets is optimistic; :func:`nested_selection`
  picks, for each target, the setting that is best on the *other* targets.

Ranks are pessimistic about ties: a candidate at exactly the truth's distance counts as closer, so a
prediction that cannot tell candidates apart never looks good.

:func:`grid_ranks` evaluates a whole grid of input settings (:mod:`~image2reg.translation.features`)
with the NTK model. The NTK only needs dot products, so for every target the Gram matrices of the
image embeddings, of the appended neighbours and of the Fourier encodings are computed once and
summed per setting; settings that differ only in the ridge value share one eigendecomposition
(:func:`~image2reg.translation.models.ntk_predict_many`), and settings whose augmentation is the same
(e.g. all settings without neighbours) share one fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import binom, binomtest
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from image2reg.execute import ExecutionParams, map_tasks
from image2reg.translation.features import InputSettings, augment_inputs, fourier_encoding, unit_rows
from image2reg.translation.models import make_model, ntk_predict_many

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``fit_predict(x_train, y_train, x_test) -> prediction`` (``1 × p`` or ``p``) of one LOTO split."""

SETTING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(InputSettings))
GRID_COLUMNS: tuple[str, ...] = ("reg", *SETTING_FIELDS)
"""The columns of a settings grid: the ridge value and every :class:`InputSettings` field."""

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


# --------------------------------------------------------------------------------------------------------------
# LOTO data


@dataclass(frozen=True, eq=False)
class LotoData:
    """The inputs of a LOTO evaluation.

    Attributes
    ----------
    genes
        The N candidate genes (the interactome), unique names.
    targets
        The held-out targets to evaluate (unique, at least two); each is one of ``genes`` and has an image
        table and regulatory embeddings. The training genes of a target are the other targets.
    image
        Target → mean image embeddings from that target's LOTO CNN: a genes × d table indexed by gene name
        that has a row for every target (rows of other genes are ignored).
    regulatory
        Target → N × p regulatory embeddings of that target's graph autoencoder, rows in ``genes`` order.

    Raises
    ------
    ValueError
        On construction, naming the target or gene at fault: a target missing from ``genes``, ``image``
        or ``regulatory``, an image table lacking targets or with duplicated target rows, wrong shapes,
        NaN or infinite values in the rows used.
    """

    genes: np.ndarray
    targets: list[str]
    image: dict[str, pd.DataFrame]
    regulatory: dict[str, np.ndarray]
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        genes = np.asarray(self.genes, dtype=object)
        if genes.ndim != 1 or len(genes) == 0:
            raise ValueError(f"genes must be a non-empty 1-D array of names, got shape {genes.shape}")
        duplicated = pd.Index(genes)[pd.Index(genes).duplicated()].unique().tolist()
        if duplicated:
            raise ValueError(f"duplicated genes: {duplicated[:10]}")
        if isinstance(self.targets, str):
            raise ValueError("targets must be a list of gene names, not one string")
        targets = list(self.targets)
        if len(targets) < 2:
            raise ValueError(f"at least two targets are needed (one held out, one to train on), got {targets}")
        repeated = sorted({t for t in targets if targets.count(t) > 1})
        if repeated:
            raise ValueError(f"duplicated targets: {repeated}")
        positions = {gene: i for i, gene in enumerate(genes)}
        missing = [t for t in targets if t not in positions]
        if missing:
            raise ValueError(f"targets not among the {len(genes)} candidate genes: {missing}")
        image, regulatory = dict(self.image), dict(self.regulatory)
        for target in targets:
            if target not in image:
                raise ValueError(f"no image table for target {target!r}")
            if target not in regulatory:
                raise ValueError(f"no regulatory embeddings for target {target!r}")
            table = image[target]
            if not isinstance(table, pd.DataFrame):
                raise ValueError(f"the image table of target {target!r} must be a DataFrame, got {type(table)}")
            lacking = [t for t in targets if t not in table.index]
            if lacking:
                raise ValueError(f"the image table of target {target!r} lacks targets {lacking}")
            doubled = [t for t in targets if table.index.get_indexer_for([t]).size > 1]
            if doubled:
                raise ValueError(f"the image table of target {target!r} has duplicated rows for {doubled}")
            if table.shape[1] == 0:
                raise ValueError(f"the image table of target {target!r} has no columns")
            try:
                values = table.loc[targets].to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(f"the image table of target {target!r} is not numeric: {error}") from error
            bad = [t for t, ok in zip(targets, np.isfinite(values).all(axis=1), strict=True) if not ok]
            if bad:
                raise ValueError(f"the image table of target {target!r} has NaN or infinite values for {bad}")
            embeddings = np.asarray(regulatory[target], dtype=np.float64)
            if embeddings.ndim != 2 or embeddings.shape[0] != len(genes) or embeddings.shape[1] == 0:
                raise ValueError(f"the regulatory embeddings of target {target!r} must be {len(genes)} × p "
                                 f"(one row per gene), got shape {embeddings.shape}")
            if not np.isfinite(embeddings).all():
                rows = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
                raise ValueError(f"the regulatory embeddings of target {target!r} have NaN or infinite values "
                                 f"for genes {genes[rows[:10]].tolist()}")
            regulatory[target] = embeddings
        object.__setattr__(self, "genes", genes)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "regulatory", regulatory)
        object.__setattr__(self, "_positions", positions)

    @classmethod
    def from_shared(cls, genes: Sequence[str] | np.ndarray, targets: Sequence[str], image: pd.DataFrame,
                    regulatory: np.ndarray) -> LotoData:
        """The same image table and regulatory embeddings for every target (tests, benchmarks, quick looks)."""
        return cls(np.asarray(genes, dtype=object), list(targets), {t: image for t in targets},
                   {t: regulatory for t in targets})

    def _check_target(self, target: str) -> None:
        if target not in self.targets:
            raise ValueError(f"unknown target {target!r}; the targets are {self.targets}")

    def training_genes(self, target: str) -> list[str]:
        """The genes the model of ``target`` is fitted on: the other targets, sorted by name."""
        self._check_target(target)
        return sorted(t for t in self.targets if t != target)

    def position(self, gene: str) -> int:
        """The row of ``gene`` among the candidates."""
        if gene not in self._positions:
            raise ValueError(f"unknown gene {gene!r}")
        return self._positions[gene]

    def split(self, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``x_train``, ``y_train``, ``x_test`` (1 × d) and the candidate row of ``target``'s LOTO split."""
        train = self.training_genes(target)
        table = self.image[target]
        x_train = table.loc[train].to_numpy(dtype=np.float64)
        x_test = table.loc[[target]].to_numpy(dtype=np.float64)
        y_train = self.regulatory[target][[self._positions[g] for g in train]]
        return x_train, y_train, x_test, self._positions[target]


# --------------------------------------------------------------------------------------------------------------
# LOTO runs and baselines


def loto_predictions(data: LotoData, fit_predict: FitPredict) -> dict[str, np.ndarray]:
    """Every target's prediction (a length-p vector) from a model fitted on the other targets."""
    predictions = {}
    for target in data.targets:
        x_train, y_train, x_test, _ = data.split(target)
        prediction = np.asarray(fit_predict(x_train, y_train, x_test), dtype=np.float64)
        if prediction.size != y_train.shape[1] or prediction.ndim > 2:
            raise ValueError(f"fit_predict returned shape {prediction.shape} for target {target!r}; "
                             f"expected one prediction of {y_train.shape[1]} values")
        predictions[target] = prediction.reshape(-1)
    return predictions


def _ranks_of(data: LotoData, predictions: Mapping[str, np.ndarray]) -> pd.Series:
    ranks = [distance_ranks(predictions[t][None, :], data.regulatory[t], [data.position(t)])[0]
             for t in data.targets]
    return pd.Series(ranks, index=pd.Index(data.targets, name="target"), name="rank", dtype=np.int64)


def loto_ranks(data: LotoData, fit_predict: FitPredict) -> pd.Series:
    """Every target's 0-based rank among the candidates (see :func:`distance_ranks`), indexed by target."""
    return _ranks_of(data, loto_predictions(data, fit_predict))


def model_fit_predict(name: Literal["ntk", "linear", "kernel_ridge", "si"] = "ntk", reg: float = 1.0,
                      settings: InputSettings | None = None, seed: int = 0) -> FitPredict:
    """A ``fit_predict`` that augments the inputs (:func:`augment_inputs`) and fits a model of :func:`make_model`.

    Parameters
    ----------
    name, reg
        The model and its ridge value (ignored by ``"si"``).
    settings
        Input augmentations (default: none).
    seed
        Seed of the Gaussian Fourier encoding.
    """
    make_model(name, reg)  # unknown names fail here, not in the first fit
    settings = settings or InputSettings()

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        train, test = augment_inputs(x_train, y_train, x_test, settings, seed)
        return make_model(name, reg).fit(train, y_train).predict(test)

    return fit_predict


def _train_mean(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    return y_train.mean(axis=0)


def baseline_ranks(data: LotoData, kind: Literal["mean_all", "train_mean"]) -> pd.Series:
    """Ranks of a prediction that ignores the image.

    ``"mean_all"``: the mean of all N regulatory embeddings of the target's model (the same vector for every
    target when the tables are shared); ``"train_mean"``: the mean regulatory embedding of the training
    genes (the target excluded).
    """
    if kind == "mean_all":
        return _ranks_of(data, {t: data.regulatory[t].mean(axis=0) for t in data.targets})
    if kind == "train_mean":
        return loto_ranks(data, _train_mean)
    raise ValueError(f"unknown baseline {kind!r} (mean_all, train_mean)")


def random_ranks(n_candidates: int, n_targets: int, repeats: int, seed: int) -> np.ndarray:
    """``repeats × n_targets`` ranks of random rankings: uniform on ``0 … n_candidates − 1``."""
    n_candidates = _check_k(n_candidates, "n_candidates")
    n_targets = _check_k(n_targets, "n_targets")
    repeats = _check_k(repeats, "repeats")
    return np.random.default_rng(seed).integers(0, n_candidates, size=(repeats, n_targets))


def _permuted(data: LotoData, order: np.ndarray) -> LotoData:
    """``data`` with ``targets[i]``'s image embedding replaced by that of ``targets[order[i]]`` in every table."""
    targets = data.targets
    sources = [targets[i] for i in order]
    tables: dict[int, pd.DataFrame] = {}
    image = {}
    for target in targets:
        table = data.image[target]
        if id(table) not in tables:  # shared tables are permuted once
            shuffled = table.copy()
            shuffled.loc[targets] = table.loc[sources].to_numpy()
            tables[id(table)] = shuffled
        image[target] = tables[id(table)]
    return replace(data, image=image)


def permutation_ranks(data: LotoData, fit_predict: FitPredict, repeats: int, seed: int,
                      progress_bar: bool = False) -> np.ndarray:
    """``repeats × targets`` LOTO ranks with the image embeddings shuffled among the targets.

    Each repeat draws one random permutation of which target's image embedding is which, applies it to
    every target's image table (the same permutation everywhere, the held-out target included), then runs
    the whole LOTO with ``fit_predict``. Columns follow ``data.targets``.
    """
    repeats = _check_k(repeats, "repeats")
    rng = np.random.default_rng(seed)
    out = np.empty((repeats, len(data.targets)), dtype=np.int64)
    for repeat in tqdm(range(repeats), desc="permutations", unit="repeat", disable=not progress_bar):
        out[repeat] = loto_ranks(_permuted(data, rng.permutation(len(data.targets))), fit_predict).to_numpy()
    return out


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


# --------------------------------------------------------------------------------------------------------------
# grids of settings


_DEFAULTS: dict[str, Any] = {"reg": 1.0, **{f.name: f.default for f in fields(InputSettings)}}
_DTYPES: dict[str, Any] = {"reg": float, "use_y_train_mean": bool, "n_neighbors": int, "n_encodings": int,
                           "encoding": object, "sigma": float, "append_neighbors": object, "normalize_inputs": bool}


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _grid_rows(grid: pd.DataFrame) -> list[tuple[float, InputSettings]]:
    """``(reg, settings)`` of every row; missing columns take the defaults, unknown columns are refused."""
    if not isinstance(grid, pd.DataFrame) or len(grid) == 0:
        raise ValueError("grid must be a non-empty DataFrame of settings")
    unknown = [c for c in grid.columns if c not in GRID_COLUMNS]
    if unknown:
        raise ValueError(f"unknown grid columns {unknown}; known: {list(GRID_COLUMNS)}")
    rows = []
    for position, record in enumerate(grid.to_dict("records")):
        values = {**_DEFAULTS, **record}
        try:
            reg = float(values["reg"])
            if not (math.isfinite(reg) and reg >= 0):
                raise ValueError(f"reg must be finite and non-negative, got {values['reg']!r}")
            append = None if _is_missing(values["append_neighbors"]) else str(values["append_neighbors"])
            settings = InputSettings(use_y_train_mean=bool(values["use_y_train_mean"]),
                                     n_neighbors=int(values["n_neighbors"]), n_encodings=int(values["n_encodings"]),
                                     encoding=str(values["encoding"]), sigma=float(values["sigma"]),
                                     append_neighbors=append, normalize_inputs=bool(values["normalize_inputs"]))
        except (TypeError, ValueError) as error:
            raise ValueError(f"invalid grid row {position}: {error}") from error
        rows.append((reg, settings))
    return rows


def settings_grid(values: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """The cartesian product of ``values`` (rows in key order, the last key varying fastest).

    Keys are ``reg`` and :class:`InputSettings` fields; absent ones take their default (``reg`` 1). Columns
    are always :data:`GRID_COLUMNS`, in that order; ``append_neighbors`` holds ``None`` for "no appending"
    (``NaN``, as after a CSV round trip, is read as ``None`` too).
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError("values must be a non-empty mapping of setting name → sequence of values")
    unknown = [key for key in values if key not in GRID_COLUMNS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(GRID_COLUMNS)}")
    options = {}
    for key, sequence in values.items():
        if isinstance(sequence, str | bytes) or not isinstance(sequence, Sequence | np.ndarray | pd.Index):
            raise ValueError(f"the values of {key!r} must be a sequence, got {sequence!r}")
        if len(sequence) == 0:
            raise ValueError(f"no values given for {key!r}")
        options[key] = list(sequence)
    frame = pd.DataFrame(list(itertools.product(*options.values())), columns=list(options))
    for key in GRID_COLUMNS:
        if key not in frame:
            frame[key] = [_DEFAULTS[key]] * len(frame)
    frame = frame[list(GRID_COLUMNS)].astype(_DTYPES)
    frame["append_neighbors"] = [None if _is_missing(v) else v for v in frame["append_neighbors"]]
    _grid_rows(frame)  # validate every row
    return frame


def reference_grid(n_training: int) -> pd.DataFrame:
    """The reference's Rohban grid (1,440 settings) for ``n_training`` training targets per split.

    reg ∈ {1, 5, 10, 50, 100} × use_y_train_mean ∈ {False, True} × n_neighbors ∈ {0, n_training} ×
    n_encodings ∈ {2, 5, 10, 20} × append_neighbors ∈ {None, "images", "genes"} × encoding ∈ {positional,
    gauss} × sigma ∈ {1, 5, 10}; normalize_inputs False. See :func:`settings_grid` for the columns.
    """
    n_training = _check_k(n_training, "n_training")
    return settings_grid({
        "reg": [1.0, 5.0, 10.0, 50.0, 100.0],
        "use_y_train_mean": [False, True],
        "n_neighbors": [0, n_training],
        "n_encodings": [2, 5, 10, 20],
        "append_neighbors": [None, "images", "genes"],
        "encoding": ["positional", "gauss"],
        "sigma": [1.0, 5.0, 10.0],
    })


def _effective(settings: InputSettings, n_training: int) -> InputSettings:
    """The settings that give the same inputs as ``settings`` with ``n_training`` training genes (cache key)."""
    n = min(settings.n_neighbors, n_training)
    if n == 0:  # no neighbours: encoding, sigma, n_encodings and append_neighbors are unused
        return InputSettings(use_y_train_mean=settings.use_y_train_mean, normalize_inputs=settings.normalize_inputs)
    return replace(settings, n_neighbors=n, sigma=float(settings.sigma))


@dataclass(frozen=True)
class _GridTask:
    """One target of :func:`grid_ranks` (sent to a worker process)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    candidates: np.ndarray
    truth: int
    plan: tuple[tuple[InputSettings, tuple[float, ...]], ...]
    seed: int


class _Grams:
    """Gram matrices (train rows, then the test row) of every part of the augmented inputs of one split.

    The neighbour search and the weights mirror :func:`augment_inputs` step by step (the tests compare
    the two), so the features are the same; only their dot products are summed block by block.
    """

    def __init__(self, task: _GridTask) -> None:
        self.task = task
        self.y_mean_sq = float(np.dot(task.y_train.mean(axis=0), task.y_train.mean(axis=0)))
        self.cache: dict[tuple, Any] = {}

    def _get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def inputs(self, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
        def make() -> tuple[np.ndarray, np.ndarray]:
            x_train, x_test = self.task.x_train, self.task.x_test
            if normalize:
                x_train, x_test = unit_rows(x_train), unit_rows(x_test)
            return x_train, np.vstack([x_train, x_test])
        return self._get(("inputs", normalize), make)

    def base(self, normalize: bool) -> np.ndarray:
        return self._get(("base", normalize), lambda: self.inputs(normalize)[1] @ self.inputs(normalize)[1].T)

    def order(self, normalize: bool) -> np.ndarray:
        def make() -> np.ndarray:
            x_train, both = self.inputs(normalize)
            distances = ((both[:, None, :] - x_train[None, :, :]) ** 2).sum(axis=2)
            return np.argsort(distances, axis=1, kind="stable")
        return self._get(("order", normalize), make)

    def neighbours(self, n: int, normalize: bool, y_mean: bool) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour indices and the samples' pseudo-inverse weights, on the inputs with the mean label
        appended when ``y_mean`` (the order is the same: a constant column moves no distance)."""
        def make() -> tuple[np.ndarray, np.ndarray]:
            n_train = len(self.task.x_train)
            both = self.inputs(normalize)[1]
            if y_mean:
                mean = self.task.y_train.mean(axis=0)
                both = np.hstack([both, np.broadcast_to(mean, (len(both), len(mean)))])
            neighbours = self.order(normalize)[:, :n]
            weights = np.einsum("sd,snd->sn", both, np.linalg.pinv(both[:n_train][neighbours]).transpose(0, 2, 1))
            return neighbours, weights
        return self._get(("neighbours", n, normalize, y_mean), make)

    def appended_genes(self, n: int, normalize: bool) -> np.ndarray:
        def make() -> np.ndarray:
            neighbours = self.neighbours(n, normalize, False)[0]
            flat = self.task.y_train[neighbours].reshape(len(neighbours), -1)
            return flat @ flat.T
        return self._get(("appended_genes", n, normalize), make)

    def gram(self, settings: InputSettings) -> np.ndarray:
        gram = self.base(settings.normalize_inputs).copy()
        if settings.use_y_train_mean:
            gram += self.y_mean_sq
        if settings.n_neighbors == 0:
            return gram
        neighbours, weights = self.neighbours(settings.n_neighbors, settings.normalize_inputs,
                                              settings.use_y_train_mean)
        encoded = fourier_encoding(weights, settings.n_encodings, settings.encoding, settings.sigma, self.task.seed)
        gram += encoded @ encoded.T
        if settings.append_neighbors == "images":
            # the neighbours' augmented rows: slot j adds the Gram of the j-th neighbours' augmented inputs
            n_train = len(self.task.x_train)
            train = gram[:n_train, :n_train]
            gram += sum(train[np.ix_(neighbours[:, j], neighbours[:, j])] for j in range(neighbours.shape[1]))
        elif settings.append_neighbors == "genes":
            gram += self.appended_genes(settings.n_neighbors, settings.normalize_inputs)
        return gram


def _gram_features(gram: np.ndarray) -> np.ndarray:
    """Rows ``F`` with ``F Fᵀ = gram`` (up to rounding): the same dot products in ``len(gram)`` dimensions."""
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def _grid_task(task: _GridTask) -> np.ndarray:
    """The ranks of one target under every (settings, reg) of the plan, flattened in plan order.

    BLAS runs single-threaded: the matrices are small, and a pool of multi-threaded workers oversubscribes
    the cores (OpenBLAS then spins, many times slower); it also makes the results independent of the backend.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _grid_task_ranks(task)


def _grid_task_ranks(task: _GridTask) -> np.ndarray:
    grams = _Grams(task)
    n_train = len(task.x_train)
    predictions = []
    for settings, regs in task.plan:
        features = _gram_features(grams.gram(settings))
        predictions.append(ntk_predict_many(features[:n_train], task.y_train, features[n_train:], regs)[:, 0, :])
    stacked = np.concatenate(predictions)
    return distance_ranks(stacked, task.candidates, np.full(len(stacked), task.truth))


def grid_ranks(data: LotoData, grid: pd.DataFrame, *, seed: int = 0, execution: ExecutionParams | None = None,
               progress_bar: bool = False) -> np.ndarray:
    """LOTO ranks of the NTK model under every setting of ``grid``: a settings × targets integer array.

    Equal to fitting :class:`~image2reg.translation.models.NtkRegression` on
    :func:`~image2reg.translation.features.augment_inputs` for each row and target (up to rounding), but
    settings with the same effective augmentation share one fit, the ridge values of a fit share one
    eigendecomposition, and the kernel is built from per-target Gram matrices.

    Parameters
    ----------
    data
        The LOTO inputs; columns of the result follow ``data.targets``.
    grid
        One row per setting (:func:`reference_grid`, :func:`settings_grid`); row ``i`` of the result is
        its ``i``-th row.
    seed
        Seed of the Gaussian Fourier encoding (the same for every target and setting).
    execution
        Where the targets run (default: a process pool over all cores); the results do not depend on it.
    progress_bar
        Show a bar over targets.
    """
    rows = _grid_rows(grid)
    n_training = len(data.targets) - 1
    regs_of: dict[InputSettings, list[float]] = {}
    keys = []
    for reg, settings in rows:
        key = _effective(settings, n_training)
        regs = regs_of.setdefault(key, [])
        if reg not in regs:
            regs.append(reg)
        keys.append((key, reg))
    plan = tuple((key, tuple(regs)) for key, regs in regs_of.items())
    flat: dict[tuple[InputSettings, float], int] = {}
    for key, regs in plan:
        for reg in regs:
            flat[(key, reg)] = len(flat)
    positions = np.array([flat[key] for key in keys])
    tasks = []
    for target in data.targets:
        x_train, y_train, x_test, truth = data.split(target)
        tasks.append(_GridTask(x_train, y_train, x_test, data.regulatory[target], truth, plan, int(seed)))
    out = np.empty((len(rows), len(data.targets)), dtype=np.int64)
    for column, ranks in map_tasks(_grid_task, tasks, execution, progress_bar=progress_bar,
                                   desc="LOTO targets", unit="target"):
        out[:, column] = ranks[positions]
    return out


def _rank_matrix(ranks: np.ndarray, n_settings: int | None = None) -> np.ndarray:
    ranks = _integer_array(ranks, "ranks", 2)
    if n_settings is not None and ranks.shape[0] != n_settings:
        raise ValueError(f"ranks has {ranks.shape[0]} rows for {n_settings} settings")
    return ranks


def nested_selection(ranks: np.ndarray, targets: Sequence[str], ks: Sequence[int]) -> pd.DataFrame:
    """For each target, the setting chosen without it and the target's rank under that setting.

    Parameters
    ----------
    ranks
        settings × targets ranks (:func:`grid_ranks`).
    targets
        The names of the columns.
    ks
        The ``K`` of the selection score (:func:`selection_score`).

    Returns
    -------
    pd.DataFrame
        One row per target: ``target``, ``setting`` (the row of ``ranks`` with the best selection score on
        the other targets; ties go to the lowest row) and ``rank``.
    """
    ks = _check_ks(ks)
    ranks = _rank_matrix(ranks)
    targets = list(targets)
    if len(targets) != ranks.shape[1]:
        raise ValueError(f"{len(targets)} targets named for {ranks.shape[1]} columns of ranks")
    if len(targets) < 2:
        raise ValueError("nested selection needs at least two targets")
    chosen = []
    for column in range(ranks.shape[1]):
        others = np.delete(ranks, column, axis=1)
        chosen.append(int(np.argmax(_score_numerators(others, ks))))  # integers: exact ties, lowest row wins
    return pd.DataFrame({"target": targets, "setting": chosen,
                         "rank": ranks[chosen, np.arange(ranks.shape[1])].astype(np.int64)})


def grid_summary(grid: pd.DataFrame, ranks: np.ndarray, ks: Sequence[int]) -> pd.DataFrame:
    """``grid`` with its metrics, best setting first.

    Adds ``setting`` (the row's position in ``grid``, as in :func:`nested_selection`), ``auc_<K>`` for every
    ``K`` in ``ks`` and always ``auc_20`` and ``auc_50``, ``score`` (:func:`selection_score` over ``ks``) and
    the top-1/5/10 accuracies. Sorted by score, ties in grid order; the index of ``grid`` is kept.
    """
    ks = _check_ks(ks)
    if not isinstance(grid, pd.DataFrame):
        raise ValueError("grid must be a DataFrame")
    ranks = _rank_matrix(ranks, len(grid))
    aucs = sorted(set(ks) | {20, 50})
    max_k = max(aucs)
    accuracy = _hit_counts(ranks, max_k) / ranks.shape[1]
    summary = grid.copy()
    summary.insert(0, "setting", np.arange(len(grid)))
    for k in aucs:
        summary[f"auc_{k}"] = accuracy[:, :k].mean(axis=1)
    summary["score"] = np.sum([accuracy[:, :k].mean(axis=1) for k in ks], axis=0)
    for k in (1, 5, 10):
        summary[f"top{k}"] = accuracy[:, k - 1]
    order = np.argsort(-_score_numerators(ranks, ks), kind="stable")
    return summary.iloc[order]
