"""The specificity screen (method §4.3): one binary CNN per gene against the control, k-fold CV.

For every gene and fold, a small :class:`~image2reg.cnn.ensemble.ImageEnsemble` (2 outputs, latent
512) learns to tell the gene's nuclei from the control's on the fold's training part (model
selection on its validation part, :func:`~image2reg.cnn.train.train_model`); its balanced accuracy
on the fold's test part says how distinguishable the perturbation is. A gene's **specificity
score** is the mean test balanced accuracy over its folds, and the impactful genes are the top of
the ranking by that score.

- :class:`ScreenTask` and :func:`screen_tasks`: one task per (gene, fold), plain picklable data
  generated in code from the stage's params (no config files per gene);
- :func:`run_screen_task`: one training, idempotent and resumable, its files in
  ``<out_dir>/<gene>/fold-<k>/``;
- :func:`run_screen`: all tasks in this process, a process pool or a Dask cluster, one table;
- :func:`specificity_scores` and :func:`select_impactful`: the ranking and its cut (knee or top N).

Files of a task: ``training/`` (the checkpoint folder of :func:`~image2reg.cnn.train.train_model`,
so a killed task resumes at its last epoch), ``metrics.json`` and, written last, ``done.json``
holding the same metrics: a task with ``done.json`` is finished and is not run again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from image2reg.cnn.splits import CONDITION, FIELD, QC_PASS, TEST, TRAIN, VAL, min_fields, screen_splits
from image2reg.cnn.tasks import EncoderSpec, best_epoch_metrics, fit_and_predict
from image2reg.cnn.train import TrainingParams
from image2reg.execute import ExecutionParams, run_once, run_tasks
from image2reg.layout import artifact_name
from image2reg.profiling.baseline import baseline_classifier

logger = logging.getLogger("image2reg")

__all__ = ["RESULT_COLUMNS", "ScreenTask", "knee_position",
           "run_screen", "run_screen_task", "screen_tasks", "select_impactful", "specificity_scores", "task_folder"]
#: Least distance below the chord (in scaled units) that makes a knee: a straight ranking has none.
KNEE_TOLERANCE = 1e-9

#: Test balanced accuracy of the classical baseline on the same split (tasks with baseline profiles).
BASELINE_COLUMN = "baseline_test_balanced_accuracy"
#: Columns of the per-(gene, fold) table of :func:`run_screen`, in order.
RESULT_COLUMNS = (
    "gene", "fold", "n_train", "n_val", "n_test", "best_epoch", "epochs", "stopped_early",
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy",
    "test_loss", "test_accuracy", "test_balanced_accuracy",
)


@dataclass(frozen=True)
class ScreenTask:
    """One binary training of the screen: ``gene`` against ``control`` on fold ``fold``.

    Plain data (strings, numbers, tuples and a pydantic model), so it pickles to other processes.

    Attributes
    ----------
    gene, control
        The screened perturbation and the negative control.
    fold, n_folds, n_inner, seed
        The fold trained, and the arguments of :func:`~image2reg.cnn.splits.screen_splits` (the same
        for all folds of a gene, so the folds' test parts partition its nuclei).
    images_dir
        The stage-01 folder (``nuclei.parquet``, ``nuclei.zarr``).
    out_dir
        The screen's output folder; the task writes to ``<out_dir>/<gene>/fold-<fold>/``.
    branches, latent_dim, input_size, width
        The :class:`~image2reg.cnn.ensemble.ImageEnsemble` (2 outputs); the screen's latent is 512.
    training
        Optimiser, early stopping, seeds, device and batch size.
    region_size
        Side (px) of the field patches of the ``"region"`` branch; only read when it is requested.
    illumination
        ``(plate, illumination function file or None)`` pairs for the region patches.
    torch_threads
        Threads torch may use while the task runs (None: torch's default); set it to the cores per
        worker when several tasks share a machine. CPU results are bit-identical across backends
        for the same thread count only (Dask workers default to one thread); other counts sum in
        another order and differ in the last bits.
    pretrained
        Local torchvision ResNet18 weights for every branch, or None (random initialisation).
    baseline_profiles
        Parquet file of :func:`~image2reg.profiling.features.nucleus_profiles`: when given, the
        classical baseline is fitted on the same split and its test balanced accuracy recorded as
        ``baseline_test_balanced_accuracy``.
    """

    gene: str
    fold: int
    images_dir: str
    out_dir: str
    seed: int = 1234
    control: str = "EMPTY"
    n_folds: int = 4
    n_inner: int = 5
    branches: tuple[str, ...] = ("nucleus",)
    latent_dim: int = 512
    input_size: int = 224
    width: int = 64
    training: TrainingParams = field(default_factory=TrainingParams)
    region_size: int = 448
    illumination: tuple[tuple[str, str | None], ...] = ()
    torch_threads: int | None = None
    pretrained: str | None = None
    baseline_profiles: str | None = None

    @property
    def folder(self) -> Path:
        """Where this task's files live."""
        return task_folder(self.out_dir, self.gene, self.fold)


def task_folder(out_dir: str | Path, gene: str, fold: int) -> Path:
    """``<out_dir>/<gene>/fold-<fold>``: the files of one (gene, fold) of the screen."""
    return Path(out_dir) / gene / f"fold-{fold}"


def screen_tasks(
    nuclei: pd.DataFrame,
    genes: Sequence[str] | None = None,
    *,
    images_dir: str | Path,
    out_dir: str | Path,
    control: str = "EMPTY",
    n_folds: int = 4,
    n_inner: int = 5,
    seed: int = 1234,
    branches: Sequence[str] = ("nucleus",),
    latent_dim: int = 512,
    input_size: int = 224,
    width: int = 64,
    training: TrainingParams | None = None,
    region_size: int = 448,
    illumination: Mapping[str, str | Path | None] | None = None,
    torch_threads: int | None = None,
    pretrained: str | Path | None = None,
    baseline_profiles: str | Path | None = None,
) -> tuple[list[ScreenTask], pd.Series]:
    """The screen's tasks, one per (gene, fold), and the genes too small to screen.

    A gene needs :func:`~image2reg.cnn.splits.min_fields` fields of view passing QC to be present
    in every split of every fold; genes with fewer are skipped (the splits would refuse them) and
    returned, so that the stage can report them.

    Parameters
    ----------
    nuclei
        The nucleus table of stage 01 (``Metadata_Gene``, ``image_path``, ``QC_pass``).
    genes
        The genes to screen, in the order of the tasks; default: every condition but the control,
        sorted.
    images_dir
        The stage-01 folder the tasks read.
    out_dir
        The screen's output folder.
    control, n_folds, n_inner, seed
        Arguments of :func:`~image2reg.cnn.splits.screen_splits`.
    branches, latent_dim, input_size, width
        The model (see :class:`ScreenTask`); nucleus branch only by default, which is fast.
    training
        How each model is trained (default: the reference's settings, :class:`TrainingParams`).
    region_size, illumination
        Patch side and plate → illumination function file, for the ``"region"`` branch.
    torch_threads
        Threads torch may use in each task (None: torch's default).
    pretrained, baseline_profiles
        ImageNet weights file and classical-profile table (see :class:`ScreenTask`), or None.

    Returns
    -------
    tasks : list of ScreenTask
        Gene by gene in the order of ``genes``, folds ``0 … n_folds - 1`` within a gene.
    skipped : pandas.Series
        ``n_fields`` (QC-passing fields of view) of each skipped gene, indexed by ``gene``.
    """
    conditions = set(nuclei[CONDITION])
    if genes is None:
        genes = sorted(conditions - {control})
    elif isinstance(genes, str):
        raise ValueError(f"genes must be a list of gene names, not the string {genes!r}")
    genes = list(dict.fromkeys(genes))
    unknown = sorted(set(genes) - conditions)
    if unknown:
        raise ValueError(f"unknown genes {unknown}: not in the nucleus table's {CONDITION} column")
    if control in genes:
        raise ValueError(f"the control {control!r} cannot be screened against itself")
    if "region" in branches and illumination is None:
        raise ValueError("the region branch needs illumination: plate -> function file (or None for none)")
    passing = nuclei.loc[nuclei[QC_PASS].astype(bool)]
    n_fields = passing.groupby(CONDITION)[FIELD].nunique().reindex([*genes, control], fill_value=0)
    needed = min_fields(n_folds, n_inner)
    if n_fields[control] < needed:
        raise ValueError(f"the control {control!r} has {n_fields[control]} fields of view passing QC; "
                         f"{n_folds} folds with {n_inner} inner folds need {needed}")
    skipped = n_fields[genes][n_fields[genes] < needed].rename("n_fields").rename_axis("gene")
    if len(skipped):
        logger.warning("%d genes have fewer than %d fields of view passing QC and are not screened: %s",
                       len(skipped), needed, ", ".join(skipped.index))
    common = dict(images_dir=str(images_dir), out_dir=str(out_dir), seed=seed, control=control, n_folds=n_folds,
                  n_inner=n_inner, branches=tuple(branches), latent_dim=latent_dim, input_size=input_size,
                  width=width, training=training or TrainingParams(), region_size=region_size,
                  illumination=tuple((str(plate), None if path is None else str(path))
                                     for plate, path in sorted((illumination or {}).items())),
                  torch_threads=torch_threads, pretrained=None if pretrained is None else str(pretrained),
                  baseline_profiles=None if baseline_profiles is None else str(baseline_profiles))
    tasks = [ScreenTask(gene=gene, fold=fold, **common)
             for gene in genes if gene not in skipped.index for fold in range(n_folds)]
    logger.info("%d screen tasks: %d genes x %d folds", len(tasks), len(genes) - len(skipped), n_folds)
    return tasks, skipped


def run_screen_task(task: ScreenTask, progress_bar: bool = False) -> dict[str, Any]:
    """Train and test one binary model of the screen; returns its metrics (a row of :data:`RESULT_COLUMNS`).

    Nothing is done when the task's ``done.json`` exists: its metrics are returned. Otherwise the
    split of (gene, fold) is built, the model trained in ``training/`` (continuing from a checkpoint
    left by a killed run), the test part predicted, and ``metrics.json`` then ``done.json`` written
    atomically. The test loss is the unweighted mean cross-entropy (the control is undersampled to
    the gene's count, so the classes are about balanced); the train and validation metrics are
    those of the best epoch.

    Parameters
    ----------
    task
        What to train.
    progress_bar
        Show the training's bar over epochs.

    Returns
    -------
    dict
        Gene, fold, split sizes (nuclei), best epoch, epochs trained, whether training stopped
        early, and loss, accuracy and balanced accuracy on the train (augmented batches, no balanced
        accuracy), validation and test parts.
    """
    metrics = run_once(task.folder, lambda: _train_and_test(task, progress_bar), task.torch_threads)
    logger.info("%s fold %d: test balanced accuracy %.4f", task.gene, task.fold, metrics["test_balanced_accuracy"])
    return metrics


def run_screen(tasks: Sequence[ScreenTask], execution: ExecutionParams | None = None,
               progress_bar: bool = True) -> pd.DataFrame:
    """Run the screen's tasks where ``execution`` says and gather their metrics.

    Finished tasks (with ``done.json``) are read here and not sent out, so a rerun after an
    interruption trains only what is missing.

    Parameters
    ----------
    tasks
        From :func:`screen_tasks`.
    execution
        In this process, a local process pool or a Dask cluster (default: a local pool).
    progress_bar
        Show a bar over the tasks run.

    Returns
    -------
    pandas.DataFrame
        One row per task, in the order of ``tasks``, with the columns :data:`RESULT_COLUMNS` (and
        :data:`BASELINE_COLUMN` when the tasks fitted the classical baseline).
    """
    rows = run_tasks(run_screen_task, tasks, execution, progress_bar=progress_bar, desc="screen")
    extra = [BASELINE_COLUMN] if any(BASELINE_COLUMN in row for row in rows) else []
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *extra])


