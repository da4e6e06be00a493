"""Figures of stages 05–06: pruning scans, costs and prizes, the β sweep, the interactome drawing, robustness,
the graph autoencoder's training and link prediction, and the regulatory embeddings' UMAPs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from image2reg.plotting.cnn import embedding_scatter

__all__ = ["pruning_scans", "costs_and_prizes", "beta_sweep", "interactome_drawing", "interactome_by_module",
           "robustness_histogram", "gae_history", "link_auc_by_kind", "regulatory_umaps"]


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


def costs_and_prizes(costs: np.ndarray, prizes: np.ndarray, targets: np.ndarray, edge_cost: str) -> Figure:
    """Histograms of the PCST's edge costs and node prizes, the impactful targets' prizes apart.

    ``targets`` are node indices into ``prizes``; ``edge_cost`` names the kind of cost (axis label).
    """
    prizes = np.asarray(prizes)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].hist(costs, bins=40, color="#7f8c8d")
    axes[0].set_xlabel(f"edge cost ({edge_cost})")
    axes[1].hist(prizes, bins=40, color="#2c3e50", label="all genes")
    axes[1].hist(prizes[targets], bins=40, color="#c0392b", label="impactful targets")
    axes[1].set_xlabel("prize (|logFC|, targets at the maximum)")
    axes[1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def interactome_by_module(nodes: pd.DataFrame, edges: pd.DataFrame, modules: pd.Series, *, seed: int = 0) -> Figure:
    """:func:`interactome_drawing` coloured by the true module of each gene (``modules``: gene → module)."""
    coloured = nodes.assign(true_module=modules.reindex(nodes.index).to_numpy())
    return interactome_drawing(coloured, edges, "true_module", seed=seed, title="coloured by the true module")


def robustness_histogram(robustness: pd.Series, noise: float, repeats: int) -> Figure:
    """How often each interactome gene is selected again when the edge costs are perturbed."""
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.hist(robustness, bins=20, color="#2c3e50")
    ax.set_xlabel(f"selection frequency under {noise:.0%} cost noise ({repeats} repeats)")
    ax.set_ylabel("genes")
    fig.tight_layout()
    return fig


def gae_history(history: pd.DataFrame, best_epoch: int, title: str = "model on all genes") -> Figure:
    """A graph autoencoder's training: train and validation loss (best epoch marked), validation link AUC."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(history["epoch"], history["train_loss"], label="train")
    axes[0].plot(history["epoch"], history["val_loss"], label="validation")
    axes[0].axvline(best_epoch, color="#8e44ad", ls="--", lw=1, label="best epoch")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend(frameon=False, fontsize=8)
    axes[1].plot(history["epoch"], history["val_auc"], color="#2c3e50")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation link AUC")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def link_auc_by_kind(metrics: pd.DataFrame) -> Figure:
    """Test link AUC of the models on all genes (``all`` and ``replicate``: edge splits) and of the LOTO models."""
    by_kind = metrics.assign(kind=metrics["kind"].replace({"replicate": "all"}))
    groups = [group["test_auc"].to_numpy() for _, group in by_kind.groupby("kind", sort=True)]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.boxplot(groups, tick_labels=sorted(by_kind["kind"].unique()))
    for k, values in enumerate(groups, start=1):
        jitter = np.random.default_rng(k).uniform(-0.08, 0.08, len(values))
        ax.scatter(np.full(len(values), k) + jitter, values, s=12, color="#2c3e50", zorder=3)
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_ylabel("test link AUC")
    ax.set_xticks([1, 2][:len(groups)], ["all genes (edge splits)", "LOTO models"][:len(groups)])
    fig.tight_layout()
    return fig


def regulatory_umaps(coordinates: np.ndarray, nodes: pd.DataFrame, image_labels: np.ndarray | None = None,
                     modules: pd.Series | None = None) -> list[Figure]:
    """UMAPs of the regulatory embeddings coloured by the interactome's Louvain cluster (targets named), by the
    targets' image cluster (the latent classifier's labels; other genes: none) and by the true module.

    ``nodes`` is stage 05's node table (``cluster``, ``is_target``), in the rows' order; ``image_labels``
    (−1: none) and ``modules`` (gene → module) are drawn when given.
    """
    genes = nodes.index.astype(str)
    figures = [embedding_scatter(coordinates, nodes["cluster"].astype(str).rename("interactome cluster"),
                                 "UMAP of the regulatory embeddings: Louvain cluster of the interactome",
                                 names=[gene if target else "" for gene, target in zip(genes, nodes["is_target"])])]
    if image_labels is not None:
        groups = pd.Series(np.where(image_labels >= 0, image_labels.astype(str), "none"))
        figures.append(embedding_scatter(coordinates, groups, "… image cluster of the impactful targets (the "
                                                               "classifier's labels; other genes: none)"))
    if modules is not None:
        figures.append(embedding_scatter(coordinates, modules.reindex(genes).astype(str).rename("true module"),
                                         "… true module (synthetic ground truth)"))
    return figures
