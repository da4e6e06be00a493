"""What the reports of stages 02–04 compute from the CNNs' results: tables, checks and summaries.

The stage notebooks only load, call these functions and show what they return; the models, splits and
embeddings themselves come from :mod:`image2reg.cnn.screen` and :mod:`image2reg.cnn.embed`.

- stage 01b (pretraining): :func:`pretrain_probe`, :func:`probe_summary`, :func:`pretrain_summary`;
- stage 02 (screen): :func:`screened_genes`, :func:`ranked_screen`, :func:`truth_check`;
- stage 03 (embeddings): :func:`multiclass_summary`, :func:`read_histories`, :func:`confusion_table`,
  :func:`perturbation_similarity`, :func:`module_labels`, :func:`control_scaled`, :func:`nucleus_umap`,
  :func:`gene_umap`, :func:`embedding_activity`, :func:`activity_summary`, :func:`embeddings_summary`;
- stage 04 (LOTO): :func:`loto_embeddings`, :func:`held_out_targets`, :func:`nearest_trained_genes`,
  :func:`loto_summary`;
- both CNN stages: :func:`class_labels`, :data:`MULTICLASS_COLUMNS`, :data:`LOTO_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy.cluster.hierarchy import leaves_list, linkage
from sklearn.metrics import roc_auc_score, roc_curve

from image2reg.cnn.datasets import load_crops
from image2reg.cnn.embed import EmbeddingTask, gene_embeddings, read_embeddings
from image2reg.cnn.pretrain import embed_crops, probe_features
from image2reg.cnn.resnet import resnet18
from image2reg.cnn.screen import select_impactful, specificity_scores
from image2reg.config import PretrainStageParams
from image2reg.data.metadata import genes_to_screen
from image2reg.layout import TaskFiles, artifact_name
from image2reg.profiling.activity import field_activity, scale_by_control
from image2reg.profiling.features import nucleus_profiles
from image2reg.profiling.projection import umap_2d

#: The columns of stage 03's metrics table shown in its report.
MULTICLASS_COLUMNS = ["model", "n_train", "n_val", "n_test", "best_epoch", "epochs", "val_balanced_accuracy",
                      "test_balanced_accuracy", "baseline_test_balanced_accuracy"]
#: The columns of stage 04's metrics table shown in its report.
LOTO_COLUMNS = ["held_out", "n_classes", "n_train", "n_test", "n_held_out", "best_epoch", "test_balanced_accuracy",
                "baseline_test_balanced_accuracy", "chance"]


# -- stage 02: the specificity screen ------------------------------------------------------------------------------

def screened_genes(nuclei: pd.DataFrame, gene_list: str | Path | None, *, control: str,
                   genes: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """The genes the screen tests: ``genes`` when given, else :func:`~image2reg.data.metadata.genes_to_screen`.

    Parameters
    ----------
    nuclei
        Stage 01's nucleus table (``Metadata_Gene``; ``Metadata_ControlType`` non-empty marks a control
        construct, never screened by default).
    gene_list
        The raw gene list of the screen (``RawLayout.screen_genes``); used only when it exists.
    control
        The negative control.
    genes
        The params' genes; when non-empty they are screened instead of the listed ones.

    Returns
    -------
    genes, without_nuclei
        The genes to screen, and the listed genes that have no nucleus after stage 01.
    """
    constructs = nuclei.loc[nuclei["Metadata_ControlType"].fillna("").astype(str) != "", "Metadata_Gene"]
    listed, without_nuclei = genes_to_screen(nuclei["Metadata_Gene"], constructs, gene_list, control=control)
    return (genes or listed), without_nuclei


def ranked_screen(results: pd.DataFrame, *, method: Literal["knee", "top_n"] = "knee",
                  top_n: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The screen's ranking and its impactful genes.

    Parameters
    ----------
    results
        The per-(gene, fold) table of :func:`~image2reg.cnn.screen.run_screen`.
    method, top_n
        The cut of :func:`~image2reg.cnn.screen.select_impactful`.

    Returns
    -------
    scores, impactful
        :func:`~image2reg.cnn.screen.specificity_scores` with ``baseline_score`` (the classical baseline's
        mean test BAC over the folds, when it ran) and ``impactful`` (bool) columns; the impactful genes,
        from the highest score down.
    """
    scores = specificity_scores(results)
    if "baseline_test_balanced_accuracy" in results:
        scores = scores.join(results.groupby("gene")["baseline_test_balanced_accuracy"].mean()
                             .rename("baseline_score"))
    impactful = select_impactful(scores, method=method, top_n=top_n)
    scores["impactful"] = scores.index.isin(impactful)
    return scores, impactful


