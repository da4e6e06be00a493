"""Figures of stages 02–04: the specificity screen, training, confusion, embeddings and LOTO."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from image2reg.plotting.data import EFFECT_COLORS

__all__ = ["screen_ranking", "screen_vs_truth", "cnn_vs_baseline", "fold_accuracies", "training_epochs",
           "training_histories", "confusion_heatmap", "embedding_scatter", "gene_clustermap", "activity_bars",
           "loto_overview", "pretraining_history", "probe_bars"]


def _class_colors(genes: pd.Index, classes: pd.Series | None) -> list[str]:
    if classes is None:
        return ["#34495e"] * len(genes)
    return [EFFECT_COLORS.get(str(classes.get(gene)), "#34495e") for gene in genes]


def _class_legend(ax, classes: pd.Series | None) -> None:
    if classes is not None:
        present = [name for name in EFFECT_COLORS if name in set(classes.astype(str))]
        ax.legend(handles=[Patch(color=EFFECT_COLORS[name], label=f"truth: {name}") for name in present],
                  frameon=False, fontsize=8)


def screen_ranking(scores: pd.DataFrame, results: pd.DataFrame, n_selected: int,
                   classes: pd.Series | None = None) -> Figure:
    """Specificity scores ranked with the impactful cut, and each gene's per-fold balanced accuracies.

    ``scores``: :func:`~image2reg.cnn.screen.specificity_scores`; ``results``: the per-(gene, fold)
    table; ``classes``: a gene → ground-truth effect class map (synthetic data) to colour by.
    """
    ranked = scores.sort_values("rank")
    genes = ranked.index
    colors = _class_colors(genes, classes)
    x = np.arange(len(genes))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.22 * len(genes)), 6.4), sharex=True)
    axes[0].bar(x, ranked["specificity_score"] - 0.5, bottom=0.5, color=colors,
                yerr=ranked["specificity_sd"].fillna(0), error_kw={"lw": 0.6})
    axes[0].axhline(0.5, color="k", lw=0.6)
    axes[0].axvline(n_selected - 0.5, color="#8e44ad", ls="--", lw=1.2)
    axes[0].text(n_selected - 0.4, axes[0].get_ylim()[1], f" {n_selected} impactful", color="#8e44ad",
                 va="top", fontsize=8)
    axes[0].set_ylabel("specificity score\n(mean test BAC ± SD)")
    _class_legend(axes[0], classes)
    per_fold = results.assign(position=results["gene"].map(dict(zip(genes, x))))
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(per_fold))
    axes[1].scatter(per_fold["position"] + jitter, per_fold["test_balanced_accuracy"], s=8, color="#34495e")
    axes[1].axhline(0.5, color="k", lw=0.6)
    axes[1].axvline(n_selected - 0.5, color="#8e44ad", ls="--", lw=1.2)
    axes[1].set_ylabel("test BAC per fold")
    axes[1].set_xticks(x, genes, rotation=90, fontsize=6)
    axes[0].set_title("Specificity screen: one binary CNN per gene and fold against the control", fontsize=10)
    fig.tight_layout()
    return fig


def screen_vs_truth(scores: pd.DataFrame, truth: pd.DataFrame, auroc: float,
                    fpr: np.ndarray, tpr: np.ndarray) -> Figure:
    """Specificity scores against the ground-truth effect sizes (synthetic world), with the ROC curve.

    ``truth``: indexed by gene with ``effect_size`` and ``effect_class``.
    """
    joined = scores.join(truth[["effect_size", "effect_class"]], how="inner")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, group in joined.groupby("effect_class"):
        axes[0].errorbar(group["effect_size"], group["specificity_score"], yerr=group["specificity_sd"].fillna(0),
                         fmt="o", ms=4, lw=0.6, color=EFFECT_COLORS.get(str(name), "#34495e"), label=str(name))
    axes[0].axhline(0.5, color="k", lw=0.6)
    axes[0].set_xlabel("true effect size (cell-noise SD)")
    axes[0].set_ylabel("specificity score")
    axes[0].legend(frameon=False, fontsize=8)
    axes[1].plot(fpr, tpr, color="#c0392b", lw=1.5)
    axes[1].plot([0, 1], [0, 1], color="k", lw=0.6, ls=":")
    axes[1].set_xlabel("false positive rate (no-effect genes)")
    axes[1].set_ylabel("true positive rate (impactful genes)")
    axes[1].set_title(f"impactful vs no-effect genes: AUROC = {auroc:.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def cnn_vs_baseline(table: pd.DataFrame, cnn: str, baseline: str, chance: float, label: str = "gene",
                    classes: pd.Series | None = None) -> Figure:
    """Balanced accuracy of the CNN against the classical-feature baseline, one point per row of ``table``."""
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    colors = _class_colors(table.index, classes)
    ax.scatter(table[baseline], table[cnn], s=18, c=colors)
    low = min(chance, table[[cnn, baseline]].min().min()) - 0.02
    high = max(table[[cnn, baseline]].max().max(), chance) + 0.02
    ax.plot([low, high], [low, high], color="k", lw=0.6, ls=":")
    ax.axhline(chance, color="#7f8c8d", lw=0.6)
    ax.axvline(chance, color="#7f8c8d", lw=0.6)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("classical features + linear model (test BAC)")
    ax.set_ylabel("CNN (test BAC)")
    better = int((table[cnn] > table[baseline]).sum())
    ax.set_title(f"CNN vs classical baseline, same splits\nCNN better for {better} of {len(table)} {label}s",
                 fontsize=10)
    _class_legend(ax, classes)
    fig.tight_layout()
    return fig


def fold_accuracies(results: pd.DataFrame, impactful: list[str], chance: float = 0.5) -> Figure:
    """Test balanced accuracy of every (gene, fold) model, impactful genes against the others, CNN against the
    classical baseline when it ran: the spread over folds that the per-gene means hide."""
    import seaborn as sns

    models = {"test_balanced_accuracy": "CNN", "baseline_test_balanced_accuracy": "classical features"}
    long = (results.assign(selected=np.where(results["gene"].isin(impactful), "impactful", "not selected"))
            .melt(id_vars=["gene", "fold", "selected"], value_vars=[c for c in models if c in results],
                  var_name="model", value_name="test BAC"))
    long["model"] = long["model"].map(models)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.boxplot(data=long, x="selected", y="test BAC", hue="model", order=["impactful", "not selected"],
                showfliers=False, ax=ax, palette=["#2c3e50", "#95a5a6"][: long["model"].nunique()])
    sns.stripplot(data=long, x="selected", y="test BAC", hue="model", order=["impactful", "not selected"],
                  dodge=True, size=2.5, alpha=0.6, palette="dark:k", legend=False, ax=ax)
    ax.axhline(chance, color="#c0392b", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("")
    ax.set_title("Test balanced accuracy per gene and fold", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def training_epochs(results: pd.DataFrame) -> Figure:
    """Histograms of the epochs each model trained and of its best epoch (early stopping on validation BAC).

    ``results``: one row per model with integer ``epochs`` and ``best_epoch`` (e.g. the screen's table).
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].hist(results["epochs"], bins=np.arange(results["epochs"].max() + 2) - 0.5, color="#34495e")
    axes[0].set_xlabel("epochs trained")
    axes[1].hist(results["best_epoch"], bins=np.arange(results["best_epoch"].max() + 2) - 0.5, color="#2980b9")
    axes[1].set_xlabel("best epoch")
    fig.tight_layout()
    return fig


