"""The grid search of the translation's input settings (method §7.4), fast and exact.

:func:`grid_ranks` evaluates a whole grid of input settings (:mod:`~image2reg.translation.features`)
with the NTK model. The NTK only needs dot products, so for every target the Gram matrices of the
image embeddings, of the appended neighbours and of the Fourier encodings are computed once and
summed per setting; settings that differ only in the ridge value share one eigendecomposition
(:func:`~image2reg.translation.models.ntk_predict_many`), and settings whose augmentation is the same
(e.g. all settings without neighbours) share one fit. Choosing a setting on the evaluated targets is
optimistic; :func:`nested_selection` picks, for each target, the setting that is best on the *other*
targets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from image2reg.execute import ExecutionParams, map_tasks
from image2reg.translation.features import InputSettings, fourier_encoding, unit_rows
from image2reg.translation.loto import LotoData
from image2reg.translation.metrics import (
    _check_k,
    _check_ks,
    _hit_counts,
    _integer_array,
    _score_numerators,
    distance_ranks,
)
from image2reg.translation.models import ntk_predict_many

SETTING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(InputSettings))
GRID_COLUMNS: tuple[str, ...] = ("reg", *SETTING_FIELDS)
"""The columns of a settings grid: the ridge value and every :class:`InputSettings` field."""

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