@dataclass(frozen=True)
class TruthCheck:
    """The screen against a synthetic world's ground truth (see :func:`truth_check`)."""

    auroc: float  #: AUROC of the specificity score for the truly impactful genes
    fpr: np.ndarray  #: the ROC curve's false positive rates
    tpr: np.ndarray  #: the ROC curve's true positive rates
    selected: pd.DataFrame  #: true effect class × selected as impactful: gene counts
    summary: dict[str, Any]  #: the numbers of ``truth_check.json``


def truth_check(scores: pd.DataFrame, truth: pd.DataFrame) -> TruthCheck:
    """How well the screen ranks the genes with a real effect above those without one.

    Parameters
    ----------
    scores
        The ranking of :func:`ranked_screen` (``specificity_score``, ``impactful``, optionally ``baseline_score``).
    truth
        The synthetic world's genes (:func:`image2reg.notebook.ground_truth`), indexed by gene, with
        ``impactful`` (bool) and ``effect_class``; it must hold every screened gene.

    Returns
    -------
    TruthCheck
        Its ``summary``: ``auroc``, ``n_screened``, ``n_true_impactful``, ``n_selected``, ``selected_true``
        (selected and truly impactful) and, with the baseline, ``baseline_auroc``.
    """
    missing = scores.index.difference(truth.index)
    if len(missing):
        raise KeyError(f"the ground truth lacks the screened genes {sorted(missing)}")
    screened = truth.loc[scores.index]
    auroc = roc_auc_score(screened["impactful"], scores["specificity_score"])
    fpr, tpr, _ = roc_curve(screened["impactful"], scores["specificity_score"])
    selected = pd.crosstab(screened["effect_class"], scores["impactful"].rename("selected as impactful"))
    summary = {"auroc": float(auroc), "n_screened": int(len(scores)),
               "n_true_impactful": int(screened["impactful"].sum()), "n_selected": int(scores["impactful"].sum()),
               "selected_true": int((scores["impactful"] & screened["impactful"]).sum())}
    if "baseline_score" in scores:
        summary["baseline_auroc"] = float(roc_auc_score(screened["impactful"], scores["baseline_score"]))
    return TruthCheck(auroc=float(auroc), fpr=fpr, tpr=tpr, selected=selected, summary=summary)


# -- stages 03 and 04: the multi-class and LOTO CNNs ---------------------------------------------------------------

def class_labels(genes: Sequence[str], control: str) -> list[str]:
    """The classes of the multi-class CNNs in their label encoding: the genes and the control, sorted
    (as :func:`~image2reg.cnn.splits.multiclass_splits` encodes them)."""
    return sorted({*genes, control})


def multiclass_summary(metrics: pd.DataFrame) -> dict[str, Any]:
    """Stage 03's headline numbers of its k models (one row of ``metrics`` per fold).

    Returns ``classes``, ``chance`` (1 / classes), ``test_bac_mean`` and ``test_bac_sd`` (sample SD over
    the folds) of the CNN, and ``baseline_bac_mean`` of the classical baseline on the same splits.
    """
    if metrics.empty:
        raise ValueError("no model metrics")
    return {"classes": int(metrics["n_classes"].iat[0]), "chance": metrics["chance"].iat[0],
            "test_bac_mean": metrics["test_balanced_accuracy"].mean(),
            "test_bac_sd": metrics["test_balanced_accuracy"].std(ddof=1),
            "baseline_bac_mean": metrics["baseline_test_balanced_accuracy"].mean()}


