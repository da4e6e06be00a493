"""What the reports of stages 02-04 compute: the screen's ranking and truth check, the multi-class and LOTO
summaries, confusion, similarity, UMAP, activity and the figures drawn from them."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

from image2reg import plotting
from image2reg.cnn.embed import EMBEDDINGS, EmbeddingTask
from image2reg.cnn.report import (
    LOTO_COLUMNS,
    MULTICLASS_COLUMNS,
    activity_summary,
    class_labels,
    confusion_table,
    embedding_activity,
    embeddings_summary,
    gene_umap,
    held_out_targets,
    loto_embeddings,
    loto_summary,
    module_labels,
    multiclass_summary,
    nearest_trained_genes,
    nucleus_umap,
    perturbation_similarity,
    ranked_screen,
    read_histories,
    screened_genes,
    training_history,
    truth_check,
)
from image2reg.layout import TaskFiles
from image2reg.profiling.activity import field_activity

matplotlib.use("Agg")


def screen_results(baseline: bool = True) -> pd.DataFrame:
    """Two folds of six genes: g0 best, g5 worst; the baseline ranks them the other way round."""
    rows = []
    for k in range(6):
        for fold, offset in enumerate((-0.01, 0.01)):
            row = {"gene": f"g{k}", "fold": fold, "test_balanced_accuracy": 0.95 - 0.08 * k + offset,
                   "epochs": 3 + fold, "best_epoch": 1 + fold}
            if baseline:
                row["baseline_test_balanced_accuracy"] = 0.5 + 0.05 * k
            rows.append(row)
    return pd.DataFrame(rows)


def test_screened_genes_leave_out_constructs_and_the_control_unless_params_name_genes(tmp_path):
    nuclei = pd.DataFrame({"Metadata_Gene": ["EMPTY", "LacZ", "B", "A", "A"],
                           "Metadata_ControlType": [None, "construct", "", None, np.nan]})
    assert screened_genes(nuclei, None, control="EMPTY") == (["A", "B"], [])
    listed = tmp_path / "genes.txt"
    listed.write_text("B\nC\n")
    assert screened_genes(nuclei, listed, control="EMPTY") == (["B"], ["C"])
    assert screened_genes(nuclei, listed, control="EMPTY", genes=["A"]) == (["A"], ["C"])
    assert screened_genes(nuclei, tmp_path / "absent.txt", control="EMPTY", genes=[]) == (["A", "B"], [])


def test_ranked_screen_joins_the_baseline_and_marks_the_impactful_genes():
    scores, impactful = ranked_screen(screen_results(), method="top_n", top_n=2)
    assert impactful == ["g0", "g1"] and scores.index.tolist() == [f"g{k}" for k in range(6)]
    assert scores["impactful"].tolist() == [True, True, False, False, False, False]
    assert scores["baseline_score"].to_numpy() == pytest.approx(0.5 + 0.05 * np.arange(6))
    assert scores["specificity_score"].to_numpy() == pytest.approx(0.95 - 0.08 * np.arange(6))
    plain, _ = ranked_screen(screen_results(baseline=False), method="top_n", top_n=1)
    assert "baseline_score" not in plain
    with pytest.raises(ValueError, match="top_n must be between 1"):
        ranked_screen(screen_results(), method="top_n", top_n=7)


def test_truth_check_of_a_perfect_screen_and_a_reversed_baseline():
    scores, _ = ranked_screen(screen_results(), method="top_n", top_n=2)
    truth = pd.DataFrame({"impactful": [True, True, True, False, False, False, True],
                          "effect_class": ["strong", "strong", "weak", "none", "none", "none", "strong"]},
                         index=[*(f"g{k}" for k in range(6)), "unscreened"])
    check = truth_check(scores, truth)
    assert check.auroc == 1.0 and check.tpr[-1] == 1.0 and check.fpr[0] == 0.0
    assert check.summary == {"auroc": 1.0, "n_screened": 6, "n_true_impactful": 3, "n_selected": 2,
                             "selected_true": 2, "baseline_auroc": 0.0}
    assert check.selected.loc["strong", True] == 2 and check.selected.loc["weak", False] == 1
    assert check.selected.loc["none", False] == 3 and check.selected.to_numpy().sum() == 6
    with pytest.raises(KeyError, match=r"lacks the screened genes \['g5'\]"):
        truth_check(scores, truth.drop(index="g5"))


def test_class_labels_and_the_confusion_table_keep_every_class_in_order():
    classes = class_labels(["B", "A", "B"], "EMPTY")
    assert classes == ["A", "B", "EMPTY"]
    table = confusion_table(["A", "A", "EMPTY", "EMPTY"], ["A", "EMPTY", "EMPTY", "EMPTY"], classes)
    assert table.index.name == "true" and table.columns.name == "predicted"
    assert table.index.tolist() == table.columns.tolist() == classes
    assert table.to_numpy().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 2]]


def multiclass_metrics() -> pd.DataFrame:
    return pd.DataFrame({"model": ["fold-0", "fold-1"], "n_classes": 4, "chance": 0.25,
                         "test_balanced_accuracy": [0.5, 0.7], "baseline_test_balanced_accuracy": [0.3, 0.4],
                         **{column: 1 for column in MULTICLASS_COLUMNS[1:7]}})


def test_multiclass_and_activity_summaries():
    summary = multiclass_summary(multiclass_metrics())
    assert summary == pytest.approx({"classes": 4, "chance": 0.25, "test_bac_mean": 0.6,
                                     "test_bac_sd": np.sqrt(0.02), "baseline_bac_mean": 0.35})
    assert isinstance(summary["classes"], int)
    activity = pd.DataFrame({"mean_average_precision": [0.9, 0.5, 0.1], "active": [True, True, False],
                             "mean_average_precision_classical": [0.6, np.nan, 0.3],
                             "active_classical": [True, False, False]}, index=["A", "B", "C"])
    assert activity_summary(activity) == pytest.approx({"active_cnn": 2, "active_classical": 1, "map_cnn": 0.5,
                                                        "map_classical": 0.45})
    combined = embeddings_summary(multiclass_metrics(), activity)
    assert list(combined) == [*summary, "active_cnn", "active_classical", "map_cnn", "map_classical"]
    with pytest.raises(ValueError, match="no model metrics"):
        multiclass_summary(multiclass_metrics().iloc[:0])


def test_read_histories_by_task_name_and_a_missing_one(tmp_path):
    tasks = [EmbeddingTask(kind="multiclass", genes=("A",), images_dir="", out_dir=str(tmp_path), fold=fold)
             for fold in range(2)]
    folder = tasks[0].folder / TaskFiles.TRAINING
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1], "val_balanced_accuracy": [0.5, 0.6]}).to_csv(folder / TaskFiles.HISTORY,
                                                                               index=False)
    with pytest.raises(FileNotFoundError, match="task fold-1 has not been trained"):
        read_histories(tasks)
    histories = read_histories(tasks[:1])
    assert list(histories) == ["fold-0"] and histories["fold-0"]["val_balanced_accuracy"].tolist() == [0.5, 0.6]


def test_perturbation_similarity_centres_on_the_control():
    genes = ad.AnnData(np.array([[1, 1], [3, 1], [1, 4], [2, 1], [1, 3]], dtype=np.float32),
                       obs=pd.DataFrame(index=["EMPTY", "A", "B", "C", "D"]))
    result = perturbation_similarity(genes, "EMPTY")
    assert result.shifts.index.tolist() == ["A", "B", "C", "D"]
    assert result.shifts.loc["A"].tolist() == [2, 0] and result.shifts.loc["D"].tolist() == [0, 2]
    similarity = result.similarity
    assert similarity.loc["A", "C"] == pytest.approx(1) and similarity.loc["A", "B"] == pytest.approx(0)
    assert np.diag(similarity) == pytest.approx(1)
    assert sorted(result.order) == ["A", "B", "C", "D"]
    for first, second in (("A", "C"), ("B", "D")):  # the same direction clusters first
        assert abs(result.order.index(first) - result.order.index(second)) == 1
    with pytest.raises(KeyError, match="no embedding for the control 'CTRL'"):
        perturbation_similarity(genes, "CTRL")


def test_module_labels():
    assert module_labels(None) is None
    labels = module_labels(pd.DataFrame({"module": [0, 2]}, index=["A", "B"]))
    assert labels.name == "true module" and labels.to_dict() == {"A": "0", "B": "2"}


def test_a_gene_umap_needs_five_genes():
    assert gene_umap(pd.DataFrame(np.eye(4)), seed=0) is None


@pytest.mark.slow  # numba compiles UMAP on first use (about a minute)
def test_umaps_sample_reproducibly():
    values = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    sample, coordinates = nucleus_umap(values, max_nuclei=30, n_neighbors=5, seed=3)
    assert sample.tolist() == np.sort(np.random.default_rng(3).choice(40, size=30, replace=False)).tolist()
    assert coordinates.shape == (30, 2) and np.isfinite(coordinates).all()
    everything, _ = nucleus_umap(values, max_nuclei=100, n_neighbors=5, seed=3)
    assert everything.tolist() == list(range(40))
    assert gene_umap(pd.DataFrame(values[:8]), seed=0).shape == (8, 2)


def field_nuclei() -> tuple[ad.AnnData, pd.DataFrame]:
    """Three wells of two fields of four nuclei for the control and the genes A (shifted) and B (not)."""
    rng = np.random.default_rng(0)
    rows = []
    for gene in ("EMPTY", "A", "B"):
        for well in range(3):
            for field in range(2):
                rows += [{"Metadata_Gene": gene, "Metadata_Plate": "P1", "Metadata_Well": f"{gene}{well}",
                          "image_path": f"{gene}{well}_{field}.tif", "model": f"fold-{field}"}] * 4
    obs = pd.DataFrame(rows)
    obs["nucleus"] = np.arange(100, 100 + len(obs))
    shift = (obs["Metadata_Gene"] == "A").to_numpy()[:, None] * 3.0
    embeddings = rng.normal(size=(len(obs), 4)) + shift
    profiles = pd.DataFrame(rng.normal(size=(len(obs), 3)) + shift, index=obs["nucleus"].to_numpy(),
                            columns=["area", "intensity", "texture"])
    nuclei = ad.AnnData(embeddings.astype(np.float32), obs=obs.set_axis(obs["nucleus"].astype(str)))
    return nuclei, profiles


def test_embedding_activity_scores_embeddings_and_imputed_classical_profiles():
    nuclei, profiles = field_nuclei()
    profiles.iloc[0, 1] = np.nan
    extra = pd.DataFrame([[9.0, 9.0, 9.0]], index=[7], columns=profiles.columns)  # not embedded: ignored
    shuffled = pd.concat([profiles, extra]).sample(frac=1, random_state=0)
    activity = embedding_activity(nuclei, shuffled, "EMPTY", seed=2)
    assert sorted(activity.index) == ["A", "B"]
    assert activity.loc["A", "mean_average_precision"] > activity.loc["B", "mean_average_precision"]
    assert activity.loc["A", "mean_average_precision_classical"] > activity.loc["B", "mean_average_precision_classical"]
    values = profiles.to_numpy()
    values[0, 1] = np.median(values[1:, 1])  # the median of the feature's other values
    expected = field_activity(values, nuclei.obs.reset_index(drop=True), "EMPTY", seed=2)
    assert activity["mean_average_precision_classical"].to_dict() == expected["mean_average_precision"].to_dict()
    assert activity["active_classical"].to_dict() == expected["active"].to_dict()
    # the embeddings are scaled within each fold model's space, the classical profiles (one space) are not
    within = field_activity(np.asarray(nuclei.X), nuclei.obs.reset_index(drop=True), "EMPTY", seed=2, model="model")
    assert activity["mean_average_precision"].to_dict() == within["mean_average_precision"].to_dict()
    with pytest.raises(KeyError, match="1 embedded nuclei have no classical profile"):
        embedding_activity(nuclei, profiles.drop(index=profiles.index[3]), "EMPTY")


def write_task_embeddings(task: EmbeddingTask, latents: dict[str, list[float]], predicted: list[str]) -> None:
    """One nucleus per condition in ``latents`` (the held-out one marked), predictions of the held-out nuclei."""
    obs = pd.DataFrame({"Metadata_Gene": list(latents), "split": ["test"] * len(latents)})
    obs.loc[obs["Metadata_Gene"] == task.held_out, "split"] = "held_out"
    obs["predicted_class"] = obs["Metadata_Gene"]
    target = obs.loc[obs["split"] == "held_out"].iloc[[0] * len(predicted)].assign(predicted_class=predicted)
    obs = pd.concat([obs[obs["split"] == "test"], target], ignore_index=True)
    X = np.array([latents[gene] for gene in obs["Metadata_Gene"]], dtype=np.float32)
    task.folder.mkdir(parents=True)
    ad.AnnData(X, obs=obs.set_axis([f"n{k}" for k in range(len(obs))])).write_h5ad(task.folder / EMBEDDINGS)


def test_loto_embeddings_targets_and_assignments(tmp_path):
    common = {"kind": "loto", "genes": ("A", "B", "C"), "images_dir": "", "out_dir": str(tmp_path)}
    tasks = [EmbeddingTask(held_out=gene, **common) for gene in ("A", "B", "C")]
    base = {"EMPTY": [0, 0], "A": [1, 0], "B": [0, 1], "C": [1, 1]}
    write_task_embeddings(tasks[0], base, ["B", "B", "EMPTY", "C"])
    write_task_embeddings(tasks[1], base, ["A"])
    write_task_embeddings(tasks[2], base, ["A", "B"])
    loto, assignment = loto_embeddings(tasks, class_labels("ABC", "EMPTY"))
    assert loto.n_obs == 12 and {"model", "gene", "n_nuclei", "is_target"} <= set(loto.obs)
    assert loto.obs.loc[loto.obs["is_target"], ["model", "gene"]].to_numpy().tolist() == [["A", "A"], ["B", "B"],
                                                                                         ["C", "C"]]
    assert assignment.index.tolist() == ["A", "B", "C"] and assignment.columns.tolist() == ["A", "B", "C", "EMPTY"]
    assert assignment.loc["A"].tolist() == [0, 0.5, 0.25, 0.25] and assignment.loc["C"].tolist() == [0.5, 0.5, 0, 0]
    assert held_out_targets(loto, ["A", "C"]).tolist() == ["A", "B", "C"]
    with pytest.raises(RuntimeError, match=r"no LOTO embedding for \['D'\]"):
        held_out_targets(loto, ["A", "D"])


def loto_table(models: dict[str, dict[str, list[float]]]) -> ad.AnnData:
    """Gene embeddings of LOTO models (model → condition → embedding), the model's name its target."""
    obs = pd.DataFrame([{"model": model, "gene": gene, "is_target": gene == model}
                        for model, genes in models.items() for gene in genes])
    X = np.array([vector for genes in models.values() for vector in genes.values()], dtype=np.float32)
    return ad.AnnData(X, obs=obs.set_axis([f"{row.model}/{row.gene}" for row in obs.itertuples()]))


