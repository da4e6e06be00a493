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

from image2reg.translation.loto import FitPredict, random_ranks
from image2reg.translation.metrics import curve_scores, distance_ranks, random_topk, rank_scores, topk_accuracy
from image2reg.translation.statistics import paired_p_value, permutation_p_value


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


def transfer_comparison(ranks: pd.DataFrame, genes: Sequence[str], main: str, n_candidates: int,
                        null: np.ndarray | None, *, max_k: int, auc_ks: Sequence[int], random_repeats: int,
                        seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, tuple]]:
    """Scores and p-values of the transfer and its baselines on test ``genes``, with their top-k curves and null bands.

    Parameters
    ----------
    ranks
        Test genes × methods: the 0-based rank of each gene under ``main`` (the translation), ``"mean of all
        genes"`` and ``"mean of training genes"``.
    genes
        The test genes scored (a subset of ``ranks``' rows).
    main
        The translation's column.
    n_candidates
        Genes ranked for each test gene.
    null
        Ranks under shuffled image–gene pairs (repeats × all rows of ``ranks``), or None.
    max_k, auc_ks
        The top-k curve's length and the areas reported (:func:`~image2reg.translation.metrics.rank_scores`,
        with their sum as ``score``).
    random_repeats, seed
        Random rankings of the null "random gene".

    Returns
    -------
    table, curves, bands
        One row per method and the expected random gene: top-k, areas, ``score``, and ``p_random_*``,
        ``p_mean_all_*``/``p_train_mean_*`` (paired sign-flip tests of ``main`` against the baselines) and
        ``p_permuted_*``; the methods' top-k curves; 95 % bands of the random and shuffled-pair curves.
    """
    columns = [main, "mean of all genes", "mean of training genes"]
    table = pd.DataFrame({name: rank_scores(ranks.loc[genes, name].to_numpy(), max_k, auc_ks, score=True)
                          for name in columns}).T
    random_curves = np.array([topk_accuracy(row, max_k)
                              for row in random_ranks(n_candidates, len(genes), random_repeats, seed)])
    table.loc["random gene (expected)"] = curve_scores(random_topk(n_candidates, max_k), auc_ks, score=True)
    random_scores = pd.DataFrame([curve_scores(curve, auc_ks, score=True) for curve in random_curves])
    for name in columns:
        for column in ("top5", "top10", "score"):
            if column in table:
                table.loc[name, f"p_random_{column}"] = permutation_p_value(table.loc[name, column],
                                                                            random_scores[column].to_numpy())
    largest = max((k for k in auc_ks if k <= max_k), default=None)
    paired = ["top5", "top10"] + ([f"auc{largest}"] if largest else [])
    for name, key in (("mean of all genes", "mean_all"), ("mean of training genes", "train_mean")):
        for column in (c for c in paired if c in table):  # paired on the same test genes: ahead gene by gene?
            table.loc[main, f"p_{key}_{column}"] = paired_p_value(ranks.loc[genes, main], ranks.loc[genes, name],
                                                                  column, seed=seed)
    curves = {name: topk_accuracy(ranks.loc[genes, name].to_numpy(), max_k) for name in columns}
    bands = {"random gene": tuple(np.quantile(random_curves, [0.025, 0.975], axis=0))}
    if null is not None:
        null_curves = np.array([topk_accuracy(row, max_k) for row in null[:, ranks.index.get_indexer(genes)]])
        null_scores = pd.DataFrame([curve_scores(curve, auc_ks, score=True) for curve in null_curves])
        for column in ("top5", "top10", "score"):
            if column in table:
                table.loc[main, f"p_permuted_{column}"] = permutation_p_value(table.loc[main, column],
                                                                              null_scores[column].to_numpy())
        bands["shuffled pairs"] = tuple(np.quantile(null_curves, [0.025, 0.975], axis=0))
    return table, curves, bands
