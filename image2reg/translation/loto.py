"""Leave-one-target-out (LOTO) evaluation of the translation and its baselines (method §7.2–7.3).

For every held-out target ``T`` (an impactful gene that is in both spaces), the models of ``T``'s LOTO
runs give image embeddings of all impactful genes (from the CNN that never saw ``T``) and regulatory
embeddings of all interactome genes (from ``T``'s graph autoencoder). The translation is fitted on the
other targets (sorted by name), predicts ``ŷ`` from ``T``'s image embedding, and every interactome gene
(a *candidate*) is ranked by its Euclidean distance to ``ŷ``; ``T``'s 0-based rank is its ``knn_hit``.
The nulls of the same run: random rankings, the mean baselines, shuffled image–target pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from image2reg.translation.features import InputSettings, augment_inputs, unit_rows
from image2reg.translation.metrics import _check_k, distance_ranks
from image2reg.translation.models import make_model

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``fit_predict(x_train, y_train, x_test) -> prediction`` (``1 × p`` or ``p``) of one LOTO split."""

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


def shared_regulatory(data: LotoData, table: pd.DataFrame) -> LotoData:
    """The same LOTO data with one regulatory table for every target: ``table``'s rows of ``data.genes``, scaled
    to unit length (e.g. a graph-autoencoder replicate, to see how much the scores move between trainings)."""
    shared = unit_rows(table.loc[data.genes].to_numpy())
    return replace(data, regulatory={target: shared for target in data.targets})


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