def test_nearest_trained_genes_and_the_loto_summary():
    loto = loto_table({"A": {"A": [2, 1.1], "B": [1, 2], "C": [3, 1], "EMPTY": [1, 1]},
                       "B": {"A": [2, 0], "B": [0, -1], "C": [0, 2], "EMPTY": [0, 0]},
                       "EMPTY": {"A": [1, 0], "B": [0, 1], "EMPTY": [1, 1]}})
    plain = nearest_trained_genes(loto, "EMPTY")
    assert plain.index.tolist() == ["A", "B"] and plain["nearest_trained_gene"].tolist() == ["C", "A"]
    assert plain["cosine"].tolist() == pytest.approx([1 / np.sqrt(1.01), 0.0], abs=1e-6)
    truth = pd.DataFrame({"module": [0, 1, 0]}, index=["A", "B", "C"])
    neighbours = nearest_trained_genes(loto, "EMPTY", truth)
    assert neighbours["same_module"].tolist() == [True, False]
    assert neighbours["chance"].tolist() == pytest.approx([0.5, 0.0])
    metrics = pd.DataFrame({"test_balanced_accuracy": [0.6, 0.8, 0.7], "chance": [0.5, 0.5, 0.5]})
    assert loto_summary(metrics, 3, plain) == pytest.approx({"models": 3, "targets": 3, "test_bac_mean": 0.7,
                                                             "chance": 0.5})
    assert loto_summary(metrics, 3, neighbours) == pytest.approx(
        {"models": 3, "targets": 3, "test_bac_mean": 0.7, "chance": 0.5, "nearest_same_module": 0.5,
         "nearest_same_module_chance": 0.25})
    assert set(LOTO_COLUMNS) >= {"held_out", "test_balanced_accuracy", "chance"}


