"""Nucleus and gene perturbation embeddings: the multi-class CNN (method §4.4) and LOTO CNNs (§4.5).

Both train an :class:`~image2reg.cnn.ensemble.ImageEnsemble` over the impactful genes and the
control, and embed nuclei the model has never trained on with its latent layer:

- **multi-class, k-fold** (stage 03): one task per fold; the fold's test nuclei are embedded, so
  over the k folds every usable nucleus is embedded exactly once, by a model that did not see it;
- **leave one target out** (stage 04): one task per held-out target ``T``; the model is trained
  without ``T``, then embeds all of ``T``'s nuclei (``split == "held_out"``) and the test nuclei
  of the other conditions. The gene perturbation embeddings the translation (stage 06) uses for
  target ``T`` come from this model only, so ``T`` is unseen by everything it is compared with.
  The reference did not say which nuclei of the training conditions it averaged (method §4.5,
  INFERRED); the test part is used here, as those nuclei were not trained on either.

A task writes ``embeddings.h5ad`` (AnnData: ``X`` the latents, float32; ``obs`` the nucleus's
metadata, ``split``, ``label``, ``predicted`` and the predicted class name; ``uns["classes"]``),
then ``metrics.json`` and ``done.json`` (:func:`~image2reg.execute.run_once`). The *gene
perturbation embedding* of a condition is the mean of its nuclei's embeddings
(:func:`gene_embeddings`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from image2reg.cnn.splits import HELD_OUT, TEST, TRAIN, VAL, loto_splits, multiclass_splits
from image2reg.cnn.tasks import EncoderSpec, best_epoch_metrics, fit_and_predict
from image2reg.cnn.train import TrainingParams
from image2reg.execute import ExecutionParams, run_once, run_tasks
from image2reg.layout import TaskFiles, artifact_name, atomic_path
from image2reg.profiling.activity import scale_by_control
from image2reg.profiling.baseline import baseline_classifier

logger = logging.getLogger("image2reg")

EMBEDDINGS = TaskFiles.EMBEDDINGS
#: Nucleus-table columns copied into the embeddings' ``obs`` (when present).
OBS_COLUMNS = ("Metadata_Gene", "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Allele", "image_path",
               "crop_index")


@dataclass(frozen=True)
class EmbeddingTask:
    """One model of stage 03 (``kind="multiclass"``, one fold) or stage 04 (``kind="loto"``, one target).

    Plain picklable data. ``genes`` are the model's perturbations (without the control); the
    splits are :func:`~image2reg.cnn.splits.multiclass_splits` (all folds drawn at once, this task
    training ``fold``) or :func:`~image2reg.cnn.splits.loto_splits` without ``held_out``.
    ``baseline_profiles``, when given, is the classical-profile table the linear baseline is
    fitted on over the same split.
    """

    kind: Literal["multiclass", "loto"]
    genes: tuple[str, ...]
    images_dir: str
    out_dir: str
    fold: int = 0
    held_out: str | None = None
    seed: int = 1234
    control: str = "EMPTY"
    n_folds: int = 4
    n_inner: int = 5
    undersample_control: bool = True
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    training: TrainingParams = field(default_factory=TrainingParams)
    torch_threads: int | None = None
    baseline_profiles: str | None = None

    @property
    def name(self) -> str:
        """``fold-<k>`` or the held-out condition: the task's folder under ``out_dir``."""
        return f"fold-{self.fold}" if self.kind == "multiclass" else str(self.held_out)

    @property
    def folder(self) -> Path:
        return Path(self.out_dir) / self.name


def multiclass_tasks(genes: Sequence[str], *, n_folds: int, **common: Any) -> list[EmbeddingTask]:
    """The k tasks of the multi-class model, one per fold (``common``: the other :class:`EmbeddingTask` fields)."""
    genes = _checked_genes(genes, common.get("control", "EMPTY"))
    return [EmbeddingTask(kind="multiclass", genes=genes, fold=fold, n_folds=n_folds, **common)
            for fold in range(n_folds)]


def loto_tasks(genes: Sequence[str], *, include_control: bool = False, n_folds: int = 5, n_inner: int = 4,
               **common: Any) -> list[EmbeddingTask]:
    """One LOTO task per gene (and one without the control if ``include_control``).

    ``n_folds`` and ``n_inner`` default to the reference's 5 and 4 (a 60/20/20 split).
    """
    control = common.get("control", "EMPTY")
    genes = _checked_genes(genes, control)
    held_out = [*genes, control] if include_control else list(genes)
    return [EmbeddingTask(kind="loto", genes=genes, held_out=target, n_folds=n_folds, n_inner=n_inner, **common)
            for target in held_out]