def specificity_scores(results: pd.DataFrame) -> pd.DataFrame:
    """Each gene's specificity score: the mean test balanced accuracy over its folds, ranked.

    Parameters
    ----------
    results
        The table of :func:`run_screen` (``gene``, ``fold``, ``test_balanced_accuracy``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``gene``, from the highest score down (ties by gene name): ``specificity_score``
        (mean), ``specificity_sd`` (sample SD over folds; NaN with one fold), ``n_folds`` and
        ``rank`` (1 for the highest).
    """
    missing = sorted({"gene", "fold", "test_balanced_accuracy"} - set(results.columns))
    if missing:
        raise ValueError(f"the screen results lack the columns {missing}")
    if results.empty:
        raise ValueError("no screen results")
    if results.duplicated(["gene", "fold"]).any():
        raise ValueError("the screen results hold a (gene, fold) more than once")
    grouped = results.groupby("gene")["test_balanced_accuracy"]
    scores = pd.DataFrame({"specificity_score": grouped.mean(), "specificity_sd": grouped.std(ddof=1),
                           "n_folds": grouped.size()})
    if scores["n_folds"].nunique() > 1:
        logger.warning("genes have different numbers of finished folds: %s",
                       scores["n_folds"].value_counts().sort_index().to_dict())
    scores = scores.rename_axis("gene").reset_index()
    scores = scores.sort_values(["specificity_score", "gene"], ascending=[False, True]).set_index("gene")
    scores["rank"] = np.arange(1, len(scores) + 1)
    return scores


