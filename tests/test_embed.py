"""Nucleus and gene perturbation embeddings: multi-class k-fold and LOTO tasks, resuming, params blocks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from image2reg.cnn import embed, train
from image2reg.cnn.embed import (
    EMBEDDINGS,
    EmbeddingTask,
    gene_embeddings,
    loto_tasks,
    multiclass_tasks,
    read_embeddings,
    run_embedding_task,
    run_embedding_tasks,
)
from image2reg.cnn.splits import loto_splits, multiclass_splits
from image2reg.cnn.tasks import EncoderSpec, encoder_spec
from image2reg.cnn.train import TrainingParams
from image2reg.config import (
    EmbeddingStageParams,
    LotoStageParams,
    ModelParams,
    ParamsError,
    ScreenStageParams,
    load_params,
)
from image2reg.execute import ExecutionParams
from image2reg.profiling.features import nucleus_profiles

ROOT = Path(__file__).resolve().parents[1]
LATENT = 8
# A tiny model and training: the tests check the plumbing, not what the model learns.
TINY = dict(seed=7, n_inner=2, torch_threads=1, encoder=EncoderSpec(latent_dim=LATENT, input_size=16, width=2),
            training=TrainingParams(epochs=1, learning_rate=1e-2, batch_size=32, seed=3, device="cpu"))
# In the world below (QC-passing nuclei / fields): EMPTY 25 / 8, GENE013 39 / 7, GENE022 16 / 4, GENE040 23 / 4.
# With 2 folds and 2 inner folds a condition needs 4 fields. Multi-class over GENE022 and GENE040 undersamples
# the control (25 -> 23 nuclei); LOTO over the three genes does not (GENE013 is larger than the control).
MULTICLASS_GENES = ("GENE022", "GENE040")
LOTO_GENES = ("GENE013", "GENE022", "GENE040")
TARGET = "GENE022"


@pytest.fixture(scope="module")
def stage01(two_plate_stage01) -> Path:
    """Stage 01 on the smoke world laid out on 2 plates (conftest): enough fields for 2 folds."""
    return two_plate_stage01


@pytest.fixture(scope="module")
def nuclei(stage01) -> pd.DataFrame:
    return pd.read_parquet(stage01 / "nuclei.parquet")


@pytest.fixture(scope="module")
def profiles_path(stage01, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "profiles.parquet"
    nucleus_profiles(stage01).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def multiclass(stage01, profiles_path, tmp_path_factory):
    """The two folds of the multi-class model, trained once (with the baseline); (tasks, metrics)."""
    out = tmp_path_factory.mktemp("multiclass")
    tasks = multiclass_tasks(list(MULTICLASS_GENES), n_folds=2, images_dir=str(stage01), out_dir=str(out),
                             baseline_profiles=str(profiles_path), **TINY)
    metrics = [run_embedding_task(task) for task in tasks]
    return tasks, metrics


@pytest.fixture(scope="module")
def loto(stage01, profiles_path, tmp_path_factory):
    """The LOTO model without TARGET, trained once (with the baseline); (task, metrics)."""
    out = tmp_path_factory.mktemp("loto")
    tasks = loto_tasks(list(LOTO_GENES), n_folds=2, images_dir=str(stage01), out_dir=str(out),
                       baseline_profiles=str(profiles_path), **TINY)
    task = next(task for task in tasks if task.held_out == TARGET)
    return task, run_embedding_task(task)


def usable(nuclei: pd.DataFrame, conditions) -> pd.DataFrame:
    return nuclei[nuclei["QC_pass"].astype(bool) & nuclei["Metadata_Gene"].isin(conditions)]


# --------------------------------------------------------------------------------------------
# multi-class, k-fold
# --------------------------------------------------------------------------------------------
def test_multiclass_tasks_are_one_per_fold(stage01, tmp_path):
    tasks = multiclass_tasks(["GENE040", "GENE022", "GENE040"], n_folds=3, images_dir=str(stage01),
                             out_dir=str(tmp_path), **TINY)
    assert [task.fold for task in tasks] == [0, 1, 2]
    assert all(task.kind == "multiclass" and task.n_folds == 3 and task.held_out is None for task in tasks)
    assert all(task.genes == ("GENE040", "GENE022") for task in tasks)  # repeats dropped, order kept
    assert [task.folder for task in tasks] == [tmp_path / f"fold-{k}" for k in range(3)]


def test_multiclass_folds_embed_every_usable_nucleus_exactly_once(multiclass, nuclei):
    tasks, metrics = multiclass
    parts = [ad.read_h5ad(task.folder / EMBEDDINGS) for task in tasks]
    embedded = np.concatenate([part.obs["nucleus"].to_numpy(np.int64) for part in parts])
    assert len(embedded) == len(set(embedded))  # no nucleus embedded twice

    genes = usable(nuclei, MULTICLASS_GENES)
    control = usable(nuclei, ["EMPTY"])
    assert len(control) > genes.groupby("Metadata_Gene").size().max()  # the control is undersampled
    in_control = np.isin(embedded, control.index)
    assert set(embedded[~in_control]) == set(genes.index)  # every nucleus of the genes
    assert in_control.sum() == genes["Metadata_Gene"].value_counts().max()  # control down to the largest gene
    splits, _ = multiclass_splits(nuclei, MULTICLASS_GENES, n_folds=2, n_inner=2, seed=TINY["seed"])
    assert set(embedded) == set(splits.index)

    classes = sorted([*MULTICLASS_GENES, "EMPTY"])
    for task, part, metric in zip(tasks, parts, metrics):
        assert part.uns["classes"].tolist() == classes
        assert part.X.dtype == np.float32 and part.X.shape == (part.n_obs, LATENT)
        assert np.isfinite(part.X).all()
        assert part.var_names.tolist() == [f"latent_{k}" for k in range(LATENT)]
        obs = part.obs
        assert (obs["split"] == "test").all()
        assert set(obs["nucleus"]) == set(splits.index[(splits["fold"] == task.fold) & (splits["split"] == "test")])
        assert (obs["Metadata_Gene"].to_numpy() == nuclei.loc[obs["nucleus"], "Metadata_Gene"].to_numpy()).all()
        assert (np.asarray(classes)[obs["label"]] == obs["Metadata_Gene"].to_numpy()).all()
        assert obs["predicted"].between(0, len(classes) - 1).all()
        assert (np.asarray(classes)[obs["predicted"]] == obs["predicted_class"].to_numpy()).all()

        assert (metric["model"], metric["kind"], metric["fold"], metric["held_out"]) == (task.name, "multiclass",
                                                                                      task.fold, None)
        assert metric["n_classes"] == 3 and metric["chance"] == pytest.approx(1 / 3)
        assert metric["n_test"] == part.n_obs and metric["n_held_out"] == 0
        assert metric["n_train"] + metric["n_val"] + metric["n_test"] == len(splits[splits["fold"] == task.fold])
        assert 0.0 <= metric["test_balanced_accuracy"] <= 1.0 and 0.0 <= metric["test_accuracy"] <= 1.0
        assert metric["test_accuracy"] == pytest.approx(np.mean(obs["label"] == obs["predicted"]))
        assert metric["epochs"] == 1 and metric["best_epoch"] == 1
        assert json.loads((task.folder / "metrics.json").read_text()) == metric
        assert json.loads((task.folder / "done.json").read_text()) == metric


def test_read_embeddings_concatenates_the_folds(multiclass):
    tasks, _ = multiclass
    combined = read_embeddings(tasks)
    sizes = [ad.read_h5ad(task.folder / EMBEDDINGS).n_obs for task in tasks]
    assert combined.n_obs == sum(sizes) and combined.n_vars == LATENT
    assert combined.obs_names.is_unique
    assert combined.obs.columns[0] == "model"
    assert combined.obs["model"].tolist() == ["fold-0"] * sizes[0] + ["fold-1"] * sizes[1]
    assert list(combined.obs["model"].cat.categories) == ["fold-0", "fold-1"]
    assert all(name.startswith(f"{model}/") for name, model in zip(combined.obs_names, combined.obs["model"]))
    assert combined.X.dtype == np.float32

    per_gene = gene_embeddings(combined)
    assert per_gene.obs_names.tolist() == sorted([*MULTICLASS_GENES, "EMPTY"])
    assert per_gene.obs["n_nuclei"].sum() == combined.n_obs
    expected = combined.X[(combined.obs["Metadata_Gene"] == "GENE040").to_numpy()].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(per_gene["GENE040"].X[0], expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# leave one target out
# --------------------------------------------------------------------------------------------
def test_loto_tasks_hold_out_each_gene_and_optionally_the_control(stage01, tmp_path):
    common = dict(images_dir=str(stage01), out_dir=str(tmp_path), n_folds=2, **TINY)
    tasks = loto_tasks(list(LOTO_GENES), **common)
    assert [task.held_out for task in tasks] == list(LOTO_GENES)
    assert all(task.kind == "loto" and task.genes == LOTO_GENES for task in tasks)
    assert [task.folder for task in tasks] == [tmp_path / gene for gene in LOTO_GENES]
    with_control = loto_tasks(list(LOTO_GENES), include_control=True, **common)
    assert [task.held_out for task in with_control] == [*LOTO_GENES, "EMPTY"]
    assert with_control[-1].folder == tmp_path / "EMPTY" and with_control[-1].genes == LOTO_GENES
    other_control = loto_tasks(["EMPTY", "GENE013"], include_control=True, control="GENE040", **common)
    assert [task.held_out for task in other_control] == ["EMPTY", "GENE013", "GENE040"]


def test_loto_without_the_control_embeds_all_control_nuclei(stage01, nuclei, tmp_path):
    task = loto_tasks(list(LOTO_GENES), include_control=True, images_dir=str(stage01), out_dir=str(tmp_path),
                      n_folds=2, **TINY)[-1]
    metrics = run_embedding_task(task)
    part = ad.read_h5ad(task.folder / EMBEDDINGS)
    assert part.uns["classes"].tolist() == list(LOTO_GENES) and part.uns["held_out"] == "EMPTY"
    assert metrics["n_classes"] == len(LOTO_GENES) and metrics["held_out"] == "EMPTY"
    held = part.obs[part.obs["split"] == "held_out"]
    assert set(held["nucleus"]) == set(usable(nuclei, ["EMPTY"]).index)  # all of them: nothing undersampled
    assert (held["label"] == -1).all() and metrics["n_held_out"] == len(held)
    assert "EMPTY" not in set(part.obs.loc[part.obs["split"] == "test", "Metadata_Gene"])


def test_loto_embeds_the_held_out_target_with_a_model_that_never_saw_it(loto, nuclei):
    task, metrics = loto
    part = ad.read_h5ad(task.folder / EMBEDDINGS)
    classes = sorted(["EMPTY", *[gene for gene in LOTO_GENES if gene != TARGET]])
    assert part.uns["classes"].tolist() == classes and TARGET not in part.uns["classes"]
    assert part.uns["held_out"] == TARGET and part.uns["model"] == TARGET
    assert metrics["n_classes"] == len(LOTO_GENES) == len(classes)
    assert metrics["chance"] == pytest.approx(1 / len(classes))
    assert (metrics["model"], metrics["kind"], metrics["fold"], metrics["held_out"]) == (TARGET, "loto", None, TARGET)

    obs = part.obs
    assert set(obs["split"]) == {"test", "held_out"}
    held = obs[obs["split"] == "held_out"]
    assert set(held["nucleus"]) == set(usable(nuclei, [TARGET]).index)  # all of the target's nuclei
    assert (held["Metadata_Gene"] == TARGET).all() and (held["label"] == -1).all()
    assert held["predicted_class"].isin(classes).all()
    assert metrics["n_held_out"] == len(held)
    test = obs[obs["split"] == "test"]
    assert TARGET not in set(test["Metadata_Gene"])
    assert (np.asarray(classes)[test["label"]] == test["Metadata_Gene"].to_numpy()).all()
    assert metrics["n_test"] == len(test)
    assert part.X.shape == (len(obs), LATENT) and part.X.dtype == np.float32

    splits, _ = loto_splits(nuclei, LOTO_GENES, TARGET, n_folds=2, n_inner=2, seed=TINY["seed"])
    trained = splits[splits["split"].isin(["train", "val"])].index
    assert not set(trained) & set(held["nucleus"])
    assert set(test["nucleus"]) == set(splits.index[splits["split"] == "test"])
    assert metrics["n_train"] + metrics["n_val"] == len(trained)

    per_condition = gene_embeddings(read_embeddings([task]), by=("model", "Metadata_Gene"))
    assert f"{TARGET}/{TARGET}" in per_condition.obs_names
    assert per_condition.obs.loc[f"{TARGET}/{TARGET}", "n_nuclei"] == len(held)


def test_baseline_is_scored_on_the_same_splits(multiclass, loto):
    _, fold_metrics = multiclass
    _, loto_metrics = loto
    for metrics in [*fold_metrics, loto_metrics]:
        assert 0.0 <= metrics["baseline_test_balanced_accuracy"] <= 1.0


# --------------------------------------------------------------------------------------------
# running once, resuming, determinism
# --------------------------------------------------------------------------------------------
def test_a_finished_task_is_only_read(multiclass, monkeypatch):
    tasks, metrics = multiclass

    def refuse(*args, **kwargs):
        raise AssertionError("a finished task was trained again")

    monkeypatch.setattr(embed, "fit_and_predict", refuse)
    before = (tasks[0].folder / EMBEDDINGS).stat().st_mtime_ns
    assert run_embedding_task(tasks[0]) == metrics[0]
    table = run_embedding_tasks(tasks, ExecutionParams(backend="inprocess"), progress_bar=False)
    assert table.to_dict("records") == metrics
    assert (tasks[0].folder / EMBEDDINGS).stat().st_mtime_ns == before


def test_run_embedding_tasks_runs_the_pending_ones_in_order(multiclass, tmp_path):
    tasks, metrics = multiclass
    fresh = replace(tasks[1], out_dir=str(tmp_path))  # fold 1 again, in a fresh folder
    table = run_embedding_tasks([tasks[0], fresh], ExecutionParams(backend="inprocess"), progress_bar=False)
    assert table["model"].tolist() == ["fold-0", "fold-1"]
    # the same task in a fresh folder: the same metrics and the same embeddings, bit for bit
    assert table.iloc[1].to_dict() == metrics[1]
    again = ad.read_h5ad(fresh.folder / EMBEDDINGS)
    first = ad.read_h5ad(tasks[1].folder / EMBEDDINGS)
    assert np.array_equal(again.X, first.X)
    pd.testing.assert_frame_equal(again.obs, first.obs)


def test_a_killed_task_resumes_to_the_same_embeddings(multiclass, tmp_path, monkeypatch):
    tasks, metrics = multiclass
    killed = replace(tasks[0], out_dir=str(tmp_path))

    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train, "_write_history", kill)  # dies right after the (only) epoch's checkpoint
        with pytest.raises(KeyboardInterrupt):
            run_embedding_task(killed)
    assert (killed.folder / "training" / "checkpoint.pt").exists()
    assert not (killed.folder / "done.json").exists() and not (killed.folder / EMBEDDINGS).exists()
    assert run_embedding_task(killed) == metrics[0]
    assert np.array_equal(ad.read_h5ad(killed.folder / EMBEDDINGS).X, ad.read_h5ad(tasks[0].folder / EMBEDDINGS).X)


# --------------------------------------------------------------------------------------------
# gene embeddings
# --------------------------------------------------------------------------------------------
def test_gene_embeddings_are_group_means():
    x = np.array([[1, 2], [3, 4], [5, 6], [10, 20], [0, 1]], np.float32)
    obs = pd.DataFrame({"Metadata_Gene": ["B", "A", "B", "A", "B"], "model": ["m2", "m1", "m1", "m1", "m2"]},
                       index=[f"n{k}" for k in range(5)])
    nuclei = ad.AnnData(x, obs=obs)
    nuclei.var_names = ["latent_0", "latent_1"]

    genes = gene_embeddings(nuclei)
    assert genes.obs_names.tolist() == ["A", "B"]
    assert genes.var_names.tolist() == ["latent_0", "latent_1"]
    assert genes.X.dtype == np.float32
    np.testing.assert_allclose(genes.X, [[6.5, 12], [2, 3]])
    assert genes.obs["n_nuclei"].tolist() == [2, 3]
    assert genes.obs["Metadata_Gene"].tolist() == ["A", "B"]

    pairs = gene_embeddings(nuclei, by=["model", "Metadata_Gene"])
    assert pairs.obs_names.tolist() == ["m1/A", "m1/B", "m2/B"]
    np.testing.assert_allclose(pairs.X, [[6.5, 12], [5, 6], [0.5, 1.5]])
    assert pairs.obs["n_nuclei"].tolist() == [2, 1, 2]
    assert pairs.obs[["model", "Metadata_Gene"]].values.tolist() == [["m1", "A"], ["m1", "B"], ["m2", "B"]]

    with pytest.raises(KeyError, match="Metadata_Plate"):
        gene_embeddings(nuclei, by=["Metadata_Plate"])


def _shifted_model_spaces(offset: float, seed: int = 0) -> ad.AnnData:
    """Two fold models whose spaces differ by ``offset`` (and a scale of 3); every gene's true embedding is 0
    but for MOVED (+1 in its own space's control SD units). SAME's nuclei fall mostly on model 1, EMPTY's
    and MOVED's evenly."""
    rng = np.random.default_rng(seed)
    rows, values = [], []
    share = {"EMPTY": 0.5, "SAME": 0.9, "MOVED": 0.5, "OTHER": 0.1}
    for gene, on_second in share.items():
        for k in range(400):
            space = int(k < on_second * 400)
            shift = 1.0 if gene == "MOVED" else 0.0
            point = rng.normal(shift, 1.0, 4)
            values.append(point * (3.0 if space else 1.0) + (offset if space else 0.0))
            rows.append({"Metadata_Gene": gene, "model": f"fold-{space}"})
    return ad.AnnData(np.array(values, np.float32), obs=pd.DataFrame(rows, index=[f"n{k}" for k in range(len(rows))]))


def test_gene_embeddings_put_each_model_space_on_its_control_footing():
    nuclei = _shifted_model_spaces(offset=10.0)
    pooled = gene_embeddings(nuclei)
    scaled = gene_embeddings(nuclei, control="EMPTY", model="model")

    def distance(genes: ad.AnnData, gene: str) -> float:
        return float(np.linalg.norm(genes[gene].X - genes["EMPTY"].X))

    # pooled, SAME and OTHER (no effect) sit far from the control only because their nuclei fall on another
    # model than the control's half-and-half; MOVED is not the farthest
    assert distance(pooled, "SAME") > distance(pooled, "MOVED") < distance(pooled, "OTHER")
    # per model: the control at 0, the genes without effect near it, MOVED at +1 SD on every dimension
    np.testing.assert_allclose(scaled["EMPTY"].X, 0, atol=1e-6)
    assert distance(scaled, "SAME") < 0.35 and distance(scaled, "OTHER") < 0.35
    np.testing.assert_allclose(scaled["MOVED"].X, 1.0, atol=0.25)
    assert scaled.uns["scaling"] == "standardised against the control 'EMPTY' of each model"
    assert pooled.uns["scaling"] == "none"
    # one model space: the per-model scaling is the pooled one
    one = nuclei.copy()
    one.obs["model"] = "fold-0"
    np.testing.assert_allclose(gene_embeddings(one, control="EMPTY", model="model").X,
                               gene_embeddings(one, control="EMPTY").X)
    with pytest.raises(ValueError, match="give control as well"):
        gene_embeddings(nuclei, model="model")
    nuclei.obs.loc[nuclei.obs["Metadata_Gene"] == "EMPTY", "model"] = "fold-0"
    with pytest.raises(ValueError, match="model 'fold-1' embedded no nucleus of the control 'EMPTY'"):
        gene_embeddings(nuclei, control="EMPTY", model="model")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_gene_lists_are_checked(stage01, tmp_path):
    common = dict(images_dir=str(stage01), out_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="control 'EMPTY' is a class of its own"):
        multiclass_tasks(["GENE022", "EMPTY"], n_folds=2, **common)
    with pytest.raises(ValueError, match="control 'EMPTY' is a class of its own"):
        loto_tasks(["EMPTY"], n_folds=2, **common)
    with pytest.raises(ValueError, match="not the string 'GENE022'"):
        multiclass_tasks("GENE022", n_folds=2, **common)
    with pytest.raises(ValueError, match="not the string"):
        loto_tasks("GENE022", **common)
    with pytest.raises(ValueError, match="no genes"):
        multiclass_tasks([], n_folds=2, **common)


def test_encoder_spec_from_the_model_block():
    model = ModelParams(branches=("nucleus",), input_size=32, width=4, region_size=64)
    assert encoder_spec(model, 16, None) == EncoderSpec(branches=("nucleus",), latent_dim=16, input_size=32,
                                                         width=4, region_size=64)
    both = ModelParams(branches=("nucleus", "region"), input_size=32, width=4, region_size=64)
    with pytest.raises(ValueError, match="region branch needs illumination"):
        encoder_spec(both, 16, None)
    spec = encoder_spec(both, 16, {"p2": Path("/x/p2.npy"), "p1": None})
    assert spec.illumination == (("p1", None), ("p2", "/x/p2.npy"))
    assert spec.branches == ("nucleus", "region")


def test_reading_an_unfinished_task_names_its_path(tmp_path):
    task = EmbeddingTask(kind="multiclass", genes=("G",), images_dir="in", out_dir=str(tmp_path), fold=1)
    with pytest.raises(FileNotFoundError, match="fold-1") as error:
        read_embeddings([task])
    assert str(tmp_path / "fold-1" / EMBEDDINGS) in str(error.value)
    with pytest.raises(ValueError, match="no tasks"):
        read_embeddings([])


# --------------------------------------------------------------------------------------------
# params blocks of stages 02-04
# --------------------------------------------------------------------------------------------
def test_stage_params_defaults_are_the_reference():
    assert LotoStageParams().training.weight_decay == 1e-3
    assert (LotoStageParams().n_folds, LotoStageParams().n_inner, LotoStageParams().latent_dim) == (5, 4, 1024)
    assert EmbeddingStageParams().latent_dim == 1024
    assert EmbeddingStageParams().training.batch_size == 32
    assert ScreenStageParams().latent_dim == 512 and ScreenStageParams().training.weight_decay == 5e-4
    assert ModelParams().branches == ("nucleus", "region")


def test_stage_params_refuse_inconsistent_values():
    with pytest.raises(ValueError, match="top_n is required"):
        ScreenStageParams(selection="top_n")
    with pytest.raises(ValueError, match="top_n is required"):
        ScreenStageParams(top_n=5)
    assert ScreenStageParams(selection="top_n", top_n=5).top_n == 5
    with pytest.raises(ValueError, match="more than once"):
        ModelParams(branches=("nucleus", "nucleus"))
    with pytest.raises(ValueError, match="branches"):
        ModelParams(branches=("nucleus", "cell"))
    with pytest.raises(ValueError, match="branches"):
        ModelParams(branches=())
    with pytest.raises(ValueError, match="unknown_key|extra"):
        LotoStageParams(unknown_key=1)


def test_a_typo_in_a_stage_training_block_names_its_key_path(tmp_path):
    params = yaml.safe_load((ROOT / "params" / "smoke.yml").read_text())
    stages = params["stages"]
    stages.setdefault("screen", {"latent_dim": 16, "model": {"branches": ["nucleus"], "input_size": 32, "width": 4},
                                 "training": {"epochs": 2, "learning_rate": 0.01}})
    stages.setdefault("embeddings", {"latent_dim": 16})
    stages.setdefault("loto", {"latent_dim": 16, "include_control": True})
    good = tmp_path / "good.yml"
    good.write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(good)
    assert {"screen", "embeddings", "loto"} <= set(loaded.stage_names())
    assert isinstance(loaded.stage("screen").training, TrainingParams)

    stages["screen"].setdefault("training", {})["learnin_rate"] = 0.5
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParamsError) as error:
        load_params(bad)
    message = str(error.value)
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "learnin_rate" in text)
    assert str(bad) in message and f"line {line}" in message
    assert "unknown key 'stages.screen.training.learnin_rate'" in message
    assert "did you mean 'learning_rate'" in message
