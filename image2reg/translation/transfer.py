"""Transfer evaluation of the translation on a second screen (method §8, the JUMP validation).

The translation is fitted once, on the *training* genes (the impactful genes of the reference screen that
the second screen also perturbed): their image embeddings from the second screen's CNN against their
regulatory embeddings. It then predicts the regulatory embedding of every *test* gene (other interactome
genes of the second screen, never seen by the CNN nor by the translation), and every interactome gene is
ranked by distance to each prediction (:func:`~image2reg.translation.metrics.distance_ranks`: 0-based,
ties pessimistic).

Baselines: the mean of all regulatory embeddings, the mean of the training genes' embeddings, random
genes, and the translation refitted on shuffled training pairs (the pairing of image and regulatory
embedding broken). The reference restricts the headline numbers to test genes in regulatory clusters that
hold training genes (:func:`restricted_test`), since no map learnt from other clusters can be expected to
reach them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from tqdm import tqdm

from image2reg.translation.loto import FitPredict
from image2reg.translation.metrics import distance_ranks


def _check(image: pd.DataFrame, regulatory: pd.DataFrame, train: Sequence[str], test: Sequence[str]
           ) -> tuple[list[str], list[str]]:
    train, test = list(train), list(test)
    if len(train) < 2:
        raise ValueError(f"the translation needs at least two training genes, got {len(train)}")
    if not test:
        raise ValueError("no test genes")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"genes both in training and test: {', '.join(overlap[:10])}")
    for name, table in (("image", image), ("regulatory", regulatory)):
        missing = [gene for gene in train + test if gene not in table.index]
        if missing:
            raise KeyError(f"genes without {name} embeddings: {', '.join(missing[:10])}")
    return train, test


def _ranks(predictions: np.ndarray, regulatory: pd.DataFrame, test: list[str]) -> pd.Series:
    truth = regulatory.index.get_indexer(test)
    ranks = distance_ranks(np.atleast_2d(predictions), regulatory.to_numpy(np.float64), truth)
    return pd.Series(ranks, index=pd.Index(test, name="gene"), name="rank")


def transfer_predictions(image: pd.DataFrame, regulatory: pd.DataFrame, train: Sequence[str], test: Sequence[str],
                         fit_predict: FitPredict) -> pd.DataFrame:
    """Predicted regulatory embeddings of the ``test`` genes (rows) from a fit on the ``train`` genes."""
    train, test = _check(image, regulatory, train, test)
    predicted = fit_predict(image.loc[train].to_numpy(np.float64), regulatory.loc[train].to_numpy(np.float64),
                            image.loc[test].to_numpy(np.float64))
    return pd.DataFrame(np.asarray(predicted), index=pd.Index(test, name="gene"), columns=regulatory.columns)


def transfer_ranks(image: pd.DataFrame, regulatory: pd.DataFrame, train: Sequence[str], test: Sequence[str],
                   fit_predict: FitPredict) -> pd.Series:
    """The 0-based rank of each test gene among all rows of ``regulatory`` (the candidates).

    Parameters
    ----------
    image
        Gene perturbation embeddings (genes × dimensions) of at least the train and test genes.
    regulatory
        Regulatory embeddings of every candidate gene (the interactome), rows in candidate order.
    train, test
        Disjoint gene lists; the model is fitted on ``train`` (in the given order).
    fit_predict
        ``(x_train, y_train, x_test) -> ŷ``, e.g. :func:`~image2reg.translation.loto.model_fit_predict`.
    """
    return _ranks(transfer_predictions(image, regulatory, train, test, fit_predict).to_numpy(), regulatory,
                  list(test))


def baseline_transfer_ranks(regulatory: pd.DataFrame, train: Sequence[str], test: Sequence[str],
                            kind: str) -> pd.Series:
    """Ranks of an image-blind prediction: ``"mean_all"`` (all candidates) or ``"train_mean"`` (training genes)."""
    if kind == "mean_all":
        centre = regulatory.to_numpy(np.float64).mean(axis=0)
    elif kind == "train_mean":
        centre = regulatory.loc[list(train)].to_numpy(np.float64).mean(axis=0)
    else:
        raise ValueError(f"unknown baseline {kind!r} (mean_all, train_mean)")
    test = list(test)
    return _ranks(np.repeat(centre[None, :], len(test), axis=0), regulatory, test)


def permutation_transfer_ranks(image: pd.DataFrame, regulatory: pd.DataFrame, train: Sequence[str],
                               test: Sequence[str], fit_predict: FitPredict, repeats: int, seed: int,
                               progress_bar: bool = False) -> np.ndarray:
    """``repeats × test`` ranks of the translation refitted with the training genes' image embeddings shuffled."""
    train, test = _check(image, regulatory, train, test)
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    rng = np.random.default_rng(seed)
    x_train = image.loc[train].to_numpy(np.float64)
    y_train = regulatory.loc[train].to_numpy(np.float64)
    x_test = image.loc[test].to_numpy(np.float64)
    truth = regulatory.index.get_indexer(test)
    candidates = regulatory.to_numpy(np.float64)
    out = np.empty((repeats, len(test)), dtype=np.int64)
    for repeat in tqdm(range(repeats), desc="permutations", unit="repeat", disable=not progress_bar):
        predicted = fit_predict(x_train[rng.permutation(len(train))], y_train, x_test)
        out[repeat] = distance_ranks(np.atleast_2d(predicted), candidates, truth)
    return out


def regulatory_clusters(regulatory: pd.DataFrame, n_clusters: int, seed: int) -> pd.Series:
    """k-means clusters (0 … k−1) of the regulatory embeddings, one per gene."""
    if not 1 <= n_clusters <= len(regulatory):
        raise ValueError(f"n_clusters must be between 1 and the {len(regulatory)} genes, got {n_clusters}")
    labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(regulatory.to_numpy(np.float64))
    return pd.Series(labels, index=regulatory.index, name="cluster")


def restricted_test(clusters: pd.Series, train: Sequence[str], test: Sequence[str], min_train: int) -> list[str]:
    """The test genes whose cluster holds at least ``min_train`` training genes (in ``test``'s order)."""
    missing = [gene for gene in [*train, *test] if gene not in clusters.index]
    if missing:
        raise KeyError(f"genes without a cluster: {', '.join(missing[:10])}")
    counts = clusters.loc[list(train)].value_counts()
    return [gene for gene in test if counts.get(clusters[gene], 0) >= min_train]
