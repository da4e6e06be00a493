"""Graph convolutional autoencoder (GAE) of the interactome's genes (stage 06, method §6).

The gene embeddings of the method are the latent codes of a graph autoencoder trained on the
interactome: a gene is a node, its features are its single-cell expression (and optionally its
membership of gene sets), and the model learns to reconstruct the edges from the codes. Its parts:

- :func:`node_features`: the reference's node features (each cell min–max scaled over the genes,
  plus binary gene-set memberships);
- :func:`train_gae`: the encoder ``GCNConv → PReLU → GCNConv → PReLU → Linear``, the inner-product
  decoder of :class:`torch_geometric.nn.GAE`, the loss ``α·L_link + β·L_feat + γ·L_class`` (link
  reconstruction with fresh negatives every epoch, an optional L1 feature decoder, an optional
  latent classifier), early stopping on the validation loss and the embeddings of the best weights;
- :func:`image_cluster_labels` and :func:`node_labels`: the classes of the latent classifier, i.e.
  clusters of the genes' mean image embeddings (the reference's "physical" labels), aligned to the
  graph's nodes with ``−1`` for genes without a label.

Runs are deterministic for a seed on the CPU (same seed → bit-identical embeddings and history); on
a GPU the scatter operations of the graph convolutions are not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.cluster import AgglomerativeClustering
from sklearn.preprocessing import MinMaxScaler
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import GAE, GCNConv
from torch_geometric.transforms import RandomLinkSplit
from torch_geometric.utils import negative_sampling
from tqdm import tqdm

from image2reg.config import GaeParams
from image2reg.devices import resolve_device

#: Offsets added to the run's seed for the independently initialised heads (see :func:`train_gae`).
FEATURE_DECODER_SEED_OFFSET = 1
CLASSIFIER_SEED_OFFSET = 2


@dataclass(frozen=True)
class GaeResult:
    """Outcome of :func:`train_gae`.

    Attributes
    ----------
    embeddings
        N × ``latent_dim`` float32: the encoder with the best weights on the full graph (eval mode).
    history
        One row per epoch run: ``epoch`` (from 1), ``train_loss``, ``train_link``, ``val_loss``,
        ``val_link``, ``val_auc``, ``val_ap``, plus ``train_feat``/``val_feat`` when β > 0 and
        ``train_class``/``val_class`` when the latent classifier is used. Losses are unweighted
        parts and the weighted totals (``*_loss``).
    best_epoch
        The epoch of the lowest validation loss, whose weights were restored.
    test_auc, test_ap
        Link prediction on the test edges (ROC AUC and average precision, as ``GAE.test``).
    n_train_edges, n_val_edges, n_test_edges
        Positive undirected edges of each part of the split.
    stopped_early
        True when training ended after ``patience`` epochs without improvement, before ``epochs``.
    """

    embeddings: np.ndarray
    history: pd.DataFrame
    best_epoch: int
    test_auc: float
    test_ap: float
    n_train_edges: int
    n_val_edges: int
    n_test_edges: int
    stopped_early: bool


class GCNEncoder(nn.Module):
    """``GCNConv(in, hidden) → PReLU → GCNConv(hidden, out) → PReLU → Linear(out, out)``.

    The graph convolutions use PyG's defaults (self-loops, symmetric normalisation, unweighted edges).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = GCNConv(in_dim, hidden_dim)
        self.act1 = nn.PReLU()
        self.conv2 = GCNConv(hidden_dim, out_dim)
        self.act2 = nn.PReLU()
        self.linear = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Latent codes (N × out) of the nodes ``x`` (N × in) on the graph ``edge_index`` (2 × 2E)."""
        hidden = self.act1(self.conv1(x, edge_index))
        return self.linear(self.act2(self.conv2(hidden, edge_index)))


def feature_decoder(latent_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The node-feature decoder: ``Linear → BatchNorm1d → PReLU → Linear``."""
    return nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.PReLU(),
                         nn.Linear(hidden_dim, out_dim))