def training_history(folder: str | Path, name: str | None = None) -> pd.DataFrame:
    """The epoch-by-epoch training history of a CNN task folder (its ``training`` folder's history)."""
    path = Path(folder) / TaskFiles.TRAINING / TaskFiles.HISTORY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: task {name or Path(folder).name} has not been trained; run it first")
    return pd.read_csv(path)


def read_histories(tasks: Sequence[EmbeddingTask]) -> dict[str, pd.DataFrame]:
    """The training history (one row per epoch) of each finished task, by task name."""
    return {task.name: training_history(task.folder, task.name) for task in tasks}


def confusion_table(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> pd.DataFrame:
    """Counts of true class (rows, ``true``) × predicted class (columns, ``predicted``), every class of
    ``classes`` in both, in that order (zero rows and columns included)."""
    confusion = pd.crosstab(pd.Categorical(true, classes), pd.Categorical(predicted, classes), dropna=False)
    confusion.index.name, confusion.columns.name = "true", "predicted"
    return confusion


@dataclass(frozen=True)
class PerturbationSimilarity:
    """Gene perturbation embeddings relative to the control (see :func:`perturbation_similarity`)."""

    shifts: pd.DataFrame  #: embedding minus the control's, one row per perturbation (control excluded)
    similarity: pd.DataFrame  #: cosine similarity of the shifts, perturbation × perturbation
    order: list[str]  #: the perturbations in the leaf order of an average-linkage (cosine) clustering


def perturbation_similarity(genes: ad.AnnData, control: str) -> PerturbationSimilarity:
    """The direction in which each perturbation moves nuclei away from the control, and how alike they are.

    Parameters
    ----------
    genes
        Gene perturbation embeddings (:func:`~image2reg.cnn.embed.gene_embeddings`), one row per condition,
        named by it, the control included.
    control
        The control's row name.

    Returns
    -------
    PerturbationSimilarity
    """
    if control not in genes.obs_names:
        raise KeyError(f"no embedding for the control {control!r}")
    shifts = pd.DataFrame(genes.X - genes[control].X, index=genes.obs_names).drop(index=control)
    norms = np.linalg.norm(shifts.to_numpy(), axis=1, keepdims=True)
    unit = shifts.to_numpy() / np.where(norms > 0, norms, 1)
    similarity = pd.DataFrame(unit @ unit.T, index=shifts.index, columns=shifts.index)
    order = list(shifts.index[leaves_list(linkage(unit, method="average", metric="cosine"))])
    return PerturbationSimilarity(shifts=shifts, similarity=similarity, order=order)


def module_labels(truth: pd.DataFrame | None) -> pd.Series | None:
    """Each gene's true regulatory module as text (``true module``), to colour figures by; None without truth."""
    return truth["module"].astype(str).rename("true module") if truth is not None else None


def control_scaled(nuclei: ad.AnnData, control: str, model: str = "model") -> np.ndarray:
    """The nucleus embeddings, each standardised against the control nuclei of the model that embedded it.

    Stage 03 embeds each nucleus with the fold model that held it out; laid out together as they are, the
    nuclei would group by model. :func:`~image2reg.profiling.activity.scale_by_control` puts every model's
    space on its control's footing first.
    """
    is_control = (nuclei.obs["Metadata_Gene"].astype(str) == control).to_numpy()
    return scale_by_control(np.asarray(nuclei.X), is_control, nuclei.obs[model], control=control, what="nucleus")


def nucleus_umap(values: np.ndarray, *, max_nuclei: int, n_neighbors: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """UMAP of a random sample of nucleus embeddings.

    Parameters
    ----------
    values
        ``(n, d)`` nucleus embeddings.
    max_nuclei
        The most nuclei laid out (drawn without replacement with ``numpy.random.default_rng(seed)``).
    n_neighbors, seed
        UMAP's ``n_neighbors`` and ``random_state``.

    Returns
    -------
    sample, coordinates
        The sampled rows (sorted positions) and their ``(len(sample), 2)`` UMAP coordinates.
    """
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(max_nuclei, n), replace=False))
    return sample, umap_2d(values[sample], n_neighbors, seed)


