"""The report functions of stages 07 and 08: known answers, the same numbers as the building blocks, clear errors."""

from __future__ import annotations

from dataclasses import replace

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from translation_helpers import planted_data, random_data

from image2reg.cnn.embed import EmbeddingTask
from image2reg.config import ValidationStageParams
from image2reg.data.synthetic import PHENOTYPES
from image2reg.layout import RunLayout, TaskFiles
from image2reg.plotting import shift_sizes
from image2reg.translation import report, validation_report
from image2reg.translation.features import InputSettings, unit_rows
from image2reg.translation.grid import grid_ranks, nested_selection, settings_grid
from image2reg.translation.inputs import profile_table
from image2reg.translation.loto import baseline_ranks, loto_ranks, model_fit_predict, shared_regulatory
from image2reg.translation.metrics import rank_scores, topk_accuracy
from image2reg.translation.report import (
    ORACLE_ROWS,
    RANDOM_ROW,
    classical_label,
    classical_profiles,
    curve_bands,
    example_targets,
    grid_report,
    held_out_scores,
    model_label,
    nearest_genes,
    oracle_table,
    predict_held_out,
    replicate_scores,
    score_report,
    score_spread,
    translation_ranks,
    translation_summary,
)
from image2reg.translation.statistics import power_table
from image2reg.translation.transfer import baseline_transfer_ranks, transfer_comparison, transfer_ranks
from image2reg.translation.validation_report import (
    reference_regulatory,
    screen_genes,
    second_screen_embeddings,
    second_screen_genes,
    training_per_cluster,
    transfer_fit_predict,
    transfer_oracle,
    transfer_rank_table,
    transfer_reports,
    validation_summary,
)

matplotlib.use("Agg")

NTK = model_fit_predict("ntk", 1.0)


