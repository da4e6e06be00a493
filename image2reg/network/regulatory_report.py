"""What the report of stage 06 (the regulatory embeddings) computes, in the notebook's order.

- :func:`graph_arrays` and :func:`regulatory_features`: the interactome as node order, edge indices and
  node features of the graph autoencoder;
- :func:`read_image_embeddings`, :func:`image_cluster_table`, :func:`model_counts`: the latent
  classifier's inputs and the models to train;
- :func:`train_models`, :func:`link_prediction_summary`: the models' metrics and the link-prediction
  scores over edge splits;
- :func:`embedding_table`, :func:`embedding_clusters`, :func:`umap_coordinates`,
  :func:`embedding_cluster_recovery`, :func:`describe_loto_embeddings`: the embeddings and their
  structure;
- :func:`regulatory_summary`: the stage's summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering
from sklearn.preprocessing import normalize

from image2reg.data import expression
from image2reg.execute import ExecutionParams, run_tasks
from image2reg.layout import RunLayout
from image2reg.network.gae import node_features
from image2reg.network.inference import module_recovery
from image2reg.network.regulatory import GaeTask, run_gae_task
from image2reg.profiling.projection import umap_2d

#: Kinds of models of stage 06 that are trained on all genes (the first model and its replicate splits).
ALL_GENES_KINDS = ("all", "replicate")



def graph_arrays(nodes: pd.DataFrame, edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The interactome's genes (node order: the rows of ``nodes``) and its E × 2 edge indices.

    Raises
    ------
    KeyError
        When an edge end is not a node.
    """
    genes = nodes.index.to_numpy(str)
    position = pd.Series(np.arange(len(genes)), index=genes)
    missing = sorted((set(edges["gene1"]) | set(edges["gene2"])) - set(genes))
    if missing:
        raise KeyError(f"{len(missing)} edge ends are not nodes of the interactome, e.g. {missing[:3]}")
    return genes, np.column_stack([position.loc[edges["gene1"]].to_numpy(), position.loc[edges["gene2"]].to_numpy()])


@dataclass(frozen=True)
class NodeFeatures:
    """Node features of the graph autoencoder: genes × features and the features' names."""

    values: np.ndarray
    names: list[str]

    @property
    def n_cells(self) -> int:
        """Expression features (one per single cell)."""
        return sum(name.startswith("cell:") for name in self.names)

    @property
    def n_gene_sets(self) -> int:
        """Gene-set membership features."""
        return sum(name.startswith("set:") for name in self.names)


def regulatory_features(cells: ad.AnnData, genes: Sequence[str], gene_sets: dict[str, list[str]] | None,
                        kinds: Sequence[str]) -> NodeFeatures:
    """The node features of stage 06 (:func:`~image2reg.network.gae.node_features`), of the kinds asked for.

    Parameters
    ----------
    cells
        Preprocessed single cells (stage 05's), holding every gene of ``genes``.
    genes
        The interactome's genes, in node order.
    gene_sets
        Name → genes; ignored unless ``"gene_sets"`` is among ``kinds``.
    kinds
        ``"expression"`` (each cell min–max scaled over the genes) and/or ``"gene_sets"`` (memberships).

    Returns
    -------
    NodeFeatures
    """
    unknown = sorted(set(kinds) - {"expression", "gene_sets"})
    if unknown or not kinds:
        raise ValueError(f"kinds must name expression and/or gene_sets, got {list(kinds)}")
    values, names = node_features(expression.dense_expression(cells[:, list(genes)]), genes,
                                  gene_sets if "gene_sets" in kinds else None)
    if "expression" not in kinds:
        keep = [not name.startswith("cell:") for name in names]
        values, names = values[:, keep], [name for name, kept in zip(names, keep) if kept]
    return NodeFeatures(values=values, names=names)


def read_image_embeddings(layout: RunLayout) -> tuple[pd.DataFrame, ad.AnnData]:
    """The image side of stage 06: stage 03's mean gene embeddings (genes × dimensions) and stage 04's LOTO ones."""
    image = ad.read_h5ad(layout.artifact("embeddings", "gene_embeddings"))
    loto = ad.read_h5ad(layout.artifact("loto", "gene_embeddings_loto"))
    return pd.DataFrame(np.asarray(image.X), index=image.obs_names.astype(str)), loto


def image_cluster_table(genes: Sequence[str], labels: np.ndarray | None) -> pd.DataFrame | None:
    """The labelled genes and their image cluster, one column per gene (``None`` without labels)."""
    if labels is None:
        return None
    labelled = pd.Series(labels, index=genes)
    return labelled[labelled >= 0].rename("image cluster").to_frame().T


def model_counts(tasks: Sequence[GaeTask]) -> dict[str, int]:
    """Number of models of each kind (``all``, ``replicate``, ``loto``)."""
    return {kind: sum(task.kind == kind for task in tasks) for kind in ("all", "replicate", "loto")}


def train_models(tasks: Sequence[GaeTask], execution: ExecutionParams | None) -> pd.DataFrame:
    """Train (or read, when done) every model of stage 06; one row of metrics per task, in order."""
    return pd.DataFrame(run_tasks(run_gae_task, tasks, execution, desc="GAE"))