class _Model(nn.Module):
    """The GAE and its optional heads, so that mode switches, parameters and weights go together."""

    def __init__(self, gae: GAE, feature_head: nn.Module | None, classifier: nn.Module | None) -> None:
        super().__init__()
        self.gae = gae
        self.feature_head = feature_head
        self.classifier = classifier


def node_features(expression: np.ndarray, genes: Sequence[str],
                  gene_sets: dict[str, list[str]] | None = None) -> tuple[np.ndarray, list[str]]:
    """Node features of the reference: scaled single-cell expression and gene-set memberships.

    Parameters
    ----------
    expression
        Cells × genes, column ``g`` being ``genes[g]`` (the graph's nodes, in node order).
    genes
        The genes (unique), in the graph's node order.
    gene_sets
        Name → member genes (exact, case-sensitive symbols). One binary column per set, in the dict's
        order; a set without any member among ``genes`` is still a column (of zeros). ``None`` or
        ``{}``: expression only.

    Returns
    -------
    tuple[numpy.ndarray, list[str]]
        Genes × features float32 array: first one column per cell, the cell's expression min–max
        scaled to [0, 1] over the genes (sklearn ``MinMaxScaler`` on the genes × cells matrix; a cell
        with the same value for every gene becomes zeros), then the set memberships; and the feature
        names ``'cell:<row of expression>'`` then ``'set:<name>'``.
    """
    values = np.asarray(expression, dtype=np.float64)
    genes = list(genes)
    if values.ndim != 2:
        raise ValueError(f"expression must be cells × genes, got shape {values.shape}")
    if values.shape[1] != len(genes):
        raise ValueError(f"expression has {values.shape[1]} gene columns but {len(genes)} genes were given")
    if len(set(genes)) != len(genes):
        raise ValueError("genes must be unique (they are the graph's nodes)")
    if not np.isfinite(values).all():
        raise ValueError("expression contains NaN or infinite values")
    scaled = MinMaxScaler().fit_transform(values.T) if values.size else values.T
    names = [f"cell:{cell}" for cell in range(values.shape[0])]
    columns = [scaled]
    if gene_sets:
        position = {gene: index for index, gene in enumerate(genes)}
        membership = np.zeros((len(genes), len(gene_sets)))
        for column, members in enumerate(gene_sets.values()):
            rows = [position[gene] for gene in members if gene in position]
            membership[rows, column] = 1.0
        columns.append(membership)
        names += [f"set:{name}" for name in gene_sets]
    return np.hstack(columns).astype(np.float32), names


def node_labels(genes: Sequence[str], labels: pd.Series) -> np.ndarray:
    """Class labels of the graph's nodes for the latent classifier.

    Parameters
    ----------
    genes
        The graph's nodes, in order.
    labels
        Gene → class (integers ≥ 0, or −1 / NaN for "no label"), e.g. :func:`image_cluster_labels`.

    Returns
    -------
    numpy.ndarray
        One int64 label per node; genes absent from ``labels`` (or with NaN) get −1.
    """
    if labels.index.has_duplicates:
        raise ValueError("labels has duplicated genes in its index")
    genes = list(genes)
    if len(set(genes)) != len(genes):
        raise ValueError("genes must be unique (they are the graph's nodes)")
    aligned = pd.to_numeric(labels, errors="coerce").reindex(genes).to_numpy(dtype=np.float64)
    given = labels.reindex(genes).notna().to_numpy()
    if np.isnan(aligned[given]).any():
        raise ValueError("labels must be numeric")
    aligned = np.where(np.isnan(aligned), -1.0, aligned)
    if (aligned != np.round(aligned)).any() or (aligned < -1).any():
        raise ValueError("labels must be integers ≥ −1 (−1: no label)")
    return aligned.astype(np.int64)