def gene_umap(shifts: pd.DataFrame, seed: int) -> np.ndarray | None:
    """UMAP (cosine, up to 10 neighbours) of the gene perturbation shifts of :func:`perturbation_similarity`;
    None with fewer than 5 perturbations, too few to lay out."""
    if len(shifts) < 5:
        return None
    return umap_2d(shifts.to_numpy(), 10, seed, metric="cosine")


def embedding_activity(nuclei: ad.AnnData, profiles: pd.DataFrame, control: str, seed: int = 0) -> pd.DataFrame:
    """Phenotypic activity (:func:`~image2reg.profiling.activity.field_activity`) of each condition from the
    CNN embeddings and from the classical profiles of the same nuclei.

    Parameters
    ----------
    nuclei
        Nucleus embeddings (``obs``: ``nucleus``, ``model``, ``image_path``, ``Metadata_Gene``,
        ``Metadata_Plate``, ``Metadata_Well``); each field is scaled against the control fields embedded by
        the same ``model``, as embeddings of different models live in different spaces.
    profiles
        The classical profiles (stage 02), indexed by nucleus; non-finite values are replaced by their
        feature's ``numpy.nanmedian`` over the embedded nuclei.
    control, seed
        The control condition and the seed of the permutation nulls.

    Returns
    -------
    pandas.DataFrame
        :func:`~image2reg.profiling.activity.field_activity` of the embeddings, with the classical profiles'
        ``mean_average_precision_classical`` and ``active_classical``.
    """
    obs = nuclei.obs.reset_index(drop=True)
    absent = pd.Index(obs["nucleus"]).difference(profiles.index)
    if len(absent):
        raise KeyError(f"{len(absent)} embedded nuclei have no classical profile, e.g. {list(absent[:5])}")
    # each fold model embedded the fields it held out, in a space of its own: scale within each model's space
    activity = field_activity(np.asarray(nuclei.X), obs, control, seed=seed, model="model")
    values = profiles.loc[obs["nucleus"].to_numpy()].to_numpy(np.float64)
    values = np.where(np.isfinite(values), values, np.nanmedian(values, axis=0))
    classical = field_activity(values, obs, control, seed=seed)
    return activity.join(classical[["mean_average_precision", "active"]], rsuffix="_classical")


def activity_summary(activity: pd.DataFrame) -> dict[str, Any]:
    """Active perturbations and mean mAP of the CNN embeddings and the classical profiles
    (``active_cnn``, ``active_classical``, ``map_cnn``, ``map_classical``) of :func:`embedding_activity`."""
    return {"active_cnn": int(activity["active"].sum()), "active_classical": int(activity["active_classical"].sum()),
            "map_cnn": float(activity["mean_average_precision"].mean()),
            "map_classical": float(activity["mean_average_precision_classical"].mean())}


def embeddings_summary(metrics: pd.DataFrame, activity: pd.DataFrame) -> dict[str, Any]:
    """Stage 03's ``summary.json``: :func:`multiclass_summary`, then :func:`activity_summary`."""
    return {**multiclass_summary(metrics), **activity_summary(activity)}


