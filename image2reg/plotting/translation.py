"""Figures of stages 07–08: top-k curves, target ranks and the effects of a second screen."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["topk_curves", "target_ranks", "shift_sizes"]


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


def shift_sizes(shifts: pd.DataFrame, groups: dict[str, list[str]],
                 title: str = "Ground truth: effects of the second screen's perturbations") -> Figure:
    """Histograms of the true effect sizes (``shifts["effect_size"]``, cell-noise SD) of each group of genes."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for role, genes in groups.items():
        ax.hist(shifts.loc[genes, "effect_size"], bins=20, range=(0, shifts["effect_size"].max()), alpha=0.6,
                label=role)
    ax.set_xlabel("true effect size (cell-noise SD)")
    ax.set_ylabel("genes")
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=10)
    return fig