def fake_truth(genes, seed: int = 0) -> pd.DataFrame:
    """A synthetic world's genes table: programs ``z0 … z3``, a module and first-screen shifts for every gene."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(len(genes), 4)), index=pd.Index(list(genes), name="gene"),
                         columns=[f"z{i}" for i in range(4)])
    table["module"] = np.arange(len(genes)) % 3
    for phenotype in PHENOTYPES:
        table[f"shift_{phenotype}"] = rng.normal(size=len(genes))
    table["effect_size"] = rng.uniform(0.5, 2.0, len(genes))
    table["in_screen"] = np.arange(len(genes)) % 2 == 0
    return table


# ----------------------------------------------------------------------------------------------------------------
# stage 07


def test_labels():
    assert model_label("ntk", 1.0) == "ntk (reg 1)" and model_label("linear", 0.25) == "linear (reg 0.25)"
    assert classical_label("ntk (reg 1)") == "ntk (reg 1) on classical profiles"


def test_translation_ranks_are_the_loto_ranks_of_each_model_then_the_baselines():
    data = planted_data(True, seed=1)
    linear = model_fit_predict("linear", 1.0)
    ranks = translation_ranks(data, {"main": NTK, "linear": linear})
    assert list(ranks.columns) == ["main", "linear", "mean of all genes", "mean of training targets"]
    assert ranks["main"].equals(loto_ranks(data, NTK)) and ranks["linear"].equals(loto_ranks(data, linear))
    assert ranks["mean of all genes"].equals(baseline_ranks(data, "mean_all"))
    profiles = pd.DataFrame(np.random.default_rng(0).normal(size=(len(data.genes), 3)), index=data.genes)
    with_profiles = translation_ranks(data, {"main": NTK}, profiles)
    assert list(with_profiles.columns) == ["main", "main on classical profiles", "mean of all genes",
                                           "mean of training targets"]
    expected = loto_ranks(replace(data, image={t: profiles for t in data.targets}), NTK)
    assert with_profiles["main on classical profiles"].equals(expected)
    with pytest.raises(ValueError, match="no models"):
        translation_ranks(data, {})


def test_score_report_known_answers():
    targets = [f"T{i}" for i in range(4)]
    ranks = pd.DataFrame({"model": [0, 0, 0, 3], "mean of all genes": [9, 9, 9, 9],
                          "mean of training targets": [0, 9, 9, 9]}, index=targets)
    random = np.random.default_rng(0).integers(0, 20, size=(50, 4))
    table, p_values = score_report(ranks, random, None, "model", 20, max_k=10, auc_ks=[5, 10], seed=0)
    assert list(table.index) == [*ranks.columns, RANDOM_ROW]
    assert list(table.columns) == ["top1", "top5", "top10", "auc5", "auc10"]
    assert table.loc["model", "top1"] == 0.75 and table.loc["model", "top5"] == 1.0
    assert table.loc[RANDOM_ROW, "top5"] == pytest.approx(5 / 20)
    hits = (random < 1).mean(axis=1)
    assert p_values.loc["model", "p_random_top1"] == pytest.approx((1 + (hits >= 0.75).sum()) / 51)
    # paired, exact over the 16 sign patterns: 3 hits to none (only all three signs + do as well), then 2 to none
    assert p_values.loc["model", "p_mean_all_top1"] == pytest.approx(2 / 16)
    assert p_values.loc["model", "p_train_mean_top1"] == pytest.approx(4 / 16)
    assert not any(c.startswith("p_permuted") for c in p_values.columns)
    assert p_values.loc["mean of all genes"].filter(like="p_mean_all").isna().all()
    null = np.full((9, 4), 19)
    _, with_null = score_report(ranks, random, null, "model", 20, max_k=10, auc_ks=[5, 10], seed=0)
    assert with_null.loc["model", "p_permuted_top5"] == pytest.approx(1 / 10)
    assert with_null["p_permuted_top5"].drop("model").isna().all()


def test_curve_bands():
    ranks = pd.DataFrame({"a": [0, 1, 2], "b": [5, 5, 5]})
    curves, bands = curve_bands(ranks, np.zeros((7, 3), int), None, 4)
    assert list(curves) == ["a", "b"] and curves["a"].tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1])
    assert list(bands) == ["random gene"] and bands["random gene"][0].tolist() == [1, 1, 1, 1]
    _, with_null = curve_bands(ranks, np.zeros((7, 3), int), np.array([[0, 9, 9], [9, 9, 9]]), 4)
    low, high = with_null["shuffled pairs"]
    assert (low <= high).all() and high[0] == pytest.approx(np.quantile([1 / 3, 0], 0.975))


def test_example_targets():
    assert example_targets(pd.Series({"a": 5, "b": 0, "c": 3})) == ["b", "c", "a"]
    assert example_targets(pd.Series({"a": 5})) == ["a"]


def test_nearest_genes_marks_the_training_genes():
    candidates = pd.DataFrame([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]], index=["a", "b", "c"])
    table = nearest_genes(candidates, np.array([0.9, 0.0]), None, "a", k=2, training=["a"])
    assert list(table.columns) == ["gene", "distance", "training gene"]
    assert table["training gene"].tolist() == [False, True]


def test_oracle_table_rows_are_the_loto_scores_of_each_variant():
    data = random_data(n_genes=20, n_targets=5)
    truth = fake_truth(data.genes)
    oracle = oracle_table(data, NTK, truth, 0, max_k=10, auc_ks=[5])
    assert list(oracle.index) == list(ORACLE_ROWS.values())
    assert oracle.loc[ORACLE_ROWS["the method"]].to_dict() == rank_scores(loto_ranks(data, NTK), 10, [5])
    programs = unit_rows(truth.filter(regex=r"^z\d$").loc[data.genes].to_numpy())
    swapped = replace(data, regulatory={t: programs for t in data.targets})
    assert oracle.loc[ORACLE_ROWS["true_programs"]].to_dict() == rank_scores(loto_ranks(swapped, NTK), 10, [5])


def test_replicate_scores_and_their_spread():
    data = random_data(n_genes=20, n_targets=5)
    rng = np.random.default_rng(3)
    blocks = {model: rng.normal(size=(len(data.genes), 4)) for model in ("r1", "r0")}
    obs = pd.DataFrame({"model": np.repeat(list(blocks), len(data.genes)), "gene": np.tile(data.genes.astype(str), 2)})
    obs.index = obs["model"] + "/" + obs["gene"]
    table = ad.AnnData(np.vstack(list(blocks.values())), obs=obs)
    scores = replicate_scores(data, NTK, table, max_k=10, auc_ks=[5])
    assert list(scores.index) == ["r1", "r0"]
    block = pd.DataFrame(blocks["r0"], index=data.genes.astype(str))
    assert scores.loc["r0"].to_dict() == rank_scores(loto_ranks(shared_regulatory(data, block), NTK), 10, [5])
    spread = score_spread(pd.DataFrame({"top5": [0.2, 0.4, 0.9]}))
    assert spread["top5"].tolist() == pytest.approx([0.5, 0.2, 0.9]) and list(spread.index) == ["mean", "min", "max"]


def test_grid_report_scores_the_nested_selection():
    data = planted_data(True, seed=2, n_targets=8)
    values = {"reg": [0.1, 1.0], "use_y_train_mean": [False, True]}
    ranked, summary = grid_report(data, values, seed=0, execution=None, selection_ks=[5], max_k=10, auc_ks=[5, 10])
    assert list(summary) == ["grid_settings", "grid_best_top5_optimistic", "nested_top5", "nested_auc5",
                             "nested_auc10"]
    assert summary["grid_settings"] == len(ranked) == 4
    assert summary["grid_best_top5_optimistic"] == ranked["top5"].iloc[0] == ranked["top5"].max()
    ranks = grid_ranks(data, settings_grid(values), seed=0)
    accuracy = topk_accuracy(nested_selection(ranks, data.targets, [5])["rank"], 10)
    assert summary["nested_top5"] == accuracy[4] and summary["nested_auc10"] == pytest.approx(accuracy.mean())


def test_translation_summary_keys_and_values():
    table = pd.DataFrame({"top5": [0.5, 0.2, 0.1, 0.25], "auc10": [0.4, 0.3, 0.1, 0.2]},
                         index=["m", "m on classical profiles", "mean of all genes", RANDOM_ROW])
    p_values = pd.DataFrame({"p_random_top5": [0.01, 0.3, 0.9, np.nan], "p_permuted_top5": [0.02, np.nan, np.nan,
                                                                                              np.nan]},
                            index=table.index)
    power = power_table([0, 3, 30, 40], 20, [5])
    replicates = pd.DataFrame({"top5": [0.25, 0.75], "top1": [0.0, 0.5]}, index=["r0", "r1"])
    summary = translation_summary(targets=4, candidates=20, left_out=["X"], main="m", table=table, p_values=p_values,
                                  power=power, max_k=10, auc_ks=[10], replicates=replicates,
                                  grid={"grid_settings": 3})
    assert list(summary)[:8] == ["targets", "candidates", "left_out", "model", "top5", "auc10", "p_random_top5",
                                 "p_permuted_top5"]
    assert summary["random_expected_top5"] == 0.25 and summary["mean_all_top5"] == 0.1
    assert summary["top5_ci_low"] == power.loc["top5", "ci_low"]
    assert {k: v for k, v in summary.items() if k.startswith("classical_")} == {
        "classical_top5": 0.2, "classical_auc10": 0.3, "classical_p_random_top5": 0.3}
    assert summary["replicates_top5_mean"] == 0.5 and summary["replicates_top5_max"] == 0.75
    assert "replicates_top1_mean" not in summary and summary["replicates"] == 2
    assert list(summary)[-1] == "grid_settings"
    small = translation_summary(targets=4, candidates=20, left_out=[], main="m", table=table.drop(columns="top5")
                                .assign(top1=0.0), p_values=p_values, power=power, max_k=4, auc_ks=[10])
    assert small["mean_all_top5"] is None and "replicates" not in small


def test_predict_held_out_renders_fresh_fields_and_ranks_them(monkeypatch, tmp_path):
    rendered = []
    monkeypatch.setattr(report, "render_query_fields",
                        lambda genes, gene, n, params, out, seed: rendered.append((gene, n, out, seed)))
    calls = []

    def rank_genes(images, **options):
        calls.append((images, options))
        order = ["B", "A", "C"] if options["model"] == "loto:A" else ["C", "A", "B"]
        return pd.DataFrame({"gene": order, "rank": [1, 2, 3]})

    truth = fake_truth(["A", "B", "C"])
    queries = predict_held_out(truth, ["A", "B"], 3, None, rank_genes, queries_dir=tmp_path / "q",
                               work_dir=tmp_path / "w", seed=10, dataset="demo")
    assert rendered == [("A", 3, tmp_path / "q" / "A", 10), ("B", 3, tmp_path / "q" / "B", 11)]
    assert calls[1] == (tmp_path / "q" / "B", {"model": "loto:B", "work_dir": tmp_path / "w" / "B", "dataset": "demo"})
    assert queries["rank"].to_dict() == {"A": 2, "B": 3} and queries.loc["A", "top_3"] == "B, A, C"
    assert held_out_scores(pd.DataFrame({"rank": [1, 12, 10, 40]})) == {"predict_top10_fraction": 0.5,
                                                                        "predict_median_rank": 11.0}
    with pytest.raises(ValueError, match="no held-out conditions"):
        held_out_scores(queries.iloc[:0])


def test_classical_profiles_read_from_the_screen_and_images_stages(tmp_path):
    layout = RunLayout("demo", runs_dir=tmp_path)
    assert classical_profiles(layout, "EMPTY") is None
    rng = np.random.default_rng(0)
    profiles = pd.DataFrame(rng.normal(size=(6, 2)), columns=["f1", "f2"])
    nuclei = pd.DataFrame({"Metadata_Gene": ["EMPTY", "EMPTY", "EMPTY", "A", "A", "B"], "other": 1})
    for stage, key, frame in (("screen", "profiles", profiles), ("images", "nuclei", nuclei)):
        layout.artifact(stage, key).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(layout.artifact(stage, key))
    expected = profile_table(profiles, nuclei["Metadata_Gene"], "EMPTY")
    pd.testing.assert_frame_equal(classical_profiles(layout, "EMPTY"), expected)


# ----------------------------------------------------------------------------------------------------------------
# stage 08


def test_reference_regulatory(tmp_path):
    layout = RunLayout("ref", runs_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="run stages 05–06 of dataset 'ref' first"):
        reference_regulatory(layout)
    path = layout.artifact("regulatory", "regulatory_embeddings")
    path.parent.mkdir(parents=True)
    embeddings = ad.AnnData(np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32), obs=pd.DataFrame(index=["A", "B"]))
    embeddings.write_h5ad(path)
    table = reference_regulatory(layout)
    assert list(table.index) == ["A", "B"] and table.to_numpy().tolist() == [[0.6, 0.8], [0.0, 1.0]]


def test_second_screen_genes():
    truth = fake_truth(["A", "B", "C", "D", "E"])
    interactome = ["A", "B", "C", "D", "E", "F"]
    train, test = second_screen_genes(["B", "X", "A"], interactome, truth, None, 0)
    assert train == ["B", "A"] and test == ["C", "D", "E"]
    _, drawn = second_screen_genes(["B", "X", "A"], interactome, truth, 2, 0)
    assert drawn == sorted(np.random.default_rng(0).choice(["C", "D", "E"], size=2, replace=False)) and len(drawn) == 2


def test_screen_genes_by_fields_of_usable_nuclei():
    rows = [("EMPTY", "c1", True), ("A", "a1", True), ("A", "a2", True), ("A", "a3", False), ("B", "b1", True),
            ("B", "b2", False), ("C", "c2", True), ("D", "d1", False), ("F", "f1", True)]
    nuclei = pd.DataFrame(rows, columns=["Metadata_Gene", "image_path", "QC_pass"])
    split = screen_genes(nuclei, ["A", "B", "X"], ["A", "B", "C", "D", "E"], 2, "EMPTY")
    assert (split.train, split.test, split.short, split.needed) == (["A"], ["C"], ["B"], 2)
    assert split.usable["QC_pass"].all() and len(split.usable) == 6
    with pytest.raises(ValueError, match="no QC-passing nuclei of the control 'NT'"):
        screen_genes(nuclei, ["A"], ["A"], 2, "NT")


def test_second_screen_embeddings_average_trained_and_unseen_nuclei(monkeypatch, tmp_path):
    task = EmbeddingTask(kind="multiclass", genes=("A", "B"), images_dir=str(tmp_path / "images"),
                         out_dir=str(tmp_path / "models"))
    task.folder.mkdir(parents=True)
    trained = ad.AnnData(np.array([[1, 0], [3, 0], [0, 2], [5, 5]], dtype=np.float32),
                         obs=pd.DataFrame({"Metadata_Gene": ["A", "A", "B", "EMPTY"]}, index=list("0123")),
                         uns={"classes": ["A", "B", "EMPTY"]})
    trained.var_names = ["d0", "d1"]
    trained.write_h5ad(task.folder / TaskFiles.EMBEDDINGS)
    seen = {}

    def embed_nuclei(nuclei, **options):
        seen.update(options, genes=nuclei["Metadata_Gene"].tolist())
        return np.array([[2.0, 2.0], [4.0, 0.0], [1.0, 1.0]])

    monkeypatch.setattr(validation_report, "embed_nuclei", embed_nuclei)
    usable = pd.DataFrame({"Metadata_Gene": ["C", "A", "C", "D", "E"]})
    embedded = second_screen_embeddings(task, usable, ["C", "D"])
    assert seen["genes"] == ["C", "C", "D"] and seen["n_classes"] == 3
    assert seen["weights"] == task.folder / TaskFiles.TRAINING / TaskFiles.BEST_MODEL
    assert embedded.image.loc["A"].tolist() == [2.0, 0.0] and embedded.image.loc["C"].tolist() == [3.0, 1.0]
    assert list(embedded.image.index) == ["A", "B", "C", "D"]
    assert embedded.genes.obs["role"].tolist() == ["train", "train", "test", "test"]
    assert (embedded.train_nuclei, embedded.test_nuclei) == (3, 3)


def test_transfer_fit_predict_caps_the_neighbours_at_the_training_genes():
    params = ValidationStageParams(inputs={"n_neighbors": 5})
    rng = np.random.default_rng(0)
    x, y, x_test = rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), rng.normal(size=(1, 4))
    capped = model_fit_predict("ntk", 1.0, InputSettings(n_neighbors=3), seed=7)
    assert np.array_equal(transfer_fit_predict(params, 3, 7)(x, y, x_test), capped(x, y, x_test))


def transfer_inputs():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(12)]
    image = pd.DataFrame(rng.normal(size=(12, 3)), index=genes)
    regulatory = pd.DataFrame(unit_rows(rng.normal(size=(12, 4))), index=genes)
    return genes, image, regulatory, genes[:5], genes[5:]


def test_transfer_rank_table_and_the_clusters():
    genes, image, regulatory, train, test = transfer_inputs()
    clusters = pd.Series(np.arange(12) % 3, index=genes)
    ranks = transfer_rank_table(image, regulatory, train, test, NTK, "m", clusters, test[:2])
    assert list(ranks.columns) == ["m", "mean of all genes", "mean of training genes", "cluster", "restricted"]
    assert ranks["m"].equals(transfer_ranks(image, regulatory, train, test, NTK))
    assert ranks["mean of training genes"].equals(baseline_transfer_ranks(regulatory, train, test, "train_mean"))
    assert ranks["restricted"].tolist() == [True, True] + [False] * 5 and ranks.loc["G7", "cluster"] == 1
    assert training_per_cluster(pd.Series([0, 2, 2, 0], index=list("abcd")), ["b", "c"]).tolist() == [0, 0, 2]


def test_transfer_reports_leave_out_empty_groups():
    genes, image, regulatory, train, test = transfer_inputs()
    ranks = transfer_rank_table(image, regulatory, train, test, NTK, "m", pd.Series(0, index=genes), test)
    reports = transfer_reports(ranks, {"restricted": [], "all": test}, "m", 12, None, max_k=10, auc_ks=[5, 10],
                               random_repeats=20, seed=0)
    assert list(reports) == ["all"] and reports["all"].genes == test
    table, _, bands = transfer_comparison(ranks, test, "m", 12, None, max_k=10, auc_ks=[5, 10], random_repeats=20,
                                          seed=0)
    pd.testing.assert_frame_equal(reports["all"].table, table)
    pd.testing.assert_frame_equal(reports["all"].power, power_table(ranks.loc[test, "m"], 12, [5, 10]))
    assert list(reports["all"].bands) == list(bands)


def test_transfer_oracle_rows():
    genes, image, regulatory, train, test = transfer_inputs()
    truth = fake_truth(genes)
    oracle = transfer_oracle(image, regulatory, truth, train, test, test[:4], NTK, None, 0, max_k=10, auc_ks=[5])
    assert list(oracle.index) == list(ORACLE_ROWS.values()) and "score" in oracle
    method = rank_scores(transfer_ranks(image, regulatory, train, test, NTK).loc[test[:4]], 10, [5], score=True)
    assert oracle.loc[ORACLE_ROWS["the method"]].to_dict() == method
    assert not oracle.loc[ORACLE_ROWS["both_true"]].equals(oracle.loc[ORACLE_ROWS["the method"]])


def test_validation_summary_keys_and_values():
    genes, image, regulatory, train, test = transfer_inputs()
    ranks = transfer_rank_table(image, regulatory, train, test, NTK, "m", pd.Series(0, index=genes), test)
    reports = transfer_reports(ranks, {"all": test}, "m", 12, None, max_k=10, auc_ks=[5, 10], random_repeats=20,
                               seed=0)
    summary = validation_summary(reference="demo", train=train, test=test, restricted=[], candidates=12, main="m",
                                 metrics={"test_balanced_accuracy": 0.7, "chance": 0.25}, reports=reports)
    assert list(summary)[:8] == ["reference", "training_genes", "test_genes", "restricted_test_genes", "candidates",
                                 "model", "cnn_test_bac", "cnn_chance"]
    table = reports["all"].table
    assert summary["all_top5"] == table.loc["m", "top5"]
    assert summary["all_p_random_score"] == table.loc["m", "p_random_score"]
    assert summary["all_mean_all_score"] == table.loc["mean of all genes", "score"]
    assert summary["all_random_score"] == table.loc[RANDOM_ROW, "score"] and "all_top5_ci_low" in summary
    assert not any(key.startswith("restricted_top") or key.startswith("oracle") for key in summary)


def test_effect_sizes_plot():
    shifts = pd.DataFrame({"effect_size": [0.5, 1.0, 2.0]}, index=["A", "B", "C"])
    figure = shift_sizes(shifts, {"training genes": ["A"], "test genes": ["B", "C"]})
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["training genes", "test genes"]
