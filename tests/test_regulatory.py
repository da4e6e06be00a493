"""Stage 06's models: which GAEs are trained with which labels, and finished models are not retrained."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from image2reg.config import GaeParams, RegulatoryStageParams
from image2reg.execute import ExecutionParams, run_tasks
from image2reg.network.regulatory import (
    gae_tasks,
    loto_embeddings_table,
    read_task_embeddings,
    replicate_embeddings_table,
    run_gae_task,
)

GENES = np.array([f"G{i}" for i in range(12)])
TARGETS = ["G0", "G1", "G2", "G3", "G4", "OUTSIDE"]  # OUTSIDE: an impactful gene not in the interactome


def ring_with_chords() -> np.ndarray:
    ring = [(i, (i + 1) % 12) for i in range(12)]
    return np.array(ring + [(i, (i + 4) % 12) for i in range(12)] + [(i, (i + 6) % 12) for i in range(6)])


def image_embeddings() -> pd.DataFrame:
    # two obvious groups of targets: {G0, G1, OUTSIDE} near 0 and {G2, G3, G4} near 10; the control far away
    values = {"G0": [0, 0], "G1": [0, 1], "OUTSIDE": [1, 0], "G2": [10, 10], "G3": [10, 11], "G4": [11, 10],
              "EMPTY": [50, 50]}
    return pd.DataFrame.from_dict(values, orient="index", dtype=float)


def loto_embeddings() -> ad.AnnData:
    rows, values = [], []
    for model in TARGETS:
        for gene, vector in image_embeddings().iterrows():
            rows.append({"model": model, "gene": gene})
            values.append(vector.to_numpy())
    obs = pd.DataFrame(rows)
    obs.index = [f"{r.model}:{r.gene}" for r in obs.itertuples()]
    return ad.AnnData(np.array(values, dtype=np.float32), obs=obs)


def stage_params(**changes) -> RegulatoryStageParams:
    gae = GaeParams(hidden_dim=8, latent_dim=4, learning_rate=0.01, epochs=5, patience=2, seed=3)
    base = {"n_clusters": 2, "n_clusters_all": 2, "evaluation_seeds": 2, "gae": gae}
    return RegulatoryStageParams(**{**base, **changes})


def test_models_and_their_labels(tmp_path):
    features = np.random.default_rng(0).random((12, 3)).astype(np.float32)
    tasks = gae_tasks(GENES, features, ring_with_chords(), stage_params(), out_dir=tmp_path, targets=TARGETS,
                      image_embeddings=image_embeddings(), loto_embeddings=loto_embeddings())
    assert [t.name for t in tasks] == ["all", "replicate_1", "G0", "G1", "G2", "G3", "G4"]
    assert [t.params.seed for t in tasks[:2]] == [3, 4] and tasks[2].params.seed == 3
    # "all": the targets' clusters (the control is not a target; genes outside the labels get -1)
    assert tasks[0].labels.tolist() == [0, 0, 1, 1, 1] + [-1] * 7
    np.testing.assert_array_equal(tasks[1].labels, tasks[0].labels)
    # a LOTO model: its target unlabelled, the other targets clustered without it
    g2 = next(t for t in tasks if t.name == "G2")
    assert g2.kind == "loto" and g2.held_out == "G2" and g2.folder.endswith("loto_G2")
    assert g2.labels.tolist() == [0, 0, -1, 1, 1] + [-1] * 7


def test_without_labels_no_loto_models_are_trained(tmp_path):
    features = np.ones((12, 2), np.float32)
    for params in (stage_params(labels="none"), stage_params(gae=GaeParams(gamma=0.0, epochs=2))):
        tasks = gae_tasks(GENES, features, ring_with_chords(), params, out_dir=tmp_path, targets=TARGETS)
        assert [t.kind for t in tasks] == ["all", "replicate"] and tasks[0].labels is None


def test_too_many_clusters_is_an_error_naming_the_key(tmp_path):
    features = np.ones((12, 2), np.float32)
    with pytest.raises(ValueError, match="n_clusters_all=9 is more than the 6 targets"):
        gae_tasks(GENES, features, ring_with_chords(), stage_params(n_clusters_all=9), out_dir=tmp_path,
                  targets=TARGETS, image_embeddings=image_embeddings(), loto_embeddings=loto_embeddings())
    with pytest.raises(ValueError, match="n_clusters=6 is more than the 5 targets"):
        gae_tasks(GENES, features, ring_with_chords(), stage_params(n_clusters=6), out_dir=tmp_path,
                  targets=TARGETS, image_embeddings=image_embeddings(), loto_embeddings=loto_embeddings())


def test_finished_models_are_read_not_retrained_and_reruns_are_identical(tmp_path):
    features = np.random.default_rng(1).random((12, 3)).astype(np.float32)
    params = stage_params(loto=False)
    inprocess = ExecutionParams(backend="inprocess")
    tasks = gae_tasks(GENES, features, ring_with_chords(), params, out_dir=tmp_path / "a", targets=TARGETS,
                      image_embeddings=image_embeddings())
    first = run_tasks(run_gae_task, tasks, inprocess, progress_bar=False)
    assert [row["model"] for row in first] == ["all", "replicate_1"]
    assert all(row["n_labelled"] == 5 and row["n_classes"] == 2 for row in first)
    saved = read_task_embeddings(tasks[0])
    assert saved.shape == (12, 4) and saved.dtype == np.float32
    (tmp_path / "a" / "all" / "embeddings.npy").write_bytes(b"not trained again")
    assert run_tasks(run_gae_task, tasks, inprocess, progress_bar=False) == first
    assert (tmp_path / "a" / "all" / "embeddings.npy").read_bytes() == b"not trained again"
    again = gae_tasks(GENES, features, ring_with_chords(), params, out_dir=tmp_path / "b", targets=TARGETS,
                      image_embeddings=image_embeddings())
    assert run_tasks(run_gae_task, again, inprocess, progress_bar=False) == first
    np.testing.assert_array_equal(read_task_embeddings(again[0]), saved)


def test_loto_table_holds_each_targets_own_model_or_the_unlabelled_model(tmp_path):
    features = np.random.default_rng(2).random((12, 3)).astype(np.float32)
    inprocess = ExecutionParams(backend="inprocess")
    labelled = gae_tasks(GENES, features, ring_with_chords(), stage_params(evaluation_seeds=1), out_dir=tmp_path / "a",
                         targets=TARGETS, image_embeddings=image_embeddings(), loto_embeddings=loto_embeddings())
    run_tasks(run_gae_task, labelled, inprocess, progress_bar=False)
    table = loto_embeddings_table(labelled, GENES, TARGETS)
    assert table.obs["model"].unique().tolist() == ["G0", "G1", "G2", "G3", "G4"]  # OUTSIDE has no node
    g3 = table[table.obs["model"] == "G3"]
    np.testing.assert_array_equal(g3.X, read_task_embeddings(next(t for t in labelled if t.name == "G3")))
    assert g3.obs["gene"].tolist() == GENES.tolist() and g3.obs["is_target"].tolist() == (GENES == "G3").tolist()
    assert g3.obs_names[0] == "G3:G0"

    # no image labels: the model on all genes never saw a target, so it stands for every held-out target
    unlabelled = gae_tasks(GENES, features, ring_with_chords(), stage_params(labels="none", evaluation_seeds=1),
                           out_dir=tmp_path / "b", targets=TARGETS)
    run_tasks(run_gae_task, unlabelled, inprocess, progress_bar=False)
    table = loto_embeddings_table(unlabelled, GENES, TARGETS)
    assert table.obs["model"].unique().tolist() == ["G0", "G1", "G2", "G3", "G4"]
    for target in ["G0", "G4"]:
        np.testing.assert_array_equal(table[table.obs["model"] == target].X, read_task_embeddings(unlabelled[0]))

    # labels learnt but no LOTO models asked for: there are no leak-free embeddings to hand out
    assert loto_embeddings_table(labelled[:1], GENES, TARGETS) is None
    with pytest.raises(ValueError, match="no impactful gene is in the interactome"):
        loto_embeddings_table(unlabelled, GENES, ["OUTSIDE"])


def test_replicates_are_handed_on_only_when_no_model_saw_an_image(tmp_path):
    features = np.random.default_rng(4).random((12, 3)).astype(np.float32)
    inprocess = ExecutionParams(backend="inprocess")
    unlabelled = gae_tasks(GENES, features, ring_with_chords(), stage_params(labels="none", evaluation_seeds=3),
                           out_dir=tmp_path / "a", targets=TARGETS)
    run_tasks(run_gae_task, unlabelled, inprocess, progress_bar=False)
    table = replicate_embeddings_table(unlabelled, GENES)
    assert list(dict.fromkeys(table.obs["model"])) == ["all", "replicate_1", "replicate_2"]
    for task in unlabelled:
        block = table[table.obs["model"] == task.name]
        assert block.obs["gene"].tolist() == GENES.tolist()
        np.testing.assert_array_equal(block.X, read_task_embeddings(task))
    assert not np.array_equal(table[table.obs["model"] == "all"].X, table[table.obs["model"] == "replicate_1"].X)

    labelled = gae_tasks(GENES, features, ring_with_chords(), stage_params(loto=False), out_dir=tmp_path / "b",
                         targets=TARGETS, image_embeddings=image_embeddings())
    assert replicate_embeddings_table(labelled, GENES) is None  # they learnt every target's image cluster
