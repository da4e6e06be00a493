"""Figures of stages 00–01: the dataset, QC, illumination, segmentation, crops and nucleus filters."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

EFFECT_COLORS = {"strong": "#c0392b", "weak": "#e67e22", "none": "#7f8c8d", "control": "#2c3e50"}

__all__ = ["field_montage", "effect_sizes", "world_overview", "qc_overview", "illumination_functions",
           "segmentation_overlays", "crop_montage", "nuclei_per_condition", "filter_distributions"]


def field_montage(panels: list[list[np.ndarray]], conditions: list[tuple[str, str]], n_fields: int = 4,
                  crop: int = 192) -> Figure:
    """A grid of fields: one row per condition (e.g. from :func:`image2reg.data.overview.montage_fields`).

    ``conditions`` are ``(gene, label)`` pairs, ``label`` titling the row (e.g. the effect class); every
    panel is shown with the same display range (1st to 99.8th percentile of all panels).
    """
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


def world_overview(genes: pd.DataFrame, ppi: pd.DataFrame, rho: np.ndarray, modules: np.ndarray) -> Figure:
    """Why the omics are informative: interactome costs by edge kind, single-cell expression
    correlation ``rho`` of genes ordered by module (``modules``, from
    :func:`image2reg.data.overview.module_correlation`), and U2OS log fold changes per module."""
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

    image = axes[1].imshow(rho, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    bounds = np.flatnonzero(np.diff(modules)) + 0.5
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
