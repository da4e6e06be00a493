"""The tables and numbers of the validation on a second screen (stage 08): which genes train and which are tested,
the second screen's gene perturbation embeddings, the transfer's ranks, scores and p-values, what limits the
prediction and the stage's summary.

Built on :mod:`~image2reg.translation.transfer` (the transfer evaluation and its nulls); the notebook only loads,
calls these and shows what they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.cnn.embed import EmbeddingTask, gene_embeddings
from image2reg.cnn.tasks import embed_nuclei
from image2reg.config import ValidationStageParams
from image2reg.data.synthetic import latent, world_shifts
from image2reg.execute import torch_threads
from image2reg.layout import RunLayout, TaskFiles
from image2reg.translation.features import InputSettings, unit_rows
from image2reg.translation.loto import FitPredict, model_fit_predict
from image2reg.translation.metrics import rank_scores
from image2reg.translation.report import ORACLE_ROWS, RANDOM_ROW, oracle_summary
from image2reg.translation.statistics import power_summary, power_table
from image2reg.translation.transfer import baseline_transfer_ranks, transfer_comparison, transfer_ranks

#: The image-blind baselines of the transfer (the rows :func:`~image2reg.translation.transfer.transfer_comparison`
#: reads), with their summary keys.
BASELINES = {"mean of all genes": "mean_all", "mean of training genes": "train_mean"}


def reference_regulatory(reference: RunLayout) -> pd.DataFrame:
    """The reference run's regulatory embeddings (stage 06), scaled to unit length: genes × dimensions.

    Raises
    ------
    FileNotFoundError
        Where the reference run has not written them yet.
    """
    path = reference.artifact("regulatory", "regulatory_embeddings")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run stages 05–06 of dataset '{reference.dataset}' first")
    embedded = ad.read_h5ad(path)
    return pd.DataFrame(unit_rows(np.asarray(embedded.X, dtype=np.float64)), index=embedded.obs_names.astype(str))


def second_screen_genes(impactful: Sequence[str], interactome: Sequence[str], truth: pd.DataFrame,
                        max_test_genes: int | None, seed: int) -> tuple[list[str], list[str]]:
    """The genes of a synthesized second screen: the training genes and the test genes.

    Parameters
    ----------
    impactful
        The reference's impactful genes; those in ``interactome`` train (in this order).
    interactome
        The genes with regulatory embeddings; the others of them that the world knows are tested.
    truth
        The synthetic world's genes table, indexed by gene.
    max_test_genes, seed
        At most this many test genes, drawn without replacement with ``seed`` and sorted (None: all).
    """
    members = set(interactome)
    train = [g for g in impactful if g in members]
    test = [g for g in interactome if g not in set(train) and g in truth.index]
    if max_test_genes is not None and len(test) > max_test_genes:
        rng = np.random.default_rng(seed)
        test = sorted(rng.choice(test, size=max_test_genes, replace=False))
    return train, test


@dataclass(frozen=True)
class ScreenGenes:
    """The conditions of the second screen the stage can use.

    Attributes
    ----------
    usable
        The QC-passing nuclei.
    train
        Impactful genes with regulatory embeddings and at least ``needed`` fields of usable nuclei.
    test
        The other interactome genes with usable nuclei.
    short
        Impactful genes with regulatory embeddings and usable nuclei, but fewer than ``needed`` fields.
    needed
        The fewest fields a training gene needs.
    """

    usable: pd.DataFrame
    train: list[str]
    test: list[str]
    short: list[str]
    needed: int


def screen_genes(nuclei: pd.DataFrame, impactful: Sequence[str], interactome: Sequence[str], needed: int,
                 control: str) -> ScreenGenes:
    """Split the second screen's conditions into training and test genes by their fields of usable nuclei.

    Parameters
    ----------
    nuclei
        Stage 01's nucleus table of the second screen (``Metadata_Gene``, ``image_path``, ``QC_pass``).
    impactful
        The reference's impactful genes (in order).
    interactome
        The genes with regulatory embeddings (in order).
    needed
        Fields a training gene needs (:func:`~image2reg.cnn.splits.min_fields`).
    control
        The control condition, which must have usable nuclei.

    Raises
    ------
    ValueError
        Where the control has no QC-passing nuclei.
    """
    usable = nuclei[nuclei["QC_pass"].astype(bool)]
    fields_per = usable.groupby("Metadata_Gene")["image_path"].nunique()
    if control not in fields_per.index:
        raise ValueError(f"the second screen has no QC-passing nuclei of the control {control!r}")
    members = set(interactome)
    train = [g for g in impactful if g in members and fields_per.get(g, 0) >= needed]
    test = [g for g in interactome if g not in set(impactful) and fields_per.get(g, 0) >= 1]
    short = [g for g in impactful if g in members and 0 < fields_per.get(g, 0) < needed]
    return ScreenGenes(usable=usable, train=train, test=test, short=short, needed=needed)


@dataclass(frozen=True)
class SecondScreenEmbeddings:
    """The gene perturbation embeddings of the second screen.

    Attributes
    ----------
    genes
        One row per gene (obs ``Metadata_Gene``, ``n_nuclei`` and ``role``: ``train`` or ``test``).
    image
        The same embeddings as a float64 genes × dimensions table.
    train_nuclei, test_nuclei
        The nuclei averaged: the training genes' test-split nuclei, and the test genes' (unseen) nuclei.
    """

    genes: ad.AnnData
    image: pd.DataFrame
    train_nuclei: int
    test_nuclei: int


def second_screen_embeddings(task: EmbeddingTask, usable: pd.DataFrame, test: Sequence[str]
                             ) -> SecondScreenEmbeddings:
    """Gene perturbation embeddings of a finished multi-class task and of the test genes it never saw.

    The training genes' rows average the task's embeddings of their test-split nuclei (the control
    left out); every usable nucleus of a ``test`` gene is embedded with the task's best weights
    (:func:`~image2reg.cnn.tasks.embed_nuclei`, with the task's torch threads) and averaged per gene.

    Parameters
    ----------
    task
        The finished task (its genes are the training genes).
    usable
        The QC-passing nuclei of the second screen (:class:`ScreenGenes`).
    test
        The test genes.
    """
    trained = ad.read_h5ad(task.folder / TaskFiles.EMBEDDINGS)
    test_nuclei = usable[usable["Metadata_Gene"].isin(test)]
    with torch_threads(task.torch_threads):
        latents = embed_nuclei(test_nuclei, images_dir=task.images_dir,
                               weights=task.folder / TaskFiles.TRAINING / TaskFiles.BEST_MODEL,
                               n_classes=len(trained.uns["classes"]), encoder=task.encoder,
                               batch_size=task.training.batch_size, device=task.training.device)
    unseen = ad.AnnData(latents.astype(np.float32),
                        obs=test_nuclei[["Metadata_Gene"]].astype(str).reset_index(drop=True))
    unseen.var_names = trained.var_names
    means = ad.concat([gene_embeddings(trained[trained.obs["Metadata_Gene"] != task.control]),
                       gene_embeddings(unseen)])
    image = pd.DataFrame(np.asarray(means.X, dtype=np.float64), index=means.obs_names.astype(str))
    train = list(task.genes)
    means.obs["role"] = np.where(means.obs_names.isin(train), "train", "test")
    return SecondScreenEmbeddings(genes=means, image=image, train_nuclei=int(means.obs.loc[train, "n_nuclei"].sum()),
                                  test_nuclei=len(test_nuclei))


def transfer_fit_predict(params: ValidationStageParams, n_training: int, seed: int) -> FitPredict:
    """The stage's translation (:func:`~image2reg.translation.loto.model_fit_predict`), its neighbour
    coefficients capped at the ``n_training`` training genes."""
    inputs = {**params.inputs.model_dump(), "n_neighbors": min(params.inputs.n_neighbors, n_training)}
    return model_fit_predict(params.translation, params.reg, InputSettings(**inputs), seed=seed)


def transfer_rank_table(image: pd.DataFrame, regulatory: pd.DataFrame, train: Sequence[str], test: Sequence[str],
                        fit_predict: FitPredict, main: str, clusters: pd.Series,
                        restricted: Sequence[str]) -> pd.DataFrame:
    """Every test gene's rank under the translation (column ``main``) and the :data:`BASELINES`.

    Parameters
    ----------
    image, regulatory, train, test, fit_predict
        As in :func:`~image2reg.translation.transfer.transfer_ranks`.
    main
        The translation's column name.
    clusters
        Every gene's regulatory cluster (:func:`~image2reg.translation.transfer.regulatory_clusters`).
    restricted
        The test genes of the headline numbers (:func:`~image2reg.translation.transfer.restricted_test`).

    Returns
    -------
    pandas.DataFrame
        Test genes × ``main``, the baselines, ``cluster`` and ``restricted`` (bool).
    """
    ranks = pd.DataFrame({main: transfer_ranks(image, regulatory, train, test, fit_predict),
                          **{name: baseline_transfer_ranks(regulatory, train, test, kind)
                             for name, kind in BASELINES.items()}})
    ranks["cluster"] = clusters.loc[list(test)].to_numpy()
    ranks["restricted"] = ranks.index.isin(list(restricted))
    return ranks


def training_per_cluster(clusters: pd.Series, train: Sequence[str]) -> pd.Series:
    """How many training genes each regulatory cluster (0 … max) holds, empty clusters included."""
    return clusters.loc[list(train)].value_counts().reindex(range(clusters.max() + 1), fill_value=0)


@dataclass(frozen=True)
class TransferReport:
    """The transfer scored on one group of test genes.

    Attributes
    ----------
    genes
        The test genes scored.
    table, curves, bands
        :func:`~image2reg.translation.transfer.transfer_comparison`.
    power
        :func:`~image2reg.translation.statistics.power_table` of the translation's ranks.
    """

    genes: list[str]
    table: pd.DataFrame
    curves: dict[str, np.ndarray]
    bands: dict[str, tuple]
    power: pd.DataFrame


def transfer_reports(ranks: pd.DataFrame, groups: Mapping[str, Sequence[str]], main: str, n_candidates: int,
                     null: np.ndarray | None, *, max_k: int, auc_ks: Sequence[int], random_repeats: int,
                     seed: int) -> dict[str, TransferReport]:
    """:func:`~image2reg.translation.transfer.transfer_comparison` and the power table of every group of test genes.

    Parameters
    ----------
    ranks
        :func:`transfer_rank_table`.
    groups
        Label → test genes (e.g. the restricted and all test genes); an empty group is left out of the result.
    main, n_candidates, null, max_k, auc_ks, random_repeats, seed
        As in :func:`~image2reg.translation.transfer.transfer_comparison`; the power table has the top-5 and
        top-10 rows up to ``max_k``.
    """
    reports = {}
    for label, genes in groups.items():
        if not genes:
            continue
        table, curves, bands = transfer_comparison(ranks, genes, main, n_candidates, null, max_k=max_k,
                                                   auc_ks=auc_ks, random_repeats=random_repeats, seed=seed)
        power = power_table(ranks.loc[genes, main], n_candidates, [k for k in (5, 10) if k <= max_k])
        reports[label] = TransferReport(genes=list(genes), table=table, curves=curves, bands=bands, power=power)
    return reports


def transfer_oracle(image: pd.DataFrame, regulatory: pd.DataFrame, truth: pd.DataFrame, train: Sequence[str],
                    test: Sequence[str], scored: Sequence[str], fit_predict: FitPredict,
                    effect: tuple[float, float] | None, seed: int, *, max_k: int,
                    auc_ks: Sequence[int]) -> pd.DataFrame:
    """What limits the transfer (synthetic data): the scores with either side swapped for its ideal.

    Parameters
    ----------
    image, regulatory, train, test, fit_predict
        As in :func:`~image2reg.translation.transfer.transfer_ranks`; ``regulatory``'s rows are the interactome.
    truth
        The synthetic world's genes table, indexed by gene.
    scored
        The test genes scored (e.g. the restricted ones).
    effect, seed
        The second screen's effect sizes and the world's seed (:func:`~image2reg.data.synthetic.world_shifts`);
        None: no second screen was synthesized, effects (1, 1).
    max_k, auc_ks
        The top-k curve and its areas (with their sum, ``score``).

    Returns
    -------
    pandas.DataFrame
        One row per :data:`~image2reg.translation.report.ORACLE_ROWS`: the method, the genes' true phenotype
        shifts in place of the image embeddings, their true programs in place of the regulatory embeddings, and
        both.
    """
    train, test = list(train), list(test)
    shift_columns = [c for c in truth.columns if c.startswith("shift_")]
    true_image = world_shifts(truth.reset_index(), train + test, tuple(effect) if effect else (1.0, 1.0),
                              seed)[shift_columns]
    true_regulatory = pd.DataFrame(unit_rows(latent(truth.loc[list(regulatory.index)])), index=regulatory.index)
    return pd.DataFrame({
        label: rank_scores(transfer_ranks(x, y, train, test, fit_predict).loc[scored].to_numpy(), max_k, auc_ks,
                           score=True)
        for label, x, y in ((ORACLE_ROWS["the method"], image, regulatory),
                            (ORACLE_ROWS["true_images"], true_image, regulatory),
                            (ORACLE_ROWS["true_programs"], image, true_regulatory),
                            (ORACLE_ROWS["both_true"], true_image, true_regulatory))}).T


def validation_summary(*, reference: str, train: Sequence[str], test: Sequence[str], restricted: Sequence[str],
                       candidates: int, main: str, metrics: Mapping[str, Any], reports: Mapping[str, TransferReport],
                       oracle: pd.DataFrame | None = None) -> dict[str, Any]:
    """The stage's ``summary.json`` entries, JSON-ready.

    Parameters
    ----------
    reference
        The dataset of the impactful genes and regulatory embeddings.
    train, test, restricted
        The training genes, the test genes and the restricted test genes.
    candidates
        Genes every test gene is ranked among.
    main
        The translation's row of the reports' tables.
    metrics
        The CNN task's metrics (``test_balanced_accuracy``, ``chance``).
    reports
        :func:`transfer_reports`: per label, the translation's scores and p-values (``<label>_<column>``), the
        baselines' scores and top-5, the expected random score and the power entries.
    oracle
        :func:`transfer_oracle`, where computed.
    """
    summary = {"reference": reference, "training_genes": len(train), "test_genes": len(test),
               "restricted_test_genes": len(restricted), "candidates": candidates, "model": main,
               "cnn_test_bac": metrics["test_balanced_accuracy"], "cnn_chance": metrics["chance"]}
    for label, report in reports.items():
        table = report.table
        for column, value in table.loc[main].dropna().items():
            summary[f"{label}_{column}"] = float(value)
        for name, key in BASELINES.items():
            summary[f"{label}_{key}_score"] = float(table.loc[name, "score"])
            summary[f"{label}_{key}_top5"] = float(table.loc[name, "top5"]) if "top5" in table else None
        summary[f"{label}_random_score"] = float(table.loc[RANDOM_ROW, "score"])
        summary.update({f"{label}_{key}": value for key, value in power_summary(report.power).items()})
    if oracle is not None:
        summary.update(oracle_summary(oracle))
    return summary
