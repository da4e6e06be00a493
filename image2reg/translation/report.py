"""The tables and numbers of the translation report (stage 07): ranks of the model and its baselines, scores with
their p-values, top-k curves with null bands, what limits the prediction, the spread over graph-autoencoder
trainings, the grid search, the predict command on held-out conditions and the stage's summary.

Built on :mod:`~image2reg.translation.loto` (the LOTO runs and their nulls), :mod:`~image2reg.translation.metrics`
and :mod:`~image2reg.translation.statistics`; the notebook only loads, calls these and shows what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.config import SyntheticScreenParams
from image2reg.data.synthetic import latent, render_query_fields, world_shifts
from image2reg.execute import ExecutionParams
from image2reg.layout import RunLayout
from image2reg.translation.features import unit_rows
from image2reg.translation.grid import grid_ranks, grid_summary, nested_selection, reference_grid, settings_grid
from image2reg.translation.inputs import model_block, profile_table
from image2reg.translation.loto import FitPredict, LotoData, baseline_ranks, loto_ranks, shared_regulatory
from image2reg.translation.metrics import curve_scores, random_topk, rank_scores, topk_accuracy, topk_auc
from image2reg.translation.statistics import paired_p_value, permutation_p_value, power_summary

MEAN_ALL, TRAIN_MEAN = "mean of all genes", "mean of training targets"
#: The rows of the image-blind baselines in the rank and score tables, with their key in p-value columns.
BASELINES = {MEAN_ALL: "mean_all", TRAIN_MEAN: "train_mean"}
#: The score table's row of the expected random ranking.
RANDOM_ROW = "random gene (expected)"

#: The rows of the "what limits the prediction" tables and their summary keys.
ORACLE_ROWS = {"the method": "CNN images → GAE embeddings (the method)",
               "true_images": "true shifts → GAE embeddings",
               "true_programs": "CNN images → true programs",
               "both_true": "true shifts → true programs"}


def oracle_summary(oracle: pd.DataFrame) -> dict[str, float]:
    """``oracle_<row>_top5`` / ``_top10`` of a "what limits the prediction" table (rows: :data:`ORACLE_ROWS`)."""
    return {f"oracle_{key}_{column}": float(oracle.loc[label, column])
            for key, label in ORACLE_ROWS.items() if key != "the method"
            for column in oracle.columns.intersection(["top5", "top10"])}


def nearest_genes(candidates: pd.DataFrame, prediction: np.ndarray, truth: pd.DataFrame | None, gene: str,
                  k: int = 10, training: Collection[str] | None = None) -> pd.DataFrame:
    """The ``k`` candidates (rows of ``candidates``) nearest to a predicted regulatory embedding.

    Columns ``gene`` and ``distance``, with ``training`` also whether each gene is one of them (``training
    gene``); on synthetic data (``truth``: :func:`image2reg.notebook.ground_truth`) also each gene's true
    ``module`` and whether it is ``gene``'s own (``same module``).
    """
    distances = np.linalg.norm(candidates.to_numpy(dtype=np.float64) - np.asarray(prediction), axis=1)
    order = np.argsort(distances, kind="stable")[:k]
    table = pd.DataFrame({"gene": candidates.index[order], "distance": distances[order].round(4)})
    if training is not None:
        table["training gene"] = table["gene"].isin(list(training))
    if truth is not None:
        table["module"] = truth["module"].reindex(table["gene"]).to_numpy()
        table["same module"] = table["module"] == truth.loc[gene, "module"]
    return table


def model_label(model: str, reg: float) -> str:
    """The report's name of a translation model and its ridge value, e.g. ``"ntk (reg 1)"``."""
    return f"{model} (reg {reg:g})"


def classical_label(main: str) -> str:
    """The rank-table column of model ``main`` fitted on the classical profiles instead of the CNN embeddings."""
    return f"{main} on classical profiles"


def classical_profiles(layout: RunLayout, control: str) -> pd.DataFrame | None:
    """The mean classical profile of every condition (:func:`~image2reg.translation.inputs.profile_table`) from the
    screen stage's ``profiles`` and stage 01's nucleus table, or None where the screen wrote no profiles."""
    profile_file = layout.artifact("screen", "profiles")
    if not profile_file.is_file():
        return None
    nucleus_genes = pd.read_parquet(layout.artifact("images", "nuclei"), columns=["Metadata_Gene"])
    return profile_table(pd.read_parquet(profile_file), nucleus_genes["Metadata_Gene"], control)


