"""Figures of the reports. Computing lives elsewhere; these functions only draw."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from image2reg.images.io import read_field
from image2reg.layout import RawLayout

EFFECT_COLORS = {"strong": "#c0392b", "weak": "#e67e22", "none": "#7f8c8d", "control": "#2c3e50"}


def field_montage(raw: RawLayout, metadata: pd.DataFrame, conditions: list[tuple[str, str]],
                  n_fields: int = 4, crop: int = 192, seed: int = 0) -> Figure:
    """A grid of field crops: one row per condition, ``n_fields`` random in-focus fields each.

    Parameters
    ----------
    raw
        The raw layout holding ``images/<plate>/<file>``.
    metadata
        The per-field table (Rohban columns).
    conditions
        ``(gene, label)`` pairs; ``label`` titles the row (e.g. the effect class).
    crop
        Side of the central crop shown (px); the same display contrast is used for every panel.
    """
    rng = np.random.default_rng(seed)
    in_focus = metadata[(metadata["Image_Metadata_QCFlag_isBlurry"] == 0)
                        & (metadata["Image_Metadata_QCFlag_isSaturated"] == 0)]
    panels = []
    for gene, _ in conditions:
        rows = in_focus[in_focus["Image_Metadata_GeneSymbol"] == gene]
        picks = rows.iloc[rng.permutation(len(rows))[:n_fields]]
        images = []
        for plate, name in picks[["Image_Metadata_Plate", "Image_FileName_OrigHoechst"]].itertuples(index=False):
            image = read_field(raw.images / str(plate) / name)
            top = (image.shape[0] - crop) // 2
            images.append(image[top:top + crop, top:top + crop])
        panels.append(images)
    every = np.concatenate([im.ravel() for row in panels for im in row]) if any(panels) else np.zeros(1)
    lo, hi = np.percentile(every, [1, 99.8])

    fig, axes = plt.subplots(len(conditions), n_fields, figsize=(1.9 * n_fields, 1.9 * len(conditions)),
                             squeeze=False)
    for r, ((gene, label), images) in enumerate(zip(conditions, panels)):
        for c in range(n_fields):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(np.clip((images[c] - lo) / (hi - lo), 0, 1), cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(f"{gene}\n{label}", fontsize=8, rotation=0, ha="right", va="center",
                              color=EFFECT_COLORS.get(label.split()[0], "black"))
    fig.suptitle(f"Fields of view per condition (central {crop}×{crop} px, one display range)", fontsize=10)
    fig.tight_layout()
    return fig


def effect_sizes(genes: pd.DataFrame) -> Figure:
    """Ground-truth effect sizes of the screened genes, sorted, coloured by class, with the
    per-phenotype shift as a heatmap underneath."""
    screen = genes[genes["in_screen"]].sort_values("effect_size", ascending=False)
    shift_columns = [c for c in screen.columns if c.startswith("shift_")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.22 * len(screen)), 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [1.2, 1]})
    x = np.arange(len(screen))
    top.bar(x, screen["effect_size"], color=[EFFECT_COLORS[c] for c in screen["effect_class"]])
    top.set_ylabel("effect size\n(cell-noise SD)")
    present = [name for name in EFFECT_COLORS if name in set(screen["effect_class"])]
    top.legend([Patch(color=EFFECT_COLORS[name]) for name in present], present, frameon=False, fontsize=8)
    top.set_title("Ground truth: effect of each screened gene on nuclear morphology", fontsize=10)
    shifts = screen[shift_columns].to_numpy().T
    limit = np.abs(shifts).max() or 1.0
    image = bottom.imshow(shifts, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    bottom.set_yticks(range(len(shift_columns)), [c.removeprefix("shift_") for c in shift_columns], fontsize=7)
    bottom.set_xticks(x, [f"{g} (m{m})" for g, m in zip(screen["gene"], screen["module"])], rotation=90, fontsize=6)
    fig.colorbar(image, ax=bottom, fraction=0.02, pad=0.01, label="shift")
    fig.tight_layout()
    return fig


def world_overview(raw: RawLayout, genes: pd.DataFrame, ppi: pd.DataFrame) -> Figure:
    """Why the omics are informative: interactome costs by edge kind, single-cell expression
    correlation ordered by module, and U2OS log fold changes per module."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for kind, color in (("module", "#27ae60"), ("noise", "#7f8c8d"), ("hub", "#8e44ad"), ("self", "#c0392b")):
        values = ppi.loc[ppi["kind"] == kind, "cost"]
        if len(values):
            ax.hist(values, bins=30, range=(0, 0.9), alpha=0.6, color=color, label=f"{kind} ({len(values)})")
    ax.set_xlabel("edge cost (lower = more confident)")
    ax.set_ylabel("edges")
    ax.set_title("Interactome", fontsize=10)
    ax.legend(frameon=False, fontsize=8)

    cells = ad.read_h5ad(raw.expression / "scrnaseq_counts.h5ad")
    modules = genes.set_index("gene").loc[cells.var_names, "module"].to_numpy()
    order = np.argsort(modules, kind="stable")
    counts = cells.X.toarray()[:, order]
    rho = stats.spearmanr(counts).statistic
    image = axes[1].imshow(rho, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    bounds = np.flatnonzero(np.diff(modules[order])) + 0.5
    for b in bounds:
        axes[1].axhline(b, color="k", lw=0.4)
        axes[1].axvline(b, color="k", lw=0.4)
    axes[1].set_title("Single-cell Spearman ρ, genes ordered by module", fontsize=10)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    fig.colorbar(image, ax=axes[1], fraction=0.046)

    ax = axes[2]
    expressed = genes[genes["u2os_logfc"].notna()]
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(expressed))
    colors = np.where(expressed["module_screened"], "#c0392b", "#7f8c8d")
    ax.scatter(expressed["module"] + jitter, expressed["u2os_logfc"], s=6, c=colors)
    targets = expressed[expressed["impactful"]]
    ax.scatter(targets["module"], targets["u2os_logfc"], s=30, facecolors="none", edgecolors="k",
               label="impactful screened genes")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("module (red: targeted by the screen)")
    ax.set_ylabel("U2OS log fold change")
    ax.set_title("Bulk expression: the target line", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Stage 01: image preprocessing
# ---------------------------------------------------------------------------------------------
def qc_overview(images: pd.DataFrame) -> Figure:
    """Blur (PowerLogLogSlope) and saturation per plate, flagged fields highlighted."""
    measured = images[images["error"] == ""]
    plates = sorted(measured["Metadata_Plate"].astype(str).unique())
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    rng = np.random.default_rng(0)
    for ax, column, flag, label in ((axes[0], "power_log_log_slope", "QC_blurry", "PowerLogLogSlope (blur)"),
                                    (axes[1], "saturated_fraction", "QC_saturated", "fraction of saturated pixels")):
        for i, plate in enumerate(plates):
            rows = measured[measured["Metadata_Plate"].astype(str) == plate]
            x = i + rng.uniform(-0.25, 0.25, len(rows))
            ax.scatter(x, rows[column], s=6, c=np.where(rows[flag], "#c0392b", "#7f8c8d"))
        ax.set_xticks(range(len(plates)), plates, rotation=45, fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"{label}; red: flagged", fontsize=10)
    counts = pd.Series({"pass": int(measured["QC_pass"].sum()), "blurry": int(measured["QC_blurry"].sum()),
                        "saturated": int(measured["QC_saturated"].sum()),
                        "unreadable": int((images["error"] != "").sum())})
    axes[2].bar(counts.index, counts.to_numpy(), color=["#27ae60", "#c0392b", "#e67e22", "#2c3e50"])
    for x, value in enumerate(counts.to_numpy()):
        axes[2].text(x, value, str(value), ha="center", va="bottom", fontsize=8)
    axes[2].set_title("fields", fontsize=10)
    fig.tight_layout()
    return fig


def illumination_functions(functions: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None = None) -> Figure:
    """Each plate's illumination function (and the ground truth beside it, when known)."""
    rows = 2 if truth else 1
    fig, axes = plt.subplots(rows, len(functions), figsize=(3.2 * len(functions), 3.0 * rows), squeeze=False)
    for c, (plate, function) in enumerate(functions.items()):
        image = axes[0, c].imshow(function, cmap="magma")
        axes[0, c].set_title(f"plate {plate}: estimated", fontsize=9)
        fig.colorbar(image, ax=axes[0, c], fraction=0.046)
        if truth:
            known = truth[plate] / truth[plate].mean()
            estimate = function / function.mean()
            r = np.corrcoef(known.ravel(), estimate.ravel())[0, 1]
            image = axes[1, c].imshow(known, cmap="magma")
            axes[1, c].set_title(f"ground truth (r = {r:.3f})", fontsize=9)
            fig.colorbar(image, ax=axes[1, c], fraction=0.046)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def segmentation_overlays(images: list[np.ndarray], labels: list[np.ndarray], titles: list[str],
                          truth: list[np.ndarray] | None = None, crop: int = 256) -> Figure:
    """Fields with the segmentation outlined (yellow; ground truth in cyan when given)."""
    from skimage.segmentation import find_boundaries

    fig, axes = plt.subplots(1, len(images), figsize=(4.2 * len(images), 4.4), squeeze=False)
    for ax, image, label, title, k in zip(axes[0], images, labels, titles, range(len(images))):
        view = image[:crop, :crop].astype(np.float32)
        lo, hi = np.percentile(view, [1, 99.8])
        ax.imshow(np.clip((view - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray")
        if truth is not None:
            ax.contour(find_boundaries(truth[k][:crop, :crop]), [0.5], colors="cyan", linewidths=0.6)
        ax.contour(find_boundaries(label[:crop, :crop]), [0.5], colors="yellow", linewidths=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def crop_montage(crops, nuclei: pd.DataFrame, conditions: list[str], n: int = 10, seed: int = 0,
                 column: str = "Metadata_Gene") -> Figure:
    """``n`` random crops per condition, one row each, read from the crop store."""
    from image2reg.images.store import read_crops

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(conditions), n, figsize=(0.9 * n, 0.95 * len(conditions)), squeeze=False)
    for r, condition in enumerate(conditions):
        index = nuclei.loc[nuclei[column] == condition, "crop_index"].to_numpy()
        picks = rng.choice(index, size=min(n, len(index)), replace=False) if len(index) else []
        block = read_crops(crops, picks) if len(picks) else []
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(block):
                ax.imshow(block[c], cmap="gray", vmin=0, vmax=255)
            if c == 0:
                ax.set_ylabel(condition, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Nucleus crops per condition (as stored, 0–255)", fontsize=10)
    fig.tight_layout()
    return fig


def nuclei_per_condition(nuclei: pd.DataFrame, column: str = "Metadata_Gene") -> Figure:
    """Kept nuclei (passing QC) per condition."""
    counts = nuclei.loc[nuclei["QC_pass"], column].value_counts().sort_values(ascending=False)
    fig, ax = plt.subplots(figsize=(max(6, 0.2 * len(counts)), 3.2))
    ax.bar(range(len(counts)), counts.to_numpy(), color="#34495e")
    ax.set_xticks(range(len(counts)), counts.index, rotation=90, fontsize=6)
    ax.set_ylabel("nuclei")
    ax.set_yscale("log")
    ax.set_title(f"Nuclei per condition (QC-passing fields): {int(counts.sum())} in {len(counts)} conditions",
                 fontsize=10)
    fig.tight_layout()
    return fig


def filter_distributions(nuclei: pd.DataFrame, dropped: pd.DataFrame, bounds: dict) -> Figure:
    """Distributions of the filter measures for kept and dropped nuclei, with the thresholds."""
    measures = (("area", ("min_area", "max_area")), ("bbox_area", ("max_bbox_area",)),
                ("solidity", ("min_solidity",)), ("aspect_ratio", ("min_aspect_ratio",)))
    fig, axes = plt.subplots(1, len(measures) + 1, figsize=(18, 3.4))
    for ax, (measure, keys) in zip(axes, measures):
        values = pd.concat([nuclei[measure], dropped[measure]]) if len(dropped) else nuclei[measure]
        bins = np.histogram_bin_edges(values, bins=50)
        ax.hist(nuclei[measure], bins=bins, alpha=0.7, color="#27ae60", label="kept")
        if len(dropped):
            ax.hist(dropped[measure], bins=bins, alpha=0.7, color="#c0392b", label="dropped")
        for key in keys:
            if bounds.get(key) is not None:
                ax.axvline(bounds[key], color="k", ls="--", lw=0.8)
        ax.set_title(measure, fontsize=10)
        ax.set_yscale("log")
    axes[0].legend(frameon=False, fontsize=8)
    reasons = dropped["drop_reason"].value_counts() if len(dropped) else pd.Series(dtype=int)
    axes[-1].barh(reasons.index.astype(str), reasons.to_numpy(), color="#c0392b")
    axes[-1].set_title("dropped nuclei by reason", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Stages 02-04: the CNN image encoder
# --------------------------------------------------------------------------------------------
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


def pruning_scans(confidence: pd.DataFrame, hubs: pd.DataFrame, cutoff: float | None,
                  quantile: float | None, n_targets: int) -> Figure:
    """The PPI's confidence cut-off scan and hub-pruning scan (method §5.1), with the chosen values.

    Left: nodes and edges of the largest component of the edges cheaper than each cut-off, and the
    targets it covers. Right: the same after removing the nodes whose degree reaches each quantile.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, table, x, chosen, label in ((axes[0], confidence, "cutoff", cutoff, "confidence cut-off (cost <)"),
                                        (axes[1], hubs, "quantile", quantile, "hub degree quantile")):
        ax.plot(table[x], table["n_nodes"], color="#2c3e50", label="nodes")
        ax.plot(table[x], table["n_edges"], color="#7f8c8d", label="edges")
        if x == "cutoff":
            ax.set_yscale("symlog")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(label)
        twin = ax.twinx()
        twin.plot(table[x], table["targets_covered"], color="#c0392b", label="targets covered")
        twin.axhline(n_targets, color="#c0392b", lw=0.6, ls=":")
        twin.set_ylabel("targets covered", color="#c0392b")
        twin.set_ylim(0, max(n_targets, 1) * 1.1)
        if chosen is not None:
            ax.axvline(chosen, color="#8e44ad", ls="--", lw=1.2, label=f"chosen: {chosen:g}")
        ax.legend(frameon=False, fontsize=8, loc="upper left")
    axes[0].set_ylabel("count (largest component)")
    fig.tight_layout()
    return fig


def beta_sweep(sweep: pd.DataFrame, beta: float, n_targets: int) -> Figure:
    """The PCST β sweep (method §5.2): size, targets covered, components and Louvain clusters per β."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    panels = ((("n_nodes", "nodes"), ("n_edges", "edges (augmented)")), (("targets_covered", "targets covered"),),
              (("n_components", "components"),), (("n_clusters", "Louvain clusters"),))
    for ax, panel in zip(axes, panels):
        for column, label in panel:
            ax.plot(sweep["beta"], sweep[column], label=label, lw=1.2)
        ax.axvline(beta, color="#8e44ad", ls="--", lw=1.2)
        ax.set_xlabel("β")
        ax.set_title(", ".join(label for _, label in panel), fontsize=10)
    axes[1].axhline(n_targets, color="#c0392b", lw=0.6, ls=":")
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"selected β = {beta:g}", fontsize=10)
    fig.tight_layout()
    return fig


def interactome_drawing(nodes: pd.DataFrame, edges: pd.DataFrame, color: str, *, target: str = "is_target",
                        size: str | None = None, seed: int = 0, title: str = "") -> Figure:
    """The interactome as a force-directed drawing: nodes coloured by ``nodes[color]``, targets outlined and named.

    ``nodes`` is indexed by gene; ``edges`` has ``gene1``, ``gene2``; ``size`` names a column scaling the nodes.
    """
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(nodes.index)
    graph.add_edges_from(edges[["gene1", "gene2"]].itertuples(index=False))
    position = nx.spring_layout(graph, seed=seed, k=1.5 / np.sqrt(max(len(nodes), 1)))
    xy = np.array([position[gene] for gene in nodes.index])
    levels = sorted(nodes[color].astype(str).unique())
    cmap = plt.get_cmap("tab20" if len(levels) > 10 else "tab10")
    colors = nodes[color].astype(str).map({level: cmap(k % cmap.N) for k, level in enumerate(levels)})
    sizes = 18.0 if size is None else 10 + 60 * (nodes[size] / max(float(nodes[size].max()), 1e-12)).to_numpy()
    fig, ax = plt.subplots(figsize=(8, 7))
    segments = np.array([[position[a], position[b]] for a, b in edges[["gene1", "gene2"]].itertuples(index=False)])
    if len(segments):
        from matplotlib.collections import LineCollection
        ax.add_collection(LineCollection(segments, colors="#bdc3c7", linewidths=0.4, zorder=1))
    is_target = nodes[target].to_numpy(bool)
    ax.scatter(xy[~is_target, 0], xy[~is_target, 1], s=np.broadcast_to(sizes, len(nodes))[~is_target],
               c=list(colors[~is_target]), lw=0, zorder=2)
    ax.scatter(xy[is_target, 0], xy[is_target, 1], s=70, c=list(colors[is_target]), edgecolors="k", lw=1.2,
               zorder=3, marker="D")
    for (x, y), gene in zip(xy[is_target], nodes.index[is_target]):
        ax.annotate(gene, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points", zorder=4)
    if len(levels) <= 20:
        ax.legend(handles=[Patch(color=cmap(k % cmap.N), label=level) for k, level in enumerate(levels)],
                  title=color, frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(nodes)} genes, {len(edges)} edges; ◆ impactful targets", fontsize=10)
    fig.tight_layout()
    return fig


def topk_curves(curves: dict[str, np.ndarray], bands: dict[str, tuple[np.ndarray, np.ndarray]],
                title: str = "") -> Figure:
    """Top-k accuracy against k for each method, with shaded 95 % bands (e.g. random genes, permuted pairs)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, (name, (low, high)) in enumerate(bands.items()):
        ks = np.arange(1, len(low) + 1)
        ax.fill_between(ks, low, high, color=["#bdc3c7", "#f5cba7", "#d2b4de"][k % 3], alpha=0.6,
                        label=f"{name}: 95 % band", lw=0)
    for name, accuracy in curves.items():
        ax.plot(np.arange(1, len(accuracy) + 1), accuracy, lw=2 if name == next(iter(curves)) else 1.2, label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("top-k accuracy (held-out targets)")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def target_ranks(ranks: pd.Series, n_candidates: int, k: int = 10, title: str = "") -> Figure:
    """The rank (1 = best) of every held-out target among the candidate genes, with the top-k cut and chance."""
    ranks = ranks.sort_values(kind="stable")
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(ranks)), 3.6))
    colors = np.where(ranks.to_numpy() < k, "#27ae60", "#7f8c8d")
    ax.bar(np.arange(len(ranks)), ranks.to_numpy() + 1, color=colors)
    ax.axhline(k + 0.5, color="#27ae60", ls="--", lw=1, label=f"top {k}")
    ax.axhline((n_candidates + 1) / 2, color="k", ls=":", lw=1, label="random (median)")
    ax.set_xticks(np.arange(len(ranks)), ranks.index, rotation=90, fontsize=7)
    ax.set_ylabel(f"rank of the true gene (of {n_candidates})")
    ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