def training_histories(histories: dict[str, pd.DataFrame]) -> Figure:
    """Validation balanced accuracy and train/validation loss per epoch of several trainings."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, history in histories.items():
        line, = axes[0].plot(history["epoch"], history["val_balanced_accuracy"], lw=1, label=name)
        axes[1].plot(history["epoch"], history["train_loss"], lw=1, color=line.get_color())
        axes[1].plot(history["epoch"], history["val_loss"], lw=1, ls="--", color=line.get_color())
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation balanced accuracy")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("loss (solid: train, dashed: validation)")
    if len(histories) <= 8:
        axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def confusion_heatmap(matrix: pd.DataFrame, title: str) -> Figure:
    """A row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    normalised = matrix.div(matrix.sum(axis=1).replace(0, 1), axis=0)
    size = max(5, 0.22 * len(matrix) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised.to_numpy(), cmap="viridis", vmin=0, vmax=max(normalised.to_numpy().max(), 1e-9))
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=90, fontsize=6)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.7, label="fraction of the true class")
    fig.tight_layout()
    return fig


def embedding_scatter(coordinates: np.ndarray, groups: pd.Series, title: str, *,
                      names: list[str] | None = None) -> Figure:
    """2-D embedding (e.g. UMAP) coloured by group; ``names`` (one per point) are written beside the points."""
    groups = pd.Series(groups).astype(str).reset_index(drop=True)
    levels = sorted(groups.unique())
    cmap = plt.get_cmap("tab20" if len(levels) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    size = 4 if len(groups) > 500 else 30
    for k, level in enumerate(levels):
        at = (groups == level).to_numpy()
        ax.scatter(coordinates[at, 0], coordinates[at, 1], s=size, color=cmap(k % cmap.N), label=level, alpha=0.8,
                   lw=0)
    for (x, y), name in zip(coordinates, names or []):
        ax.annotate(name, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if len(levels) <= 20:
        ax.legend(frameon=False, fontsize=6, markerscale=2 if size < 10 else 1, loc="center left",
                  bbox_to_anchor=(1, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def gene_clustermap(similarity: pd.DataFrame, order: list[str], groups: pd.Series | None = None,
                    title: str = "") -> Figure:
    """Gene–gene similarity heatmap in the order of a hierarchical clustering, with optional group colours."""
    ordered = similarity.loc[order, order]
    size = max(5, 0.2 * len(order) + 2)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(ordered.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(order)), order, rotation=90, fontsize=6)
    ax.set_yticks(range(len(order)), order, fontsize=6)
    if groups is not None:
        cmap = plt.get_cmap("tab10")
        codes = {name: k for k, name in enumerate(sorted(groups.astype(str).unique()))}
        for position, gene in enumerate(order):
            ax.get_yticklabels()[position].set_color(cmap(codes[str(groups.get(gene))] % 10))
    fig.colorbar(image, ax=ax, shrink=0.7, label="cosine similarity")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def activity_bars(activity: pd.DataFrame) -> Figure:
    """Each perturbation's mAP against the control, CNN embeddings beside classical profiles.

    ``activity``: one row per perturbation with ``mean_average_precision`` and
    ``mean_average_precision_classical`` (:func:`~image2reg.cnn.report.embedding_activity`).
    """
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(activity)), 3.2))
    x = np.arange(len(activity))
    ax.bar(x - 0.2, activity["mean_average_precision"], width=0.4, color="#2980b9", label="CNN embeddings")
    ax.bar(x + 0.2, activity["mean_average_precision_classical"], width=0.4, color="#e67e22",
           label="classical profiles")
    ax.set_xticks(x, activity.index, rotation=90, fontsize=6)
    ax.set_ylabel("mAP vs control (fields)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def loto_overview(metrics: pd.DataFrame, assignments: pd.DataFrame) -> Figure:
    """LOTO models: test balanced accuracy against chance, and where each held-out target's nuclei are put.

    ``metrics``: one row per model (``held_out``, ``test_balanced_accuracy``, ``chance``,
    optionally ``baseline_test_balanced_accuracy``); ``assignments``: held-out target × predicted
    class, the fraction of the target's nuclei predicted as each class.
    """
    fig, axes = plt.subplots(1, 2, figsize=(14, max(4, 0.2 * len(metrics) + 1.5)),
                             gridspec_kw={"width_ratios": [1, 2]})
    ordered = metrics.sort_values("test_balanced_accuracy")
    y = np.arange(len(ordered))
    axes[0].barh(y, ordered["test_balanced_accuracy"], color="#2980b9", label="CNN")
    if "baseline_test_balanced_accuracy" in ordered:
        axes[0].scatter(ordered["baseline_test_balanced_accuracy"], y, color="#e67e22", s=12, zorder=3,
                        label="classical baseline")
    axes[0].scatter(ordered["chance"], y, color="k", marker="|", s=60, zorder=3, label="chance")
    axes[0].set_yticks(y, ordered["held_out"], fontsize=6)
    axes[0].set_xlabel("test BAC of the model trained without the target")
    axes[0].legend(frameon=False, fontsize=7)
    image = axes[1].imshow(assignments.to_numpy(), cmap="magma", aspect="auto")
    axes[1].set_xticks(range(assignments.shape[1]), assignments.columns, rotation=90, fontsize=6)
    axes[1].set_yticks(range(assignments.shape[0]), assignments.index, fontsize=6)
    axes[1].set_xlabel("class predicted for the held-out target's nuclei")
    axes[1].set_ylabel("held-out target")
    fig.colorbar(image, ax=axes[1], shrink=0.7, label="fraction of the target's nuclei")
    fig.tight_layout()
    return fig


def pretraining_history(history: pd.DataFrame) -> Figure:
    """Contrastive loss and positive-pair accuracy (each view finds its partner) per epoch of the pretraining."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(history["epoch"], history["loss"], marker="o", ms=3, lw=1)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("NT-Xent loss")
    axes[1].plot(history["epoch"], history["accuracy"], marker="o", ms=3, lw=1)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("positive-pair top-1 accuracy")
    axes[1].set_ylim(0, 1)
    fig.tight_layout()
    return fig


def probe_bars(summary: pd.DataFrame) -> Figure:
    """Mean cross-validated R² per feature group of the linear read-outs (columns: one per encoder)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(summary.columns), 1)
    positions = np.arange(len(summary))
    for k, column in enumerate(summary.columns):
        ax.bar(positions + k * width, summary[column].clip(lower=-0.1), width, label=column)
    ax.set_xticks(positions + width * (len(summary.columns) - 1) / 2, summary.index)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("mean R² of a linear read-out")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