def link_prediction_summary(metrics: pd.DataFrame) -> dict[str, float | int]:
    """Link prediction of the model on all genes, over its edge splits and of the LOTO models.

    Parameters
    ----------
    metrics
        :func:`train_models`: the first row is the model on all genes; ``kind`` and ``test_auc``,
        ``test_ap`` columns.

    Returns
    -------
    dict
        ``test_auc``, ``test_ap`` (the first model), ``test_auc_over_splits_mean`` / ``_sd`` (population)
        / ``_min`` and ``splits`` over the models on all genes (``all`` and ``replicate``), and
        ``loto_test_auc_mean`` when there are LOTO models.
    """
    splits = metrics[metrics["kind"].isin(ALL_GENES_KINDS)]
    if splits.empty:
        raise ValueError("no model on all genes among the metrics")
    link = {"test_auc": float(metrics.loc[0, "test_auc"]), "test_ap": float(metrics.loc[0, "test_ap"]),
            "test_auc_over_splits_mean": float(splits["test_auc"].mean()),
            "test_auc_over_splits_sd": float(splits["test_auc"].std(ddof=0)),
            "test_auc_over_splits_min": float(splits["test_auc"].min()), "splits": int(len(splits))}
    if (metrics["kind"] == "loto").any():
        link["loto_test_auc_mean"] = float(metrics.loc[metrics["kind"] == "loto", "test_auc"].mean())
    return link


def embedding_clusters(embeddings: np.ndarray, n_clusters: int) -> np.ndarray:
    """Complete-linkage clusters of the embeddings by cosine distance, as the reference's figures.

    ``n_clusters`` is capped at one less than the number of rows (at least two rows are needed).
    """
    embeddings = np.asarray(embeddings)
    if len(embeddings) < 2:
        raise ValueError(f"clustering needs at least 2 embeddings, got {len(embeddings)}")
    k = min(n_clusters, len(embeddings) - 1)
    return AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="complete").fit_predict(normalize(embeddings))


def umap_coordinates(embeddings: np.ndarray, n_neighbors: int, seed: int) -> np.ndarray:
    """2-D UMAP of the unit-length embeddings (cosine metric); ``n_neighbors`` capped at one less than the rows."""
    return umap_2d(normalize(np.asarray(embeddings)), n_neighbors, seed, metric="cosine")


def embedding_table(embeddings: np.ndarray, nodes: pd.DataFrame, image_labels: np.ndarray | None,
                    n_clusters: int) -> ad.AnnData:
    """The regulatory embeddings of the model on all genes (``regulatory_embeddings``), one row per gene.

    Parameters
    ----------
    embeddings
        Genes × latent, in the order of ``nodes``.
    nodes
        Stage 05's node table (index: gene; ``is_target``, ``cluster``).
    image_labels
        The latent classifier's labels of the genes (−1: none), or ``None``.
    n_clusters
        Clusters of :func:`embedding_clusters`.

    Returns
    -------
    anndata.AnnData
        obs ``is_target``, ``interactome_cluster``, ``image_cluster`` (with labels) and ``embedding_cluster``.
    """
    if len(embeddings) != len(nodes):
        raise ValueError(f"{len(embeddings)} embeddings for {len(nodes)} interactome genes")
    obs = nodes[["is_target", "cluster"]].rename(columns={"cluster": "interactome_cluster"})
    if image_labels is not None:
        obs["image_cluster"] = image_labels
    table = ad.AnnData(embeddings, obs=obs.rename_axis(None))
    table.obs["embedding_cluster"] = embedding_clusters(table.X, n_clusters)
    return table


def describe_loto_embeddings(tasks: Sequence[GaeTask], loto: ad.AnnData) -> str:
    """One sentence on the LOTO regulatory embeddings (``regulatory_embeddings_loto``): how many targets, and
    which model gave their rows."""
    how = ("its own LOTO model" if any(task.kind == "loto" for task in tasks)
           else "the model on all genes, which learns no image labels and so never sees a target")
    return (f"{loto.obs['model'].nunique()} held-out targets × {loto.obs['gene'].nunique()} genes, "
            f"each from {how}")


def embedding_cluster_recovery(embeddings: ad.AnnData, interactome_clusters: pd.Series, edges: pd.DataFrame,
                               modules: pd.Series | None = None, *, seed: int = 0) -> pd.DataFrame:
    """NMI of the embeddings' clusters against the interactome's clusters and the true modules, with its null.

    Parameters
    ----------
    embeddings
        :func:`embedding_table` (obs ``embedding_cluster``, one row per gene).
    interactome_clusters
        Gene → Louvain cluster of the interactome.
    edges
        The interactome's edges.
    modules
        Gene → true module (synthetic data), or ``None``.
    seed
        Seed of the permutations (:func:`~image2reg.network.inference.module_recovery`).

    Returns
    -------
    pandas.DataFrame
        Rows ``interactome clusters`` (and ``true modules``): ``observed``, ``null_mean``, ``null_q95``,
        ``p_value`` of the normalised mutual information.
    """
    clusters = pd.Series(embeddings.obs["embedding_cluster"].to_numpy(), index=embeddings.obs_names.astype(str))
    references = {"interactome clusters": interactome_clusters}
    if modules is not None:
        references["true modules"] = modules
    recovery = {label: module_recovery(clusters, reference, edges, seed=seed).loc["nmi"].to_dict()
                for label, reference in references.items()}
    return pd.DataFrame(recovery).T


def regulatory_summary(n_genes: int, features: NodeFeatures, n_models: int, link: dict[str, float | int],
                       recovery: pd.DataFrame) -> dict[str, Any]:
    """Stage 06's summary: sizes, the link prediction (:func:`link_prediction_summary`) and the NMI of
    the embeddings' clusters against each reference (:func:`embedding_cluster_recovery`)."""
    return {"n_genes": n_genes, "n_features": int(features.values.shape[1]), "models": n_models, **link,
            "embedding_clusters_nmi": recovery["observed"].to_dict()}