def select_impactful(scores: pd.DataFrame, *, method: Literal["knee", "top_n"] = "knee",
                     top_n: int | None = None) -> list[str]:
    """The impactful genes: the top of the specificity ranking, cut at its knee or after ``top_n``.

    The knee rule: put the scores sorted from high to low at ``x = 0 … n-1``, scale both axes to
    [0, 1] and draw the chord from the first point to the last; the knee is the point farthest
    below the chord (where the steep head of the curve turns into its flat tail; for a convex
    decreasing curve this is the Kneedle knee without smoothing). The genes ranked *before* the
    knee are selected, as the reference kept the genes above its cut-off score. A curve with no
    point below its chord (a straight or concave ranking) has no knee (ValueError: use ``top_n``).
    The reference's knee (Kneedle, ``S=2``) fell at position 45 of 190; the authors kept the top 41
    instead (method §4.3).

    Parameters
    ----------
    scores
        The table of :func:`specificity_scores`.
    method
        ``"knee"`` or ``"top_n"``.
    top_n
        Number of genes kept with ``method="top_n"``.

    Returns
    -------
    list of str
        The selected genes, from the highest score down.
    """
    ranked = scores.sort_values("rank")
    genes = ranked.index.astype(str).tolist()
    if method == "top_n":
        if top_n is None or not 1 <= top_n <= len(genes):
            raise ValueError(f"top_n must be between 1 and the {len(genes)} ranked genes, got {top_n}")
        return genes[:top_n]
    if method != "knee":
        raise ValueError(f"method must be 'knee' or 'top_n', got {method!r}")
    if top_n is not None:
        raise ValueError("top_n applies to method='top_n' only")
    return genes[:knee_position(ranked["specificity_score"].to_numpy())]