def run_embedding_task(task: EmbeddingTask, progress_bar: bool = False) -> dict[str, Any]:
    """Train, embed and score one task, unless its ``done.json`` exists; returns its metrics.

    Metrics: the task's name, fold or held-out condition, nuclei per split, best epoch, epochs,
    early stop, best-epoch train/validation metrics, ``test_balanced_accuracy``,
    ``test_accuracy``, ``chance`` (1 / classes) and, with baseline profiles,
    ``baseline_test_balanced_accuracy``.
    """
    return run_once(task.folder, lambda: _train_and_embed(task, progress_bar), task.torch_threads)


def run_embedding_tasks(tasks: Sequence[EmbeddingTask], execution: ExecutionParams | None = None,
                        progress_bar: bool = True) -> pd.DataFrame:
    """Run tasks where ``execution`` says (finished ones are only read); one metrics row per task, in order."""
    return pd.DataFrame(run_tasks(run_embedding_task, tasks, execution, progress_bar=progress_bar))


def read_embeddings(tasks: Sequence[EmbeddingTask]) -> ad.AnnData:
    """The finished tasks' nucleus embeddings in one AnnData, ``obs["model"]`` naming the task.

    ``obs_names`` are ``<model>/<nucleus>`` (a nucleus may be embedded by several LOTO models).
    """
    parts = []
    for task in tasks:
        path = task.folder / EMBEDDINGS
        if not path.exists():
            raise FileNotFoundError(f"{path}: task {task.name} has not finished; run it first")
        part = ad.read_h5ad(path)
        part.obs.insert(0, "model", task.name)
        part.obs_names = [f"{task.name}/{name}" for name in part.obs_names]
        parts.append(part)
    if not parts:
        raise ValueError("no tasks given")
    combined = ad.concat(parts, merge="first")  # per-model uns (classes, held_out) differ: not merged
    combined.obs["model"] = pd.Categorical(combined.obs["model"], categories=[task.name for task in tasks])
    return combined


def gene_embeddings(nuclei: ad.AnnData, by: Sequence[str] = ("Metadata_Gene",), *, control: str | None = None,
                    model: str | None = None) -> ad.AnnData:
    """Mean embedding per group of nuclei (default: per condition): the gene perturbation embeddings.

    Embeddings of separately trained models live in spaces of their own. Stage 03 embeds each nucleus
    with the fold model that held its field out, so every condition's nuclei come from several models:
    pooled as they are, a condition's mean would depend on how its nuclei fall over the models. With
    ``control`` (the control's ``Metadata_Gene``) every nucleus is first standardised against the
    control nuclei of its own model (``model``: the ``obs`` column naming it; None: one model), with
    :func:`~image2reg.profiling.activity.scale_by_control`; the means are then in control SD units,
    the control's at 0.

    Returns an AnnData with one row per group (``obs``: the group keys and ``n_nuclei``; names
    joined by ``/`` when grouping by several keys) and the same variables; ``uns["scaling"]`` says
    how the nuclei were scaled.
    """
    by = list(by)
    missing = [column for column in [*by, *([model] if model else [])] if column not in nuclei.obs]
    if missing:
        raise KeyError(f"the embeddings' obs lacks {missing}")
    if model and control is None:
        raise ValueError("model spaces are put on a common footing by their control: give control as well")
    values = np.asarray(nuclei.X, dtype=np.float64)
    scaling = "none"
    if control is not None:
        is_control = (nuclei.obs["Metadata_Gene"].astype(str) == control).to_numpy()
        values = scale_by_control(values, is_control, nuclei.obs[model] if model else None, control=control,
                                  what="nucleus")
        scaling = f"standardised against the control {control!r}" + (f" of each {model}" if model else "")
    keys = nuclei.obs[by].astype(str)
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=True)
    counts = np.bincount(codes, minlength=len(uniques))
    sums = np.zeros((len(uniques), nuclei.n_vars), np.float64)
    np.add.at(sums, codes, values)
    obs = pd.DataFrame(list(uniques), columns=by)
    obs["n_nuclei"] = counts
    obs.index = ["/".join(values) for values in obs[by].itertuples(index=False)]
    genes = ad.AnnData((sums / counts[:, None]).astype(np.float32), obs=obs, var=nuclei.var.copy())
    genes.uns["scaling"] = scaling
    return genes


