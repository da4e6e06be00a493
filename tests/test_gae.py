"""Graph autoencoder (stage 06): node features, training, early stopping, classifier labels, input checks."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from image2reg.network.gae import GaeParams, image_cluster_labels, minimum_edges, node_features, node_labels, train_gae

# Small and fast: a few hundred tiny full-graph steps per run.
SMALL = dict(hidden_dim=16, latent_dim=8, learning_rate=0.01, epochs=40, patience=40, gamma=0.0, seed=3)


def planted_partition(blocks: int, size: int, p_in: float, p_out: float, noise: float = 0.5,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (noisy block indicators), E × 2 edges (i < j) and block of a stochastic block model."""
    rng = np.random.default_rng(seed)
    block = np.repeat(np.arange(blocks), size)
    first, second = np.triu_indices(len(block), 1)
    keep = rng.random(len(first)) < np.where(block[first] == block[second], p_in, p_out)
    features = np.eye(blocks)[block] + noise * rng.standard_normal((len(block), blocks))
    return features.astype(np.float32), np.stack([first[keep], second[keep]], axis=1), block


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny graphs train fastest on one thread (and OpenMP threads crawl on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_graph() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return planted_partition(blocks=3, size=20, p_in=0.4, p_out=0.01)


def test_node_features_scale_each_cell_over_genes_and_append_set_memberships():
    expression = np.array([[0.0, 2.0, 4.0, 8.0],     # cell 0: min 0, max 8
                           [1.0, 1.0, 1.0, 1.0],     # cell 1: constant -> zeros
                           [5.0, 0.0, 10.0, 5.0]])   # cell 2: min 0, max 10
    features, names = node_features(expression, ["A", "B", "C", "D"], {"S1": ["B", "D", "Z"], "S2": ["Q"]})
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, np.array([[0.0, 0.0, 0.5, 0.0, 0.0],
                                                      [0.25, 0.0, 0.0, 1.0, 0.0],
                                                      [0.5, 0.0, 1.0, 0.0, 0.0],
                                                      [1.0, 0.0, 0.5, 1.0, 0.0]], dtype=np.float32))
    assert names == ["cell:0", "cell:1", "cell:2", "set:S1", "set:S2"]
    only_expression, names = node_features(expression, ["A", "B", "C", "D"], None)
    np.testing.assert_array_equal(only_expression, features[:, :3])
    assert names == ["cell:0", "cell:1", "cell:2"]
    with pytest.raises(ValueError, match="4 gene columns but 3 genes"):
        node_features(expression, ["A", "B", "C"], None)
    with pytest.raises(ValueError, match="NaN"):
        node_features(np.where(expression == 5.0, np.nan, expression), ["A", "B", "C", "D"], None)


def test_same_seed_gives_identical_runs_and_another_seed_differs(small_graph):
    features, edges, _ = small_graph
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    first = train_gae(features, edges, GaeParams(**SMALL))
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state  # restored
    again = train_gae(features, edges, GaeParams(**SMALL))
    assert first.embeddings.shape == (60, 8) and first.embeddings.dtype == np.float32
    assert np.array_equal(first.embeddings, again.embeddings)
    pd.testing.assert_frame_equal(first.history, again.history, check_exact=True)
    assert (first.test_auc, first.best_epoch) == (again.test_auc, again.best_epoch)
    other = train_gae(features, edges, GaeParams(**{**SMALL, "seed": 4}))
    assert not np.allclose(first.embeddings, other.embeddings)
    assert not first.history["train_loss"].equals(other.history["train_loss"])
    # the message-passing graph matters; the split itself does not depend on it
    full = train_gae(features, edges, GaeParams(**{**SMALL, "graph": "full_graph"}))
    assert (full.n_train_edges, full.n_val_edges, full.n_test_edges) == (
        first.n_train_edges, first.n_val_edges, first.n_test_edges)
    assert not np.allclose(first.embeddings, full.embeddings)