def screen_summary(scores: pd.DataFrame, impactful: Sequence[str], skipped: pd.Series) -> dict[str, Any]:
    """The screen's headline numbers for ``summary.json``: genes screened and skipped, impactful genes, and
    the mean specificity score (test BAC, chance 0.5) of all screened and of the impactful genes, with the
    classical-feature baseline's where it ran."""
    summary: dict[str, Any] = {
        "screened": int(len(scores)), "skipped": int(len(skipped)), "impactful": int(len(impactful)),
        "impactful_genes": list(impactful), "chance": 0.5,
        "specificity_mean": float(scores["specificity_score"].mean()),
        "specificity_impactful_mean": float(scores.loc[list(impactful), "specificity_score"].mean()),
    }
    if "baseline_score" in scores:
        summary["baseline_mean"] = float(scores["baseline_score"].mean())
    return summary


def knee_position(sorted_scores: np.ndarray) -> int:
    """Position of the knee of scores sorted from high to low: the point farthest below the chord.

    See :func:`select_impactful`. Both axes are scaled to [0, 1], so the rule does not depend on the
    units of the scores or the number of genes; with the chord fixed, the vertical distance ranks
    the points as the perpendicular one does.
    """
    values = np.asarray(sorted_scores, dtype=np.float64)
    if len(values) < 3:
        raise ValueError(f"a knee needs at least 3 scores, got {len(values)}")
    if np.any(np.diff(values) > 0):
        raise ValueError("the scores must be sorted from high to low")
    span = values[0] - values[-1]
    if not span > 0:
        raise ValueError("all scores are equal: the ranking has no knee")
    x = np.linspace(0.0, 1.0, len(values))
    y = (values - values[-1]) / span
    below_chord = (1.0 - x) - y
    position = int(np.argmax(below_chord))
    if not below_chord[position] > KNEE_TOLERANCE:
        raise ValueError("no score lies below the chord of the ranking: it has no knee; use method='top_n'")
    return position


def _train_and_test(task: ScreenTask, progress_bar: bool) -> dict[str, Any]:
    nuclei = pd.read_parquet(Path(task.images_dir) / artifact_name("images", "nuclei"))
    splits = screen_splits(nuclei, task.gene, control=task.control, n_folds=task.n_folds, n_inner=task.n_inner,
                           seed=task.seed)
    encoder = EncoderSpec(branches=task.branches, latent_dim=task.latent_dim, input_size=task.input_size,
                          width=task.width, region_size=task.region_size, illumination=task.illumination,
                          pretrained=task.pretrained)
    result, sizes, outputs = fit_and_predict(nuclei, splits, n_classes=2, images_dir=task.images_dir,
                                             folder=task.folder, encoder=encoder, training=task.training,
                                             predict_splits=[TEST], fold=task.fold, progress_bar=progress_bar)
    test = outputs[TEST]
    labels, predicted = test["labels"], test["predicted"]
    test_loss = F.cross_entropy(torch.from_numpy(test["logits"]), torch.from_numpy(labels)).item()
    metrics = {
        "gene": task.gene, "fold": task.fold, "n_train": sizes[TRAIN], "n_val": sizes[VAL], "n_test": sizes[TEST],
        **best_epoch_metrics(result),
        "test_loss": test_loss, "test_accuracy": float(np.mean(labels == predicted)),
        "test_balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
    }
    if task.baseline_profiles is not None:
        profiles = pd.read_parquet(task.baseline_profiles)
        baseline = baseline_classifier(profiles, splits, fold=task.fold, seed=task.seed)
        metrics[BASELINE_COLUMN] = float(baseline["test_balanced_accuracy"])
    return metrics