def _checked_genes(genes: Sequence[str], control: str) -> tuple[str, ...]:
    if isinstance(genes, str):
        raise ValueError(f"genes must be a list of gene names, not the string {genes!r}")
    genes = tuple(dict.fromkeys(genes))
    if control in genes:
        raise ValueError(f"the control {control!r} is a class of its own; do not list it among the genes")
    if len(genes) < 1:
        raise ValueError("no genes to train on")
    return genes


def _splits(task: EmbeddingTask, nuclei: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    if task.kind == "multiclass":
        return multiclass_splits(nuclei, task.genes, control=task.control, n_folds=task.n_folds,
                                 n_inner=task.n_inner, seed=task.seed, undersample_control=task.undersample_control)
    if task.kind == "loto":
        return loto_splits(nuclei, task.genes, task.held_out, control=task.control, n_folds=task.n_folds,
                           n_inner=task.n_inner, seed=task.seed, undersample_control=task.undersample_control)
    raise ValueError(f"unknown task kind {task.kind!r}")


def _train_and_embed(task: EmbeddingTask, progress_bar: bool) -> dict[str, Any]:
    nuclei = pd.read_parquet(Path(task.images_dir) / artifact_name("images", "nuclei"))
    splits, classes = _splits(task, nuclei)
    fold = task.fold if task.kind == "multiclass" else None
    embedded = [TEST] if task.kind == "multiclass" else [TEST, HELD_OUT]
    result, sizes, outputs = fit_and_predict(nuclei, splits, n_classes=len(classes), images_dir=task.images_dir,
                                             folder=task.folder, encoder=task.encoder, training=task.training,
                                             predict_splits=embedded, fold=fold, progress_bar=progress_bar)
    _write_embeddings(task, nuclei, outputs, classes)
    test = outputs[TEST]
    metrics = {
        "model": task.name, "kind": task.kind, "fold": task.fold if task.kind == "multiclass" else None,
        "held_out": task.held_out, "n_classes": len(classes), "n_train": sizes[TRAIN], "n_val": sizes[VAL],
        "n_test": sizes[TEST], "n_held_out": sizes.get(HELD_OUT, 0), **best_epoch_metrics(result),
        "test_accuracy": float(np.mean(test["labels"] == test["predicted"])),
        "test_balanced_accuracy": float(balanced_accuracy_score(test["labels"], test["predicted"])),
        "chance": 1.0 / len(classes),
    }
    if task.baseline_profiles is not None:
        baseline = baseline_classifier(pd.read_parquet(task.baseline_profiles), splits, fold=fold, seed=task.seed)
        metrics["baseline_test_balanced_accuracy"] = float(baseline["test_balanced_accuracy"])
    return metrics


def _write_embeddings(task: EmbeddingTask, nuclei: pd.DataFrame, outputs: dict[str, dict[str, np.ndarray]],
                      classes: list[str]) -> None:
    frames, latents = [], []
    for split, output in outputs.items():
        rows = nuclei.loc[output["indices"], [column for column in OBS_COLUMNS if column in nuclei]].copy()
        rows["nucleus"] = output["indices"]
        rows["split"] = split
        rows["label"] = output["labels"]
        rows["predicted"] = output["predicted"]
        frames.append(rows)
        latents.append(output["latents"])
    obs = pd.concat(frames)
    obs["predicted_class"] = np.asarray(classes, dtype=object)[obs["predicted"].to_numpy()]
    obs.index = obs["nucleus"].astype(str).to_numpy()
    for column in obs.columns:
        if obs[column].dtype == object:
            obs[column] = obs[column].astype(str)
    embeddings = ad.AnnData(np.concatenate(latents).astype(np.float32), obs=obs)
    embeddings.var_names = [f"latent_{k}" for k in range(embeddings.n_vars)]
    embeddings.uns["classes"] = list(classes)
    embeddings.uns["model"] = task.name
    if task.held_out is not None:
        embeddings.uns["held_out"] = task.held_out
    with atomic_path(task.folder / EMBEDDINGS) as tmp:
        embeddings.write_h5ad(tmp)