def test_training_epochs_and_activity_bars_draw_every_model_and_perturbation():
    results = screen_results()
    figure = plotting.training_epochs(results)
    counts = [sum(patch.get_height() for patch in ax.patches) for ax in figure.axes]
    assert counts == [len(results), len(results)]
    activity = pd.DataFrame({"mean_average_precision": [0.9, 0.2], "mean_average_precision_classical": [0.4, 0.1]},
                            index=["A", "B"])
    figure = plotting.activity_bars(activity)
    (ax,) = figure.axes
    assert [patch.get_height() for patch in ax.patches] == pytest.approx([0.9, 0.2, 0.4, 0.1])
    assert [label.get_text() for label in ax.get_xticklabels()] == ["A", "B"]
    matplotlib.pyplot.close("all")


def test_training_history(tmp_path):
    with pytest.raises(FileNotFoundError, match="task .* has not been trained"):
        training_history(tmp_path)
    (tmp_path / TaskFiles.TRAINING).mkdir()
    pd.DataFrame({"epoch": [0, 1], "val_loss": [1.0, 0.5]}).to_csv(tmp_path / TaskFiles.TRAINING / TaskFiles.HISTORY,
                                                                   index=False)
    assert training_history(tmp_path)["val_loss"].tolist() == [1.0, 0.5]


def test_control_scaled_puts_each_model_on_its_controls_footing():
    from image2reg.cnn.report import control_scaled

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 3)), rng.normal(50, 5, (40, 3))]).astype(np.float32)
    obs = pd.DataFrame({"Metadata_Gene": (["EMPTY"] * 20 + ["A"] * 20) * 2, "model": ["fold-0"] * 40 + ["fold-1"] * 40},
                       index=[f"n{k}" for k in range(80)])
    scaled = control_scaled(ad.AnnData(x, obs=obs), "EMPTY")
    for model in ("fold-0", "fold-1"):
        controls = scaled[((obs["model"] == model) & (obs["Metadata_Gene"] == "EMPTY")).to_numpy()]
        np.testing.assert_allclose(controls.mean(axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(controls.std(axis=0), 1, atol=1e-9)
    assert abs(scaled[:40].mean() - scaled[40:].mean()) < 1  # the offset of 50 between the models is gone