def loto_embeddings(tasks: Sequence[EmbeddingTask], classes: Sequence[str]) -> tuple[ad.AnnData, pd.DataFrame]:
    """The gene perturbation embeddings of every LOTO model, and where each model puts its unseen target.

    Parameters
    ----------
    tasks
        Finished LOTO tasks (:func:`~image2reg.cnn.embed.loto_tasks`).
    classes
        The columns of the assignment table (:func:`class_labels`).

    Returns
    -------
    embeddings, assignments
        One row per model and condition (``obs``: ``model``, ``gene``, ``n_nuclei``, ``is_target``
        marking the model's held-out condition), the mean embedding of the held-out target's nuclei and
        of each other condition's test nuclei; held-out target (in task order) × class: the fraction of
        the target's nuclei predicted as the class.
    """
    parts, assignments = [], {}
    for task in tasks:
        embedded = read_embeddings([task])
        part = gene_embeddings(embedded, by=("model", "Metadata_Gene"))
        part.obs["is_target"] = (part.obs["Metadata_Gene"] == task.held_out).to_numpy()
        parts.append(part)
        target = embedded.obs[embedded.obs["split"] == "held_out"]
        assignments[task.held_out] = target["predicted_class"].value_counts(normalize=True)
    loto = ad.concat(parts, merge="same")
    loto.obs = loto.obs.rename(columns={"Metadata_Gene": "gene"})
    assignment = (pd.DataFrame(assignments).T.reindex(index=[task.held_out for task in tasks], columns=classes)
                  .fillna(0))
    return loto, assignment


def held_out_targets(loto: ad.AnnData, genes: Sequence[str]) -> pd.Series:
    """The held-out target of each row of :func:`loto_embeddings` that is one; a RuntimeError names the
    ``genes`` without an embedding from a model that never saw them."""
    targets = loto.obs.loc[loto.obs["is_target"], "gene"]
    missing = sorted(set(genes) - set(targets))
    if missing:
        raise RuntimeError(f"no LOTO embedding for {missing}")
    return targets