def translation_ranks(data: LotoData, models: Mapping[str, FitPredict],
                      profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """The LOTO rank of every target under each model, the classical profiles and the image-blind baselines.

    Parameters
    ----------
    data
        The LOTO data (:func:`~image2reg.translation.inputs.loto_data`).
    models
        Column name → ``fit_predict``; the first is the model the report is about.
    profiles
        Conditions × features of the classical profiles (:func:`classical_profiles`), or None. They need no
        training, so the same table serves every target; the first model is fitted on them
        (column :func:`classical_label`).

    Returns
    -------
    pandas.DataFrame
        Targets × columns: one per model, then the classical profiles (if given) and the :data:`BASELINES`.
    """
    if not models:
        raise ValueError("no models to rank with")
    main, fitted = next(iter(models.items()))
    ranks = {name: loto_ranks(data, fit_predict) for name, fit_predict in models.items()}
    if profiles is not None:
        ranks[classical_label(main)] = loto_ranks(replace(data, image={t: profiles for t in data.targets}), fitted)
    for name, kind in BASELINES.items():
        ranks[name] = baseline_ranks(data, kind)
    return pd.DataFrame(ranks)


def score_report(ranks: pd.DataFrame, random: np.ndarray, null: np.ndarray | None, main: str, n_candidates: int, *,
                 max_k: int, auc_ks: Sequence[int], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-k scores of every column of ``ranks`` and their p-values.

    Parameters
    ----------
    ranks
        Targets × methods (:func:`translation_ranks`); ``main`` is the model tested against the baselines.
    random
        Repeats × targets ranks of random rankings (:func:`~image2reg.translation.loto.random_ranks`).
    null
        Repeats × targets ranks with the image–target pairs shuffled
        (:func:`~image2reg.translation.loto.permutation_ranks`), or None.
    n_candidates
        Genes every target is ranked among.
    max_k, auc_ks
        The top-k curve's length and the areas reported (:func:`~image2reg.translation.metrics.rank_scores`).
    seed
        Seed of the paired tests' random sign patterns (used beyond 16 targets).

    Returns
    -------
    table, p_values
        ``table``: one row per method and :data:`RANDOM_ROW`, columns ``top<k>`` and ``auc<K>``.
        ``p_values``: the same rows; ``p_random_<column>`` for every method (share of random rankings that
        score at least as high), and for ``main`` ``p_permuted_<column>`` (shuffled pairs, with ``null``) and
        ``p_<baseline>_<column>`` (paired sign-flip test against each of :data:`BASELINES`).
    """
    scores = partial(rank_scores, max_k=max_k, auc_ks=auc_ks)
    table = pd.DataFrame({name: scores(column.to_numpy()) for name, column in ranks.items()}).T
    random_scores = pd.DataFrame([scores(row) for row in random])
    table.loc[RANDOM_ROW] = curve_scores(random_topk(n_candidates, max_k), auc_ks)
    p_values = pd.DataFrame(index=table.index, columns=[f"p_random_{c}" for c in table.columns], dtype=float)
    for name in ranks:
        for column in table.columns:
            p_values.loc[name, f"p_random_{column}"] = permutation_p_value(table.loc[name, column],
                                                                           random_scores[column].to_numpy())
    if null is not None:
        null_scores = pd.DataFrame([scores(row) for row in null])
        for column in table.columns:
            p_values.loc[main, f"p_permuted_{column}"] = permutation_p_value(table.loc[main, column],
                                                                             null_scores[column].to_numpy())
    for baseline, key in BASELINES.items():
        for column in table.columns:  # the same targets, paired: is the model ahead of this baseline target by target?
            p_values.loc[main, f"p_{key}_{column}"] = paired_p_value(ranks[main], ranks[baseline], column, seed=seed)
    return table, p_values


def curve_bands(ranks: pd.DataFrame, random: np.ndarray, null: np.ndarray | None, max_k: int
                ) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The top-k curve of every column of ``ranks`` and the 95 % bands of the random and shuffled-pair curves.

    Returns
    -------
    curves, bands
        Method → top-k accuracy for k = 1 … ``max_k``; ``"random gene"`` (and ``"shuffled pairs"`` with a
        ``null``) → the 2.5 % and 97.5 % quantiles of their curves at every k.
    """
    curves = {name: topk_accuracy(column.to_numpy(), max_k) for name, column in ranks.items()}
    bands = {"random gene": tuple(np.quantile([topk_accuracy(row, max_k) for row in random], [0.025, 0.975], axis=0))}
    if null is not None:
        bands["shuffled pairs"] = tuple(np.quantile([topk_accuracy(row, max_k) for row in null], [0.025, 0.975],
                                                    axis=0))
    return curves, bands


def example_targets(ranks: pd.Series) -> list[str]:
    """A few targets to show: the best ranked, the median and the worst (each once)."""
    order = ranks.sort_values().index
    return list(dict.fromkeys(order[[0, len(order) // 2, -1]]))


def oracle_table(data: LotoData, fit_predict: FitPredict, truth: pd.DataFrame, seed: int, *, max_k: int,
                 auc_ks: Sequence[int]) -> pd.DataFrame:
    """What limits the prediction (synthetic data): the LOTO scores with either side swapped for its ideal.

    Parameters
    ----------
    data, fit_predict
        The LOTO data and the model of the report.
    truth
        The synthetic world's genes table, indexed by gene (:func:`image2reg.notebook.ground_truth`).
    seed
        The world's seed (:func:`~image2reg.data.synthetic.world_shifts`).
    max_k, auc_ks
        As in :func:`score_report`.

    Returns
    -------
    pandas.DataFrame
        One row per :data:`ORACLE_ROWS`: the method, the targets' true phenotype shifts
        in place of the image embeddings, the genes' true programs in place of the regulatory embeddings,
        and both.
    """
    true_image = world_shifts(truth.reset_index(), data.targets, (1.0, 1.0), seed).filter(like="shift_")
    programs = unit_rows(latent(truth.loc[data.genes]))
    variants = {"the method": data,
                "true_images": replace(data, image={t: true_image for t in data.targets}),
                "true_programs": replace(data, regulatory={t: programs for t in data.targets}),
                "both_true": LotoData.from_shared(data.genes, data.targets, true_image, programs)}
    return pd.DataFrame({ORACLE_ROWS[key]: rank_scores(loto_ranks(variant, fit_predict).to_numpy(), max_k, auc_ks)
                         for key, variant in variants.items()}).T


def replicate_scores(data: LotoData, fit_predict: FitPredict, replicates: ad.AnnData, *, max_k: int,
                     auc_ks: Sequence[int]) -> pd.DataFrame:
    """The LOTO scores with each graph-autoencoder replicate's regulatory embeddings shared by every target.

    Parameters
    ----------
    data, fit_predict
        The LOTO data and the model of the report.
    replicates
        Stage 06's replicate embeddings (obs ``model``, ``gene``), one block per training run.
    max_k, auc_ks
        As in :func:`score_report`.

    Returns
    -------
    pandas.DataFrame
        One row per replicate model (in order of appearance), the columns of :func:`score_report`'s table.
    """
    models = list(dict.fromkeys(replicates.obs["model"].astype(str)))
    return pd.DataFrame({model: rank_scores(loto_ranks(shared_regulatory(data, model_block(replicates, model)),
                                                       fit_predict).to_numpy(), max_k, auc_ks)
                         for model in models}).T


def score_spread(scores: pd.DataFrame) -> pd.DataFrame:
    """The ``mean``, ``min`` and ``max`` of every column of a score table (rows: those three statistics)."""
    return scores.agg(["mean", "min", "max"])


def grid_report(data: LotoData, values: Mapping[str, Sequence[Any]] | None, *, seed: int,
                execution: ExecutionParams | None, selection_ks: Sequence[int], max_k: int, auc_ks: Sequence[int],
                progress_bar: bool = False) -> tuple[pd.DataFrame, dict[str, float]]:
    """The grid search over input settings and ridges, scored optimistically and with nested selection.

    Parameters
    ----------
    data
        The LOTO data.
    values
        Values per setting (:func:`~image2reg.translation.grid.settings_grid`), or None for the reference's grid
        (:func:`~image2reg.translation.grid.reference_grid`).
    seed, execution, progress_bar
        Passed to :func:`~image2reg.translation.grid.grid_ranks`.
    selection_ks
        The areas whose sum picks a setting.
    max_k, auc_ks
        The nested selection's top-k curve and the areas reported of it.

    Returns
    -------
    ranked, summary
        :func:`~image2reg.translation.grid.grid_summary` (best setting first) and the summary entries:
        ``grid_settings``, ``grid_best_top5_optimistic`` (the best setting's top-5 on the targets it was chosen
        on), ``nested_top5`` and ``nested_auc<K>`` (each target scored under the setting best on the others).
    """
    grid = reference_grid(len(data.targets) - 1) if values is None else settings_grid(values)
    ranks = grid_ranks(data, grid, seed=seed, execution=execution, progress_bar=progress_bar)
    ranked = grid_summary(grid, ranks, selection_ks)
    nested = nested_selection(ranks, data.targets, selection_ks)
    nested_accuracy = topk_accuracy(nested["rank"].to_numpy(), max_k)
    summary = {"grid_settings": len(grid), "grid_best_top5_optimistic": float(ranked.iloc[0]["top5"]),
               "nested_top5": float(nested_accuracy[4]),
               **{f"nested_auc{k}": topk_auc(nested_accuracy, k) for k in auc_ks if k <= max_k}}
    return ranked, summary


def translation_summary(*, targets: int, candidates: int, left_out: list[str], main: str, table: pd.DataFrame,
                        p_values: pd.DataFrame, power: pd.DataFrame, max_k: int, auc_ks: Sequence[int],
                        oracle: pd.DataFrame | None = None, replicates: pd.DataFrame | None = None,
                        grid: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The stage's ``summary.json`` entries, JSON-ready.

    Parameters
    ----------
    targets, candidates, left_out
        Held-out targets, genes ranked, and the impactful genes left out of the evaluation.
    main
        The model of the report (a row of ``table`` and ``p_values``).
    table, p_values
        :func:`score_report`; a :func:`classical_label` row adds ``classical_<column>`` entries.
    power
        :func:`~image2reg.translation.statistics.power_table` of ``main``.
    max_k, auc_ks
        As in :func:`score_report` (``mean_all_top5`` needs ``max_k ≥ 5``).
    oracle, replicates, grid
        :func:`oracle_table`, :func:`replicate_scores` and :func:`grid_report`'s summary, where computed.
    """
    summary = {"targets": targets, "candidates": candidates, "left_out": left_out,
               "model": main, **{k: float(v) for k, v in table.loc[main].items()},
               **{k: float(v) for k, v in p_values.loc[main].dropna().items()},
               "random_expected_top5": 5 / candidates,
               **power_summary(power),
               "mean_all_top5": float(table.loc[MEAN_ALL, "top5"]) if max_k >= 5 else None}
    classical = classical_label(main)
    if classical in table.index:
        scores = pd.concat([table.loc[classical], p_values.loc[classical].dropna()])
        summary.update({f"classical_{column}": float(value) for column, value in scores.items()})
    if oracle is not None:
        summary.update(oracle_summary(oracle))
    if replicates is not None:
        columns = replicates.columns.intersection(["top5", "top10"] + [f"auc{k}" for k in auc_ks])
        summary.update({f"replicates_{column}_{stat}": float(replicates[column].agg(stat))
                        for column in columns for stat in ("mean", "min", "max")}, replicates=len(replicates))
    if grid is not None:
        summary.update(grid)
    return summary


def predict_held_out(truth: pd.DataFrame, targets: Sequence[str], n_fields: int, screen: SyntheticScreenParams,
                     rank_genes: Callable[..., pd.DataFrame], *, queries_dir: str | Path, work_dir: str | Path,
                     seed: int, **options: Any) -> pd.DataFrame:
    """The predict command on fresh fields of every target (synthetic data): where does the true gene land?

    For target ``k`` of ``targets``, ``n_fields`` new fields are drawn from the world's truth into
    ``queries_dir/<target>`` (seed ``seed + k``) and ranked by ``rank_genes`` with the target's LOTO models.

    Parameters
    ----------
    truth
        The synthetic world's genes table, indexed by gene.
    targets, n_fields, screen
        The targets, the fields drawn for each, and the world's screen params.
    rank_genes
        The predict command's ranking, :func:`image2reg.predict.rank_genes` (``gene`` and ``rank`` columns),
        called as ``rank_genes(folder, model="loto:<target>", work_dir=work_dir/<target>, **options)``.
    queries_dir, work_dir
        Where the fields and the command's work files of every target go (one folder per target).
    seed
        The seed of the first target's fields.
    options
        The other options of ``rank_genes`` (``dataset``, ``params_path``, ``runs_dir``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``target``: the true gene's ``rank`` (1 = best) and the ``top_3`` genes, comma-separated.
    """
    rows = []
    for k, target in enumerate(targets):
        query = Path(queries_dir) / target
        render_query_fields(truth.reset_index(), target, n_fields, screen, query, seed=seed + k)
        ranking = rank_genes(query, model=f"loto:{target}", work_dir=Path(work_dir) / target, **options)
        rows.append({"target": target, "rank": int(ranking.loc[ranking["gene"] == target, "rank"].iloc[0]),
                     "top_3": ", ".join(ranking["gene"].head(3))})
    return pd.DataFrame(rows).set_index("target")


def held_out_scores(queries: pd.DataFrame) -> dict[str, float]:
    """``predict_top10_fraction`` (share of :func:`predict_held_out` ranks ≤ 10) and ``predict_median_rank``."""
    if queries.empty:
        raise ValueError("no held-out conditions to score")
    return {"predict_top10_fraction": float((queries["rank"] <= 10).mean()),
            "predict_median_rank": float(queries["rank"].median())}
