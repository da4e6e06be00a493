"""What the reports of stages 05–06 compute (image2reg.network.report) and draw (image2reg.plotting.network)."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from image2reg import plotting
from image2reg.config import GaeParams, RegulatoryStageParams
from image2reg.data.network_inputs import InteractomeInputs
from image2reg.execute import ExecutionParams
from image2reg.layout import RunLayout, artifact_name, write_h5ad
from image2reg.network import pruning, regulatory_report, report
from image2reg.network.inference import IndexedNetwork
from image2reg.network.regulatory import GaeTask, gae_tasks

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

INPROCESS = ExecutionParams(backend="inprocess")
# The known PCST of tests/test_pcst.py on genes A–E: path A-B-C-D-E, a costly chord A-C and a costly edge A-E.
PATH = pd.DataFrame({"gene1": ["A", "B", "C", "D", "A", "A"], "gene2": ["B", "C", "D", "E", "C", "E"],
                     "cost": [0.3, 0.3, 0.5, 0.1, 5.0, 5.0]})
PRIZES = np.array([10.0, 0.0, 10.0, 0.0, 1.0])


def path_inputs(targets: list[str]) -> report.PcstInputs:
    indexed = IndexedNetwork.from_edges(PATH)
    return report.PcstInputs(network=indexed, costs=PATH["cost"].to_numpy(), prizes=PRIZES,
                             targets=indexed.indices(targets))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------------------------
# stage 05
# ---------------------------------------------------------------------------------------------------------------
def test_confidence_cutoffs():
    assert report.confidence_cutoffs(0.25).tolist() == [0.25, 0.5, 0.75, 1.0]
    assert len(report.confidence_cutoffs(0.001)) == 1000 and report.confidence_cutoffs(0.001)[-1] == 1.0
    with pytest.raises(ValueError, match="scan step"):
        report.confidence_cutoffs(1.5)


def test_prune_network_cuts_low_confidence_edges_then_hubs():
    # {A, B, C} joined by cheap edges, {D, E, F, G} a larger cheap chain, C-D costly
    network = pd.DataFrame({"gene1": ["A", "B", "C", "D", "E", "F"], "gene2": ["B", "C", "D", "E", "F", "G"],
                            "cost": [0.1, 0.2, 0.9, 0.1, 0.1, 0.1]})
    pruned = report.prune_network(network, ["A", "E"], scan_step=0.25, confidence_cutoff=0.5,
                                  hub_quantiles=[0.5, 1.0], hub_quantile=None)
    assert pruned.edges[["gene1", "gene2"]].values.tolist() == [["D", "E"], ["E", "F"], ["F", "G"]]
    assert pruned.hubs == [] and pruned.summary == {"n_nodes": 4, "n_edges": 3, "mean_degree": 1.5,
                                                    "targets_covered": 1}
    assert pruned.confidence_scan["cutoff"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert pruned.confidence_scan["n_nodes"].tolist() == [4, 4, 4, 7]  # the scan runs before the pruning
    assert pruned.hub_scan["quantile"].tolist() == [0.5, 1.0]
    untouched = report.prune_network(network, [], scan_step=0.5, confidence_cutoff=None, hub_quantiles=[1.0],
                                     hub_quantile=None)
    assert untouched.edges.equals(network) and untouched.hubs == []
    hubs = report.prune_network(network, ["A"], scan_step=0.5, confidence_cutoff=None, hub_quantiles=[1.0],
                                hub_quantile=0.9)
    expected, removed = pruning.prune_hubs(network, 0.9, ["A"])
    assert hubs.edges.equals(expected) and hubs.hubs == removed and len(removed) > 0


def test_pcst_inputs_costs_and_prizes():
    ppi = pd.concat([PATH, pd.DataFrame({"gene1": ["E"], "gene2": ["F"], "cost": [0.2]})], ignore_index=True)
    genes = list("ABCDEF")
    values = np.random.default_rng(0).poisson(3.0, size=(30, 6)).astype(float)
    cells = ad.AnnData(values, var=pd.DataFrame(index=genes))
    markers = pd.DataFrame({"log_fc": [10.0, 0.0, -10.0, 0.0, 1.0, -20.0]}, index=genes)
    inputs = InteractomeInputs(ppi=ppi, single_cell=cells, markers=markers, gene_sets={})
    # F was pruned away, but the targets get the largest |logFC| of the whole universe (its 20)
    by_ppi = report.pcst_inputs(PATH, inputs, ["B", "OUTSIDE"], edge_cost="ppi")
    assert by_ppi.genes.tolist() == list("ABCDE") and by_ppi.targets.tolist() == [1]
    assert by_ppi.prizes.tolist() == [10.0, 20.0, 10.0, 0.0, 1.0]
    np.testing.assert_array_equal(by_ppi.costs, PATH["cost"].to_numpy())
    by_rho = report.pcst_inputs(PATH, inputs, ["B"])
    rho = spearmanr(values[:, 2], values[:, 3]).statistic  # the edge C-D
    assert by_rho.costs[2] == pytest.approx(1 - abs(rho))
    with pytest.raises(ValueError, match="edge_cost"):
        report.pcst_inputs(PATH, inputs, ["B"], edge_cost="pearson")


def test_select_solution_keeps_the_smallest_beta_covering_most_targets():
    pcst = path_inputs(["E"])
    chosen = report.select_solution(pcst, [0.2, 1.0, 10.0], execution=INPROCESS)
    assert chosen.sweep["beta"].tolist() == [0.2, 1.0, 10.0]
    assert chosen.beta == 10.0 and chosen.solution.nodes.tolist() == [0, 1, 2, 3, 4]  # only β 10 reaches E
    given = report.select_solution(pcst, [0.2, 1.0, 10.0], 1.0, execution=INPROCESS)
    assert given.beta == 1.0 and given.solution.nodes.tolist() == [0, 1, 2]
    outside = report.select_solution(pcst, [0.2, 10.0], 1.0, execution=INPROCESS)  # β 1 solved on its own
    assert len(outside.sweep) == 2 and outside.solution.beta == 1.0 and outside.solution.nodes.tolist() == [0, 1, 2]


def test_interactome_tables_summary_and_files(tmp_path):
    pcst = path_inputs(["A"])
    solution = report.select_solution(pcst, [1.0], execution=INPROCESS).solution
    log_fc = pd.Series({"A": 2.0, "B": -1.0, "C": 0.5, "Z": 9.0})
    interactome = report.interactome_tables(pcst, solution, log_fc, ["A", "E"], robustness_repeats=3,
                                            robustness_noise=0.0, execution=INPROCESS)
    nodes, edges = interactome.nodes, interactome.edges
    assert nodes.index.name == "gene" and nodes.index.tolist() == ["A", "B", "C"]
    assert nodes["prize"].tolist() == [10.0, 0.0, 10.0] and nodes["log_fc"].tolist() == [2.0, -1.0, 0.5]
    assert nodes["is_target"].tolist() == [True, False, False] and nodes["degree"].tolist() == [2, 2, 2]
    assert nodes["cluster"].tolist() == [0, 0, 0] and interactome.n_clusters == 1
    assert nodes["robustness"].tolist() == [1.0, 1.0, 1.0]  # no noise: the same tree every time
    assert edges[["gene1", "gene2"]].values.tolist() == [["A", "B"], ["B", "C"], ["A", "C"]]
    assert edges["in_tree"].tolist() == [True, True, False] and interactome.n_tree_edges == 2
    assert edges["ppi_cost"].tolist() == [0.3, 0.3, 5.0]
    assert interactome.coverage(["A", "E"]) == (["A"], ["E"])
    assert "robustness" not in report.interactome_tables(pcst, solution, log_fc, ["A"]).nodes

    paths = report.save_interactome(tmp_path, interactome)
    assert paths["interactome_genes"].name == artifact_name("interactome", "interactome_genes")
    assert paths["interactome_genes"].read_text() == "A\nB\nC\n"
    assert pd.read_parquet(paths["nodes"]).equals(nodes) and pd.read_parquet(paths["edges"]).equals(edges)

    enriched = pd.DataFrame({"fdr": [0.01, 0.04, 0.2]})
    recovery = pd.DataFrame({"observed": [0.5]}, index=["nmi"])
    summary = report.interactome_summary(interactome, 1.0, ["A", "E"], ["H"], enriched, 0.05, recovery)
    assert summary == {"n_genes": 3, "n_edges": 3, "beta": 1.0, "n_clusters": 1, "targets": 2, "targets_covered": 1,
                       "targets_missing": ["E"], "hubs_removed": ["H"], "module_recovery": {"nmi": {"observed": 0.5}},
                       "enriched_gene_sets": 2}
    assert "module_recovery" not in report.interactome_summary(interactome, 1.0, ["A"], [], enriched, 0.01)


# ---------------------------------------------------------------------------------------------------------------
# stage 06
# ---------------------------------------------------------------------------------------------------------------
NODES = pd.DataFrame({"is_target": [True, False, True, False], "cluster": [0, 0, 1, 1]},
                     index=pd.Index(["X", "Y", "Z", "W"], name="gene"))
EDGES = pd.DataFrame({"gene1": ["Y", "X", "Z"], "gene2": ["Z", "Y", "W"]})


def test_graph_arrays_follow_the_node_order():
    genes, edges = regulatory_report.graph_arrays(NODES, EDGES)
    assert genes.tolist() == ["X", "Y", "Z", "W"] and edges.tolist() == [[1, 2], [0, 1], [2, 3]]
    with pytest.raises(KeyError, match="1 edge ends are not nodes"):
        regulatory_report.graph_arrays(NODES, pd.DataFrame({"gene1": ["X"], "gene2": ["Q"]}))


def test_regulatory_features_of_each_kind():
    cells = ad.AnnData(np.arange(20, dtype=float).reshape(4, 5), var=pd.DataFrame(index=["X", "Y", "Z", "W", "V"]))
    gene_sets = {"s1": ["X", "Y"], "s2": ["Q"]}
    both = regulatory_report.regulatory_features(cells, ["X", "Y", "Z"], gene_sets, ["expression", "gene_sets"])
    assert both.values.shape == (3, 6) and (both.n_cells, both.n_gene_sets) == (4, 2)
    sets = regulatory_report.regulatory_features(cells, ["X", "Y", "Z"], gene_sets, ["gene_sets"])
    assert sets.names == ["set:s1", "set:s2"] and sets.values.tolist() == [[1, 0], [1, 0], [0, 0]]
    cells_only = regulatory_report.regulatory_features(cells, ["X", "Y", "Z"], gene_sets, ["expression"])
    assert cells_only.n_gene_sets == 0 and cells_only.values[:, 0].tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="expression and/or gene_sets"):
        regulatory_report.regulatory_features(cells, ["X"], None, ["images"])


def test_read_image_embeddings_from_the_run(tmp_path):
    layout = RunLayout("toy", runs_dir=tmp_path)
    image = ad.AnnData(np.array([[1.0, 2.0], [3.0, 4.0]]), obs=pd.DataFrame(index=["X", "Z"]))
    loto = ad.AnnData(np.zeros((1, 2)), obs=pd.DataFrame({"model": ["X"], "gene": ["Z"]}, index=["X:Z"]))
    write_h5ad(image, layout.artifact("embeddings", "gene_embeddings"))
    write_h5ad(loto, layout.artifact("loto", "gene_embeddings_loto"))
    table, loto_back = regulatory_report.read_image_embeddings(layout)
    assert table.index.tolist() == ["X", "Z"] and table.to_numpy().tolist() == [[1, 2], [3, 4]]
    assert loto_back.obs_names.tolist() == ["X:Z"]


def test_labels_and_model_counts():
    table = regulatory_report.image_cluster_table(["X", "Y", "Z"], np.array([0, -1, 1]))
    assert table.columns.tolist() == ["X", "Z"] and table.index.tolist() == ["image cluster"]
    assert table.loc["image cluster"].tolist() == [0, 1]
    assert regulatory_report.image_cluster_table(["X"], None) is None
    tasks = [GaeTask(name=n, kind=k, folder="", features=np.zeros(1), edges=np.zeros(1), labels=None,
                     params=GaeParams()) for n, k in (("all", "all"), ("replicate_1", "replicate"), ("X", "loto"))]
    assert regulatory_report.model_counts(tasks) == {"all": 1, "replicate": 1, "loto": 1}


def test_link_prediction_summary():
    metrics = pd.DataFrame({"kind": ["all", "replicate", "replicate", "loto", "loto"],
                            "test_auc": [0.8, 0.6, 0.7, 0.9, 0.5], "test_ap": [0.75, 0, 0, 0, 0]})
    link = regulatory_report.link_prediction_summary(metrics)
    assert link == pytest.approx({"test_auc": 0.8, "test_ap": 0.75, "test_auc_over_splits_mean": 0.7,
                                  "test_auc_over_splits_sd": np.std([0.8, 0.6, 0.7]),
                                  "test_auc_over_splits_min": 0.6, "splits": 3, "loto_test_auc_mean": 0.7})
    assert "loto_test_auc_mean" not in regulatory_report.link_prediction_summary(metrics.iloc[:3])
    with pytest.raises(ValueError, match="no model on all genes"):
        regulatory_report.link_prediction_summary(metrics.iloc[3:].reset_index(drop=True))


def test_train_models_returns_one_row_per_task(tmp_path):
    genes = np.array([f"G{i}" for i in range(8)])
    edges = np.array([(i, (i + 1) % 8) for i in range(8)] + [(i, (i + 3) % 8) for i in range(8)])
    gae = GaeParams(hidden_dim=4, latent_dim=2, learning_rate=0.01, epochs=2, patience=2, seed=1)
    params = RegulatoryStageParams(labels="none", evaluation_seeds=2, gae=gae)
    tasks = gae_tasks(genes, np.random.default_rng(0).random((8, 3)).astype(np.float32), edges, params,
                      out_dir=tmp_path, targets=[])
    metrics = regulatory_report.train_models(tasks, INPROCESS)
    assert metrics["model"].tolist() == ["all", "replicate_1"] and metrics["seed"].tolist() == [1, 2]
    assert metrics["test_auc"].between(0, 1).all()


def test_embedding_clusters_are_by_direction():
    vectors = np.array([[1.0, 0.0], [5.0, 0.2], [0.0, 1.0], [0.1, 7.0]])
    labels = regulatory_report.embedding_clusters(vectors, 2)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert len(set(regulatory_report.embedding_clusters(vectors, 10))) == 3  # capped at rows − 1
    with pytest.raises(ValueError, match="at least 2"):
        regulatory_report.embedding_clusters(vectors[:1], 2)


@pytest.mark.slow  # numba compiles UMAP on first use
def test_umap_coordinates_are_seeded():
    vectors = np.random.default_rng(0).random((12, 4))
    first = regulatory_report.umap_coordinates(vectors, 15, seed=3)
    assert first.shape == (12, 2)
    np.testing.assert_array_equal(first, regulatory_report.umap_coordinates(vectors, 15, seed=3))


def test_embedding_table_recovery_and_summary():
    vectors = np.array([[1.0, 0.0], [5.0, 0.2], [0.0, 1.0], [0.1, 7.0]], dtype=np.float32)
    table = regulatory_report.embedding_table(vectors, NODES, np.array([0, -1, 1, -1]), 2)
    assert table.obs.columns.tolist() == ["is_target", "interactome_cluster", "image_cluster", "embedding_cluster"]
    assert table.obs_names.tolist() == ["X", "Y", "Z", "W"] and table.obs["image_cluster"].tolist() == [0, -1, 1, -1]
    assert table.obs["embedding_cluster"].nunique() == 2
    assert "image_cluster" not in regulatory_report.embedding_table(vectors, NODES, None, 2).obs
    with pytest.raises(ValueError, match="3 embeddings for 4"):
        regulatory_report.embedding_table(vectors[:3], NODES, None, 2)

    modules = pd.Series([7, 7, 8, 8], index=["X", "Y", "Z", "W"])
    recovery = regulatory_report.embedding_cluster_recovery(table, NODES["cluster"], EDGES, modules, seed=0)
    assert recovery.index.tolist() == ["interactome clusters", "true modules"]
    assert recovery.columns.tolist() == ["observed", "null_mean", "null_q95", "p_value"]
    assert recovery["observed"].tolist() == pytest.approx([1.0, 1.0])  # the clusters follow both
    alone = regulatory_report.embedding_cluster_recovery(table, NODES["cluster"], EDGES)
    assert alone.index.tolist() == ["interactome clusters"]

    features = regulatory_report.NodeFeatures(values=np.zeros((4, 3)), names=["cell:0", "cell:1", "set:s"])
    link = {"test_auc": 0.8, "splits": 2}
    summary = regulatory_report.regulatory_summary(4, features, 5, link, recovery)
    assert summary == {"n_genes": 4, "n_features": 3, "models": 5, "test_auc": 0.8, "splits": 2,
                       "embedding_clusters_nmi": {"interactome clusters": pytest.approx(1.0),
                                                  "true modules": pytest.approx(1.0)}}


def test_describe_loto_embeddings():
    obs = pd.DataFrame({"model": ["X", "X", "Z", "Z"], "gene": ["X", "Z", "X", "Z"]})
    loto = ad.AnnData(np.zeros((4, 2)), obs=obs.set_axis([f"r{i}" for i in range(4)]))
    task = GaeTask(name="X", kind="loto", folder="", features=np.zeros(1), edges=np.zeros(1), labels=None,
                   params=GaeParams())
    described = regulatory_report.describe_loto_embeddings([task], loto)
    assert described == "2 held-out targets × 2 genes, each from its own LOTO model"
    assert "learns no image labels" in regulatory_report.describe_loto_embeddings([], loto)


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------
def test_figures_draw_the_data_they_are_given():
    fig = plotting.costs_and_prizes(np.array([0.1, 0.5]), np.array([1.0, 2.0, 3.0]), np.array([2]), "spearman")
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "edge cost (spearman)"
    fig = plotting.robustness_histogram(pd.Series([0.2, 1.0]), 0.1, 5)
    assert "10% cost noise (5 repeats)" in fig.axes[0].get_xlabel()
    fig = plotting.interactome_by_module(NODES, EDGES, pd.Series({"X": 1, "Y": 1, "Z": 2, "W": 2}))
    assert fig.axes[0].get_legend().get_title().get_text() == "true_module"
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "val_auc": [0.5, 0.7]})
    fig = plotting.gae_history(history, 2)
    assert [line.get_label() for line in fig.axes[0].get_lines()][:2] == ["train", "validation"]
    metrics = pd.DataFrame({"kind": ["all", "replicate", "loto"], "test_auc": [0.8, 0.7, 0.6]})
    fig = plotting.link_auc_by_kind(metrics)
    assert [tick.get_text() for tick in fig.axes[0].get_xticklabels()] == ["all genes (edge splits)", "LOTO models"]
    coordinates = np.random.default_rng(0).random((4, 2))
    figures = plotting.regulatory_umaps(coordinates, NODES, np.array([0, -1, 1, -1]), pd.Series({"X": 1, "W": 2}))
    assert len(figures) == 3
    assert [t.get_text() for t in figures[0].axes[0].texts] == ["X", "", "Z", ""]  # targets named
    assert len(plotting.regulatory_umaps(coordinates, NODES)) == 1