def nearest_trained_genes(loto: ad.AnnData, control: str, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each LOTO model, the trained gene whose embedding is nearest to the unseen target's.

    Within a model, embeddings are centred on the control's and compared by cosine similarity.

    Parameters
    ----------
    loto
        The embeddings of :func:`loto_embeddings`; a model holding out ``control`` is left out.
    control
        The control's condition.
    truth
        The synthetic world's genes (``module``), indexed by gene, or None.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``target`` (model order): ``nearest_trained_gene``, its ``cosine`` and, with ``truth``,
        ``same_module`` (the nearest gene is in the target's module) and ``chance`` (the share of the other
        genes in the target's module).
    """
    targets = loto.obs.loc[loto.obs["is_target"], ["model", "gene"]]
    rows = []
    for model, held_out in targets.itertuples(index=False):
        if held_out == control:
            continue
        block = loto[(loto.obs["model"] == model).to_numpy()]
        names = block.obs["gene"].to_numpy()
        shifts = np.asarray(block.X) - np.asarray(block.X)[names == control]
        keep = names != control
        shifts, names = shifts[keep], names[keep]
        unit = shifts / np.maximum(np.linalg.norm(shifts, axis=1, keepdims=True), 1e-12)
        at = int(np.flatnonzero(names == held_out)[0])
        cosine = unit @ unit[at]
        others = np.flatnonzero(names != held_out)
        nearest = names[others[np.argmax(cosine[others])]]
        row = {"target": held_out, "nearest_trained_gene": nearest, "cosine": float(cosine[others].max())}
        if truth is not None:
            module = truth.loc[held_out, "module"]
            row["same_module"] = bool(truth.loc[nearest, "module"] == module)
            row["chance"] = float(np.mean(truth.loc[names[others], "module"].to_numpy() == module))
        rows.append(row)
    return pd.DataFrame(rows).set_index("target")


def loto_summary(metrics: pd.DataFrame, n_targets: int, neighbours: pd.DataFrame) -> dict[str, Any]:
    """Stage 04's ``summary.json``: ``models``, ``targets``, the models' mean ``test_bac_mean`` and ``chance``
    and, when ``neighbours`` (:func:`nearest_trained_genes`) has the truth's columns, ``nearest_same_module``
    and its ``nearest_same_module_chance``."""
    summary = {"models": len(metrics), "targets": n_targets,
               "test_bac_mean": float(metrics["test_balanced_accuracy"].mean()),
               "chance": float(metrics["chance"].mean())}
    if "same_module" in neighbours:
        summary.update(nearest_same_module=float(neighbours["same_module"].mean()),
                       nearest_same_module_chance=float(neighbours["chance"].mean()))
    return summary


# --------------------------------------------------------------------------------------------
# Stage 01b: what the self-supervised encoder learnt
# --------------------------------------------------------------------------------------------
def pretrain_probe(images_dir: str | Path, trunk: torch.nn.Module, params: PretrainStageParams, *,
                   max_nuclei: int = 3000, seed: int = 0) -> pd.DataFrame:
    """How much of each classical feature a linear read-out of the pretrained trunk explains, against the null
    of the same trunk with random weights.

    A seeded sample of the QC-passing nuclei is described by its classical features
    (:func:`~image2reg.profiling.features.nucleus_profiles`) and embedded by ``trunk`` and by a randomly
    initialised trunk of the same shape (seeded); :func:`~image2reg.cnn.pretrain.probe_features` gives each
    feature's cross-validated R², the folds grouped by field.

    Returns
    -------
    pandas.DataFrame
        One row per feature: ``feature``, ``group``, ``r2_pretrained``, ``r2_random``.
    """
    nuclei = pd.read_parquet(Path(images_dir) / artifact_name("images", "nuclei"))
    if "QC_pass" in nuclei:
        nuclei = nuclei[nuclei["QC_pass"]]
    if nuclei.empty:
        raise ValueError(f"{images_dir}: no QC-passing nucleus to probe the encoder with")
    rows = np.sort(np.random.default_rng(seed).choice(len(nuclei), min(max_nuclei, len(nuclei)), replace=False))
    sample = nuclei.iloc[rows]
    profiles = nucleus_profiles(images_dir, sample)
    crops = load_crops(images_dir, sample["crop_index"].to_numpy())
    torch.manual_seed(seed)
    random = resnet18(in_channels=1, num_classes=params.branch_dim, width=params.width)
    groups = sample["image_path"].astype(str).to_numpy()
    scores = {}
    for name, model in (("pretrained", trunk), ("random", random)):
        embeddings = embed_crops(model, crops, input_size=params.input_size)
        scores[name] = probe_features(embeddings, profiles, groups=groups, seed=seed).set_index(["feature", "group"])
    table = scores["pretrained"][["r2"]].join(scores["random"][["r2"]], lsuffix="_pretrained", rsuffix="_random")
    return table.reset_index()


def probe_summary(probe: pd.DataFrame) -> pd.DataFrame:
    """Mean R² per feature group (rows) of the pretrained and the random trunk (columns)."""
    summary = probe.groupby("group")[["r2_pretrained", "r2_random"]].mean()
    return summary.rename(columns={"r2_pretrained": "pretrained", "r2_random": "random weights"})


def pretrain_summary(history: pd.DataFrame, n_nuclei: int, seconds: float, probe: pd.DataFrame) -> dict[str, float]:
    """Stage 01b's ``summary.json``: epochs, nuclei, time, the last epoch's loss and pair accuracy, and the mean
    probe R² per feature group for the pretrained trunk and its random-weight null."""
    last = history.iloc[-1]
    summary = {"epochs": int(last["epoch"]), "nuclei": int(n_nuclei), "seconds": round(float(seconds), 1),
               "final_loss": float(last["loss"]), "final_pair_accuracy": float(last["accuracy"])}
    for group, row in probe_summary(probe).iterrows():
        summary[f"probe_r2_{group}"] = float(row["pretrained"])
        summary[f"probe_r2_{group}_random"] = float(row["random weights"])
    return summary
