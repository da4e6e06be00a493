"""The specificity screen: tasks, one training per (gene, fold), resuming, backends, ranking and cut."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from image2reg.cnn import screen, train
from image2reg.cnn.screen import (
    RESULT_COLUMNS,
    ScreenTask,
    run_screen,
    run_screen_task,
    screen_tasks,
    select_impactful,
    specificity_scores,
)
from image2reg.cnn.train import TrainingParams
from image2reg.execute import ExecutionParams
from image2reg.images import pipeline

# A tiny model and training: the test checks the plumbing, not what the model learns.
TINY = dict(n_folds=2, n_inner=2, seed=7, latent_dim=16, input_size=32, width=4,
            training=TrainingParams(epochs=2, learning_rate=1e-2, batch_size=32, seed=3, device="cpu"))
# With 2 folds and 2 inner folds a gene needs 4 fields of view passing QC (splits.min_fields).
SCREENED = ["GENE013", "GENE022", "GENE040"]
TOO_SMALL = {"GENE005": 3, "GENE008": 3, "GENE012": 3}


@pytest.fixture(scope="module")
def stage01(two_plate_stage01) -> Path:
    """Stage 01 on the smoke world laid out on 2 plates (conftest): enough fields for 2 folds."""
    return two_plate_stage01


@pytest.fixture(scope="module")
def nuclei(stage01) -> pd.DataFrame:
    return pd.read_parquet(stage01 / "nuclei.parquet")


def tasks_for(nuclei, stage01, out_dir, genes=None, **settings):
    return screen_tasks(nuclei, genes, images_dir=stage01, out_dir=out_dir, **{**TINY, **settings})


def test_tasks_are_genes_times_folds_and_too_small_genes_are_reported(nuclei, stage01, tmp_path):
    tasks, skipped = tasks_for(nuclei, stage01, tmp_path)
    assert [(task.gene, task.fold) for task in tasks] == [(gene, fold) for gene in SCREENED for fold in (0, 1)]
    assert skipped.to_dict() == TOO_SMALL
    assert skipped.index.name == "gene"
    assert all(task.folder == tmp_path / task.gene / f"fold-{task.fold}" for task in tasks)
    assert all(task.branches == ("nucleus",) and task.control == "EMPTY" for task in tasks)
    again, _ = tasks_for(nuclei, stage01, tmp_path)
    assert again == tasks
    assert pickle.loads(pickle.dumps(tasks)) == tasks

    chosen, skipped = tasks_for(nuclei, stage01, tmp_path, genes=["GENE040", "GENE012", "GENE013"])
    assert [task.gene for task in chosen] == ["GENE040", "GENE040", "GENE013", "GENE013"]
    assert skipped.to_dict() == {"GENE012": 3}


def test_tasks_refuse_unknown_genes_the_control_and_a_small_control(nuclei, stage01, tmp_path):
    with pytest.raises(ValueError, match="unknown genes"):
        tasks_for(nuclei, stage01, tmp_path, genes=["NOPE"])
    with pytest.raises(ValueError, match="against itself"):
        tasks_for(nuclei, stage01, tmp_path, genes=["EMPTY"])
    with pytest.raises(ValueError, match="control 'EMPTY' has 8 fields"):
        tasks_for(nuclei, stage01, tmp_path, n_folds=2, n_inner=5)  # 10 fields needed, 8 of EMPTY pass QC
    with pytest.raises(ValueError, match="region branch needs illumination"):
        tasks_for(nuclei, stage01, tmp_path, branches=("nucleus", "region"))


def test_a_task_trains_tests_and_writes_metrics_then_done(nuclei, stage01, tmp_path):
    tasks, _ = tasks_for(nuclei, stage01, tmp_path, genes=["GENE013"])
    metrics = run_screen_task(tasks[1])
    assert list(metrics) == list(RESULT_COLUMNS)
    assert (metrics["gene"], metrics["fold"], metrics["epochs"]) == ("GENE013", 1, 2)
    assert 0.0 <= metrics["test_balanced_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    folder = tmp_path / "GENE013" / "fold-1"
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert json.loads((folder / "done.json").read_text()) == metrics
    assert (folder / "training" / "best_model.pt").exists()
    # the test part is the fold's test split of the screen's splits, all of it
    splits = screen.screen_splits(nuclei, "GENE013", control="EMPTY", n_folds=2, n_inner=2, seed=7)
    in_fold = splits[splits["fold"] == 1]["split"].value_counts()
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (in_fold["train"], in_fold["val"],
                                                                         in_fold["test"])


def test_a_done_task_is_not_run_again(nuclei, stage01, tmp_path, monkeypatch):
    tasks, _ = tasks_for(nuclei, stage01, tmp_path, genes=["GENE022"])
    first = run_screen_task(tasks[0])

    def refuse(*args, **kwargs):
        raise AssertionError("a finished task was trained again")

    monkeypatch.setattr(screen, "fit_and_predict", refuse)
    monkeypatch.setattr(screen, "screen_splits", refuse)
    assert run_screen_task(tasks[0]) == first
    table = run_screen(tasks[:1], ExecutionParams(backend="inprocess"), progress_bar=False)
    assert table.iloc[0].to_dict() == first


def test_a_killed_task_resumes_from_its_checkpoint_to_the_same_metrics(nuclei, stage01, tmp_path, monkeypatch):
    whole, _ = tasks_for(nuclei, stage01, tmp_path / "whole", genes=["GENE013"])
    killed, _ = tasks_for(nuclei, stage01, tmp_path / "killed", genes=["GENE013"])
    expected = run_screen_task(whole[0])

    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train, "_write_history", kill)  # dies right after the first epoch's checkpoint
        with pytest.raises(KeyboardInterrupt):
            run_screen_task(killed[0])
    folder = killed[0].folder
    assert (folder / "training" / "checkpoint.pt").exists() and not (folder / "done.json").exists()
    assert run_screen_task(killed[0]) == expected


def test_a_task_with_regions_trains_both_branches(nuclei, stage01, tmp_path):
    illumination = {plate: str(pipeline.illumination_path(stage01, plate))
                    for plate in nuclei["Metadata_Plate"].astype(str).unique()}
    tasks, _ = tasks_for(nuclei, stage01, tmp_path, genes=["GENE040"], branches=("nucleus", "region"),
                         region_size=48, illumination=illumination)
    metrics = run_screen_task(tasks[0])
    assert 0.0 <= metrics["test_balanced_accuracy"] <= 1.0
    assert (tmp_path / "GENE040" / "fold-0" / "done.json").exists()
    weights = torch.load(tmp_path / "GENE040" / "fold-0" / "training" / "best_model.pt", weights_only=True)
    assert {key.split(".")[1] for key in weights if key.startswith("trunks.")} == {"nucleus", "region"}


@pytest.mark.slow  # a local Dask cluster
def test_run_screen_gives_the_same_table_in_process_and_on_dask(nuclei, stage01, tmp_path):
    # one torch thread in both: float sums in another order (other thread counts) differ in the last bits
    local, _ = tasks_for(nuclei, stage01, tmp_path / "local", genes=SCREENED[:2], torch_threads=1)
    distributed, _ = tasks_for(nuclei, stage01, tmp_path / "dask", genes=SCREENED[:2], torch_threads=1)
    in_process = run_screen(local, ExecutionParams(backend="inprocess"), progress_bar=False)
    on_dask = run_screen(distributed, ExecutionParams(backend="dask", workers=2), progress_bar=False)
    assert list(in_process.columns) == list(RESULT_COLUMNS)
    assert list(zip(in_process["gene"], in_process["fold"])) == [(gene, fold) for gene in SCREENED[:2]
                                                                  for fold in (0, 1)]
    pd.testing.assert_frame_equal(in_process, on_dask, check_exact=True)
    assert in_process["test_balanced_accuracy"].nunique() > 1  # models that learnt something, not constants
    assert all((task.folder / "done.json").exists() for task in distributed)


# A hand-made ranking: three clearly specific genes, then a flat tail near chance.
HAND_MADE = {"A": [0.96, 0.94], "B": [0.92, 0.88], "C": [0.86, 0.84], "D": [0.61, 0.59], "E": [0.56, 0.54],
             "F": [0.53, 0.51], "G": [0.5, 0.5], "H": [0.52, 0.48]}


def hand_made_results() -> pd.DataFrame:
    rows = [{"gene": gene, "fold": fold, "test_balanced_accuracy": value}
            for gene, values in reversed(HAND_MADE.items()) for fold, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_specificity_scores_rank_genes_by_mean_test_balanced_accuracy():
    scores = specificity_scores(hand_made_results())
    assert scores.index.tolist() == ["A", "B", "C", "D", "E", "F", "G", "H"]  # G and H tie at 0.5: by name
    np.testing.assert_allclose(scores["specificity_score"], [0.95, 0.9, 0.85, 0.6, 0.55, 0.52, 0.5, 0.5])
    np.testing.assert_allclose(scores.loc["B", "specificity_sd"], np.std([0.92, 0.88], ddof=1))
    assert scores.loc["G", "specificity_sd"] == 0
    assert scores["rank"].tolist() == list(range(1, 9))
    assert (scores["n_folds"] == 2).all()
    with pytest.raises(ValueError, match="more than once"):
        specificity_scores(pd.concat([hand_made_results()] * 2))


def test_select_impactful_cuts_at_the_knee_or_after_top_n():
    scores = specificity_scores(hand_made_results())
    # scaled: x = i/7, y = (s - 0.5)/0.45; chord - y is largest at D (0.571 - 0.222), so A, B, C are kept
    assert select_impactful(scores) == ["A", "B", "C"]
    assert select_impactful(scores.sample(frac=1, random_state=0)) == ["A", "B", "C"]
    assert select_impactful(scores, method="top_n", top_n=5) == ["A", "B", "C", "D", "E"]
    with pytest.raises(ValueError, match="top_n must be"):
        select_impactful(scores, method="top_n")
    with pytest.raises(ValueError, match="top_n applies"):
        select_impactful(scores, top_n=3)
    linear = specificity_scores(pd.DataFrame({"gene": list("abcd"), "fold": 0,
                                              "test_balanced_accuracy": [0.9, 0.8, 0.7, 0.6]}))
    with pytest.raises(ValueError, match="no knee"):
        select_impactful(linear)


def test_screen_task_defaults_are_the_reference_screen():
    task = ScreenTask(gene="G", fold=0, images_dir="in", out_dir="out")
    assert (task.latent_dim, task.n_folds, task.n_inner, task.control) == (512, 4, 5, "EMPTY")
    assert task.training.learning_rate == 1e-5 and task.training.weight_decay == 5e-4


def test_the_screen_summary_holds_its_headline_numbers():
    scores = pd.DataFrame({"specificity_score": [0.9, 0.7, 0.5], "baseline_score": [0.8, 0.6, 0.55]},
                          index=["A", "B", "C"])
    summary = screen.screen_summary(scores, ["A", "B"], pd.Series({"D": 1}))
    assert summary["screened"] == 3 and summary["skipped"] == 1 and summary["impactful"] == 2
    assert summary["impactful_genes"] == ["A", "B"] and summary["chance"] == 0.5
    assert summary["specificity_mean"] == pytest.approx(0.7)
    assert summary["specificity_impactful_mean"] == pytest.approx(0.8)
    assert summary["baseline_mean"] == pytest.approx(0.65)
    json.dumps(summary)  # plain types, for summary.json