def image_cluster_labels(gene_embeddings: pd.DataFrame, n_clusters: int,
                         held_out: str | None = None) -> pd.Series:
    """Clusters of the genes' mean image embeddings: the classes of the latent classifier.

    Complete-linkage agglomerative clustering (Euclidean) of the rows, as the reference's "physical"
    labels. The held-out gene (e.g. the left-out target of a leave-one-target-out run) takes no part
    in the clustering and gets −1.

    Parameters
    ----------
    gene_embeddings
        Genes (index, unique) × embedding dimensions.
    n_clusters
        Number of clusters (≤ the number of genes clustered).
    held_out
        A gene of the index to leave out, or ``None``.

    Returns
    -------
    pandas.Series
        Int64 labels named ``cluster``, indexed like ``gene_embeddings``; clusters are numbered in
        the order of their first gene in row order (the cluster of the first clustered row is 0).
    """
    if gene_embeddings.index.has_duplicates:
        raise ValueError("gene_embeddings has duplicated genes in its index")
    if held_out is not None and held_out not in gene_embeddings.index:
        raise ValueError(f"held-out gene {held_out!r} is not a row of gene_embeddings")
    keep = np.ones(len(gene_embeddings), dtype=bool) if held_out is None else (gene_embeddings.index != held_out)
    values = gene_embeddings.to_numpy(dtype=np.float64)[keep]
    if not np.isfinite(values).all():
        raise ValueError("gene_embeddings contains NaN or infinite values")
    if n_clusters < 1 or n_clusters > len(values):
        raise ValueError(f"n_clusters={n_clusters} must lie between 1 and the {len(values)} genes clustered")
    if n_clusters == 1:
        raw = np.zeros(len(values), dtype=np.int64)
    else:
        raw = AgglomerativeClustering(n_clusters=n_clusters, metric="euclidean",
                                      linkage="complete").fit_predict(values)
    clusters, first_row = np.unique(raw, return_index=True)
    renumber = np.empty(clusters.max() + 1, dtype=np.int64)
    renumber[clusters[np.argsort(first_row)]] = np.arange(len(clusters))
    labels = np.full(len(gene_embeddings), -1, dtype=np.int64)
    labels[keep] = renumber[raw]
    return pd.Series(labels, index=gene_embeddings.index, name="cluster")