def test_link_prediction_on_a_planted_partition():
    features, edges, _ = planted_partition(blocks=4, size=30, p_in=0.4, p_out=0.005, seed=0)
    params = GaeParams(hidden_dim=32, latent_dim=16, learning_rate=0.01, epochs=150, patience=50, gamma=0.0, seed=0)
    result = train_gae(features, edges, params)
    # int(0.1 E) validation and int(0.2 E) test edges, the rest for training
    assert result.n_val_edges == int(0.1 * len(edges)) and result.n_test_edges == int(0.2 * len(edges))
    assert result.n_train_edges + result.n_val_edges + result.n_test_edges == len(edges)
    # blocks alone cap the AUC near 0.9 (5% of the edges join blocks); chance is 0.5
    assert result.test_auc >= 0.8 and result.test_ap >= 0.7
    assert result.history["val_auc"].iloc[-1] > result.history["val_auc"].iloc[0]
    assert result.history["train_link"].iloc[-1] < result.history["train_link"].iloc[0]


def test_early_stopping_restores_the_best_epoch(small_graph):
    features, edges, _ = small_graph
    params = GaeParams(**{**SMALL, "epochs": 500, "patience": 8})
    result = train_gae(features, edges, params)
    history = result.history
    assert result.stopped_early and len(history) == result.best_epoch + params.patience < params.epochs
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    best = history["val_loss"].to_numpy()
    assert best[result.best_epoch - 1] == best.min() and (best[result.best_epoch:] > best.min()).all()
    # a run that ends at the best epoch follows the same path: its last weights are the restored ones
    truncated = train_gae(features, edges, params.model_copy(update={"epochs": result.best_epoch}))
    assert not truncated.stopped_early and truncated.best_epoch == result.best_epoch
    assert np.array_equal(truncated.embeddings, result.embeddings)
    assert truncated.test_auc == result.test_auc
    pd.testing.assert_frame_equal(truncated.history, history.iloc[:result.best_epoch], check_exact=True)


def test_masked_nodes_are_never_classifier_targets(small_graph):
    features, edges, block = small_graph
    params = GaeParams(**{**SMALL, "gamma": 1.0})
    plain = train_gae(features, edges, params, labels=None)
    # all masked: no classifier at all
    masked = train_gae(features, edges, params, labels=np.full(60, -1))
    assert np.array_equal(masked.embeddings, plain.embeddings)
    assert "train_class" not in masked.history
    # one class among the labelled nodes: its cross-entropy and gradient are exactly 0, so the run equals
    # the unlabelled one unless a masked (-1) node were used as a target of another class
    one_class = np.where(block == 0, 0, -1)
    single = train_gae(features, edges, params, labels=one_class)
    assert (single.history["train_class"] == 0).all()
    assert np.array_equal(single.embeddings, plain.embeddings)
    pd.testing.assert_frame_equal(single.history[plain.history.columns], plain.history, check_exact=True)


def test_feature_decoder_and_classifier_are_trained(small_graph):
    features, edges, block = small_graph
    labels = np.where(np.arange(60) % 2 == 0, block, -1)  # half the nodes labelled with their block
    params = GaeParams(**{**SMALL, "epochs": 100, "patience": 100, "beta": 1.0, "gamma": 1.0})
    history = train_gae(features, edges, params, labels=labels).history
    assert {"train_feat", "train_class", "val_feat", "val_class"} <= set(history.columns)
    first, last = history.iloc[0], history.iloc[-1]
    assert last["train_class"] < 0.25 * first["train_class"]  # from about log(3)
    assert last["train_feat"] < 0.8 * first["train_feat"]
    np.testing.assert_allclose(history["train_loss"], history["train_link"] + history["train_feat"]
                               + history["train_class"], rtol=1e-5)