def _check_inputs(features: np.ndarray, edges: np.ndarray,
                  labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated float32 features, int64 edges and int64 labels (see :func:`train_gae`)."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise ValueError(f"features must be nodes × features with ≥ 2 nodes and ≥ 1 feature, got shape "
                         f"{features.shape}")
    if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
        raise ValueError("features must be numeric without NaN or infinite values")
    n_nodes = features.shape[0]
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must be E × 2 node indices, got shape {edges.shape}")
    if edges.size and not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"edges must be integer node indices, got dtype {edges.dtype}")
    edges = edges.astype(np.int64)
    if edges.size and (edges.min() < 0 or edges.max() >= n_nodes):
        raise ValueError(f"edge indices must lie in [0, {n_nodes}) (the rows of features), got "
                         f"[{edges.min()}, {edges.max()}]")
    if (edges[:, 0] == edges[:, 1]).any():
        raise ValueError(f"edges contain {int((edges[:, 0] == edges[:, 1]).sum())} self-loops; the graph "
                         f"convolutions add their own")
    unordered = np.sort(edges, axis=1)
    n_unique = len(np.unique(unordered, axis=0)) if len(edges) else 0
    if n_unique != len(edges):
        raise ValueError(f"edges list {len(edges) - n_unique} undirected edges more than once (each must be "
                         f"listed once, in either orientation)")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n_nodes,):
            raise ValueError(f"labels must hold one label per node ({n_nodes}), got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if (labels < -1).any():
            raise ValueError("labels must be ≥ −1 (−1: masked)")
    return features.astype(np.float32), edges, labels


def _split_sizes(n_edges: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Train, validation and test edge counts of ``RandomLinkSplit`` for ``n_edges`` undirected edges."""
    n_val = int(val_fraction * n_edges)
    n_test = int(test_fraction * n_edges)
    return n_edges - n_val - n_test, n_val, n_test


def minimum_edges(val_fraction: float, test_fraction: float) -> int:
    """The fewest undirected edges whose split leaves ≥ 1 training, validation and test edge."""
    n_edges = max(1, math.floor(1 / val_fraction) - 1, math.floor(1 / test_fraction) - 1)
    while min(_split_sizes(n_edges, val_fraction, test_fraction)) < 1:
        n_edges += 1
    return n_edges


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU) and Python's ``random`` (PyG's negative sampling); restore both afterwards."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def _isolated(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module from its own seed, leaving the global torch stream untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _objective(model: _Model, x: Tensor, edge_index: Tensor, pos: Tensor, neg: Tensor, targets: Tensor | None,
               labelled: Tensor | None, params: GaeParams) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Weighted total loss, latent codes and unweighted loss parts of one full-graph pass."""
    z = model.gae.encode(x, edge_index)
    parts = {"link": model.gae.recon_loss(z, pos, neg)}
    total = params.alpha * parts["link"]
    if model.feature_head is not None:
        parts["feat"] = F.l1_loss(model.feature_head(z), x)
        total = total + params.beta * parts["feat"]
    if model.classifier is not None:
        assert targets is not None and labelled is not None
        parts["class"] = F.cross_entropy(model.classifier(z[labelled]), targets[labelled])
        total = total + params.gamma * parts["class"]
    return total, z, parts


def train_gae(features: np.ndarray, edges: np.ndarray, params: GaeParams, labels: np.ndarray | None = None,
              progress_bar: bool = False) -> GaeResult:
    """Train the graph autoencoder on one graph and embed its nodes.

    Seeds ``torch`` and Python's ``random`` with ``params.seed`` (their global states are restored on
    return), splits the edges with ``RandomLinkSplit`` (``val_fraction``/``test_fraction``, one fixed
    negative per positive), builds the encoder, then the optional heads from their own seeds
    (``seed + 1``: feature decoder, ``seed + 2``: classifier; so adding a head does not change the
    encoder's initial weights or the negatives drawn). Each epoch is one Adam step on the full graph:
    link loss on the training positives against as many fresh negatives sampled on the training
    message-passing graph, plus β·L1 feature reconstruction and γ·cross-entropy of the labelled nodes;
    then the validation loss (same weights, eval mode, the split's fixed negatives) decides early
    stopping. The best epoch's weights are restored for the test metrics and the embeddings.

    Parameters
    ----------
    features
        N × F node features (e.g. :func:`node_features`), finite.
    edges
        E × 2 integer node indices in ``[0, N)``; each undirected edge listed once, in either
        orientation. Self-loops and repeated edges are errors.
    params
        Hyper-parameters; ``graph="split_graph"`` passes messages over the training edges for training
        and validation and over training + validation edges for testing, ``"full_graph"`` over all
        edges everywhere (the held-out edges then leak into the encoder, as in the reference option).
    labels
        N integer classes of the latent classifier, −1 for masked nodes (no loss). Classes are
        ``0 … max label``. The classifier is used when labels are given, γ > 0 and some node is labelled.
    progress_bar
        Show a tqdm bar over epochs.

    Returns
    -------
    GaeResult
        Embeddings of the best weights on the full graph, the history, test metrics and split sizes.
    """
    x_np, edges, labels = _check_inputs(features, edges, labels)
    n_nodes, n_features = x_np.shape
    needed = minimum_edges(params.val_fraction, params.test_fraction)
    if len(edges) < needed:
        raise ValueError(f"{len(edges)} edges are too few to split: val_fraction={params.val_fraction} and "
                         f"test_fraction={params.test_fraction} need at least {needed} edges for ≥ 1 training, "
                         f"validation and test edge")
    device = resolve_device(params.device)
    use_classifier = labels is not None and params.gamma > 0 and bool((labels >= 0).any())
    edge_tensor = torch.from_numpy(edges).t()
    full_edge_index = torch.cat([edge_tensor, edge_tensor.flip(0)], dim=1)

    with _seeded(params.seed):
        splitter = RandomLinkSplit(num_val=params.val_fraction, num_test=params.test_fraction, is_undirected=True,
                                   add_negative_train_samples=True, split_labels=True, neg_sampling_ratio=1.0)
        train_data, val_data, test_data = splitter(Data(edge_index=full_edge_index, num_nodes=n_nodes))
        if val_data.neg_edge_label_index.size(1) == 0 or test_data.neg_edge_label_index.size(1) == 0:
            raise ValueError("the graph is too dense to sample negative (absent) edges for validation and testing")
        gae = GAE(GCNEncoder(n_features, params.hidden_dim, params.latent_dim))
        feature_head = None
        if params.beta > 0:
            feature_head = _isolated(lambda: feature_decoder(params.latent_dim, params.hidden_dim, n_features),
                                     params.seed + FEATURE_DECODER_SEED_OFFSET)
        classifier = None
        if use_classifier:
            assert labels is not None
            n_classes = int(labels.max()) + 1
            classifier = _isolated(lambda: nn.Linear(params.latent_dim, n_classes),
                                   params.seed + CLASSIFIER_SEED_OFFSET)
        model = _Model(gae, feature_head, classifier).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)

        x = torch.from_numpy(x_np).to(device)
        full = full_edge_index.to(device)
        if params.graph == "split_graph":
            train_graph, val_graph, test_graph = (train_data.edge_index.to(device), val_data.edge_index.to(device),
                                                  test_data.edge_index.to(device))
        else:
            train_graph = val_graph = test_graph = full
        train_pos = train_data.pos_edge_label_index.to(device)
        val_pos, val_neg = val_data.pos_edge_label_index.to(device), val_data.neg_edge_label_index.to(device)
        test_pos, test_neg = test_data.pos_edge_label_index.to(device), test_data.neg_edge_label_index.to(device)
        targets = labelled = None
        if use_classifier:
            assert labels is not None
            targets = torch.from_numpy(labels).to(device)
            labelled = targets >= 0

        rows: list[dict[str, float]] = []
        best_loss, best_epoch, best_state = math.inf, 0, None
        bar = tqdm(range(1, params.epochs + 1), desc="GAE", unit="epoch", disable=not progress_bar)
        for epoch in bar:
            model.train()
            optimizer.zero_grad()
            train_neg = negative_sampling(train_graph, num_nodes=n_nodes, num_neg_samples=train_pos.size(1))
            train_loss, _, train_parts = _objective(model, x, train_graph, train_pos, train_neg, targets, labelled,
                                                    params)
            train_loss.backward()
            optimizer.step()

            model.eval()
            with torch.no_grad():
                val_loss, z, val_parts = _objective(model, x, val_graph, val_pos, val_neg, targets, labelled, params)
                val_auc, val_ap = model.gae.test(z, val_pos, val_neg)
            row = {"epoch": epoch, "train_loss": train_loss.item()}
            row.update({f"train_{name}": value.item() for name, value in train_parts.items()})
            row["val_loss"] = val_loss.item()
            row.update({f"val_{name}": value.item() for name, value in val_parts.items()})
            row.update(val_auc=float(val_auc), val_ap=float(val_ap))
            rows.append(row)
            if progress_bar:
                bar.set_postfix(val_loss=f"{row['val_loss']:.4f}", val_auc=f"{row['val_auc']:.3f}", refresh=False)

            if row["val_loss"] < best_loss:
                best_loss, best_epoch = row["val_loss"], epoch
                best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
            elif epoch - best_epoch >= params.patience:
                break
        bar.close()

        if best_state is not None:  # None only when every validation loss was NaN: keep the last weights
            model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            test_auc, test_ap = model.gae.test(model.gae.encode(x, test_graph), test_pos, test_neg)
            embeddings = model.gae.encode(x, full).cpu().numpy().astype(np.float32)

    return GaeResult(embeddings=embeddings, history=pd.DataFrame(rows), best_epoch=best_epoch,
                     test_auc=float(test_auc), test_ap=float(test_ap), n_train_edges=int(train_pos.size(1)),
                     n_val_edges=int(val_pos.size(1)), n_test_edges=int(test_pos.size(1)),
                     stopped_early=len(rows) < params.epochs)