def test_image_cluster_labels_known_groups_and_held_out_gene():
    points = pd.DataFrame([[10.0, 10.0], [0.0, 0.0], [10.2, 9.9], [0.1, 0.3], [20.0, 0.0], [0.2, 0.1],
                           [5.0, 5.0]], index=["g1", "g2", "g3", "g4", "g5", "g6", "held"])
    labels = image_cluster_labels(points, n_clusters=3, held_out="held")
    assert labels.tolist() == [0, 1, 0, 1, 2, 1, -1]  # numbered by first row: g1 -> 0, g2 -> 1, g5 -> 2
    assert labels.index.equals(points.index) and labels.dtype == np.int64
    # the held-out gene takes no part: moving it (it would otherwise be its own cluster) changes nothing
    moved = points.copy()
    moved.loc["held"] = [-1000.0, 1000.0]
    assert image_cluster_labels(moved, n_clusters=3, held_out="held").equals(labels)
    assert image_cluster_labels(moved, n_clusters=3).iloc[:6].tolist() != labels.iloc[:6].tolist()
    # renumbering follows row order, not sklearn's arbitrary ids
    reordered = points.iloc[[4, 0, 1, 2, 3, 5, 6]]
    assert image_cluster_labels(reordered, n_clusters=3, held_out="held").tolist() == [0, 1, 2, 1, 2, 2, -1]
    with pytest.raises(ValueError, match="n_clusters=7 .* 6 genes clustered"):
        image_cluster_labels(points, n_clusters=7, held_out="held")
    with pytest.raises(ValueError, match="'absent' is not a row"):
        image_cluster_labels(points, n_clusters=2, held_out="absent")


def test_node_labels_align_to_the_graph_order():
    labels = pd.Series([2, 0, 1], index=["C", "A", "B"])
    assert node_labels(["A", "B", "X", "C"], labels).tolist() == [0, 1, -1, 2]
    with pytest.raises(ValueError, match="integers"):
        node_labels(["A"], pd.Series([0.5], index=["A"]))


@pytest.mark.parametrize("change, message", [
    (lambda f, e, lab: (f[0], e, lab), "nodes × features"),
    (lambda f, e, lab: (np.where(f > 1.5, np.nan, f), e, lab), "NaN"),
    (lambda f, e, lab: (f, e[:, :1], lab), r"E × 2"),
    (lambda f, e, lab: (f, e.astype(float), lab), "integer node indices"),
    (lambda f, e, lab: (f, np.vstack([e, [[0, 60]]]), lab), r"\[0, 60\)"),
    (lambda f, e, lab: (f, np.vstack([e, [[-1, 3]]]), lab), r"\[0, 60\)"),
    (lambda f, e, lab: (f, np.vstack([e, [[5, 5]]]), lab), "self-loops"),
    (lambda f, e, lab: (f, np.vstack([e, e[:1, ::-1]]), lab), "more than once"),
    (lambda f, e, lab: (f, e, np.zeros(59, dtype=int)), "one label per node"),
    (lambda f, e, lab: (f, e, np.full(60, -2)), "≥ −1"),
    (lambda f, e, lab: (f, e[:9], lab), "9 edges are too few to split.*at least 10 edges"),
])
def test_bad_inputs_are_refused(small_graph, change, message):
    features, edges, _ = small_graph
    bad_features, bad_edges, bad_labels = change(features, edges, None)
    with pytest.raises(ValueError, match=message):
        train_gae(bad_features, bad_edges, GaeParams(**SMALL), labels=bad_labels)


def test_params_and_minimum_edges():
    assert minimum_edges(0.1, 0.2) == 10 and minimum_edges(0.3, 0.3) == 4
    with pytest.raises(ValidationError, match="val_fraction \\+ test_fraction must be < 1"):
        GaeParams(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValidationError, match="alpha, beta, gamma"):
        GaeParams(alpha=0, beta=0, gamma=0)
    with pytest.raises(ValidationError):
        GaeParams(hidden_size=3)  # unknown field
