"""Stages 02-08 end to end through the runbook, on a small synthetic world with tiny models.

The smoke world is made big enough for two folds (two plates), the CNNs tiny (width 2, 16 px,
one or two epochs): the test checks that the notebooks run and hand over their artifacts, not
that the models learn (the demo report shows that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from test_runbook import content_key

from image2reg.config import load_params

pytestmark = pytest.mark.slow  # stages 02-08 end to end through the runbook

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = {"branches": ["nucleus"], "input_size": 16, "width": 2, "region_size": 48, "pretrained": None}
TINY_TRAINING = {"epochs": 2, "learning_rate": 0.01, "weight_decay": 0.0005, "patience": 2, "batch_size": 16,
                 "seed": 0, "device": "cpu"}
INPROCESS = {"backend": "inprocess", "workers": None}


def cnn_params() -> dict:
    params = yaml.safe_load((REPO / "params" / "smoke.yml").read_text())
    params["stages"]["data"]["synthetic"]["screen"]["n_plates"] = 2
    params["stages"]["images"]["crop_scaling"] = "plate_percentile"  # predict's query crops take the screen's scale
    params["stages"]["pretrain"] = {"input_size": 16, "width": 2, "epochs": 2, "batch_size": 32, "max_nuclei": 200,
                                    "seed": 0, "device": "cpu"}
    params["stages"]["screen"] = {"n_inner": 2, "latent_dim": 8, "model": TINY_MODEL, "training": TINY_TRAINING,
                                  "selection": "top_n", "top_n": 3, "baseline": True, "execution": INPROCESS}
    params["stages"]["embeddings"] = {"n_inner": 2, "latent_dim": 8,
                                      "model": {**TINY_MODEL, "branches": ["nucleus", "region"]},
                                      "training": TINY_TRAINING, "umap_neighbors": 5, "umap_max_nuclei": 200,
                                      "execution": INPROCESS}
    params["stages"]["loto"] = {"n_folds": 3, "n_inner": 2, "latent_dim": 8,
                                "model": {**TINY_MODEL, "pretrained": "self_supervised"},
                                "training": {**TINY_TRAINING, "epochs": 1}, "execution": INPROCESS}
    params["stages"]["interactome"] = {"single_cell": {"min_genes": 5, "min_cells": 3}, "confidence_cutoff": 0.9,
                                       "hub_quantile": None, "hub_scan": [0.9, 1.0], "betas": [0.5, 5.0, 0.5],
                                       "robustness_repeats": 5, "execution": INPROCESS}
    params["stages"]["regulatory"] = {"n_clusters": 2, "n_clusters_all": 2, "evaluation_seeds": 2,
                                      "gae": {"hidden_dim": 8, "latent_dim": 4, "learning_rate": 0.01, "epochs": 20,
                                              "patience": 5}, "n_embedding_clusters": 2, "umap_neighbors": 3,
                                      "execution": INPROCESS}
    params["stages"]["translation"] = {"max_k": 5, "auc_ks": [3, 5], "selection_ks": [3, 5],
                                       "permutation_repeats": 20, "random_repeats": 50,
                                       "grid": {"reg": [1.0, 10.0], "use_y_train_mean": [False, True]},
                                       "query_fields": 2,
                                       "execution": INPROCESS}
    params["stages"]["validation"] = {"second_screen": {"train_wells": 2, "test_wells": 1, "control_wells": 2,
                                                        "sites_per_well": 2, "max_test_genes": 4},
                                      "n_folds": 2, "n_inner": 2, "latent_dim": 8, "model": TINY_MODEL,
                                      "training": TINY_TRAINING, "n_clusters": 2, "min_train_per_cluster": 1,
                                      "max_k": 5, "auc_ks": [3, 5], "permutation_repeats": 20, "random_repeats": 50,
                                      "torch_threads": 1}
    return params


CNN_STAGES = ("data", "images", "pretrain", "screen", "embeddings", "loto", "interactome", "regulatory", "translation",
              "validation")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, run_cli) -> tuple[Path, int]:
    workdir = tmp_path_factory.mktemp("cnn_stages")
    (workdir / "params").mkdir()
    (workdir / "params" / "smoke.yml").write_text(yaml.safe_dump(cnn_params(), sort_keys=False))
    load_params(workdir / "params" / "smoke.yml")  # valid before anything runs
    return workdir, run_cli(workdir, "--stages", *CNN_STAGES, "--no-html", root=REPO)


def test_the_cnn_stages_run_and_hand_over_their_artifacts(cnn_run):
    workdir, code = cnn_run
    assert code == 0
    runs = workdir / "runs" / "smoke"
    for stage in ("01b_pretrain", "02_screen", "03_embeddings", "04_loto"):
        assert (workdir / "reports" / "smoke" / f"{stage}.ipynb").is_file()
    # stage 01b: the pretrained trunk, its probe against random weights; stage 04 starts from it, 02 does not
    pretrain = json.loads((runs / "01b_pretrain" / "summary.json").read_text())
    assert pretrain["epochs"] == 2 and np.isfinite(pretrain["final_loss"])
    assert {"probe_r2_texture", "probe_r2_texture_random", "probe_r2_shape"} <= set(pretrain)
    assert (runs / "01b_pretrain" / "encoder.pt").is_file()
    loto_report = (workdir / "reports" / "smoke" / "04_loto.ipynb").read_text()
    assert "self-supervised pretraining on the screen's nuclei" in loto_report
    assert "self-supervised" not in (workdir / "reports" / "smoke" / "02_screen.ipynb").read_text()
    # stage 02: one row per (gene, fold) with the baseline on the same split; the top 3 selected
    results = pd.read_parquet(runs / "02_screen" / "screen_results.parquet")
    scores = pd.read_parquet(runs / "02_screen" / "specificity.parquet")
    impactful = (runs / "02_screen" / "impactful_genes.txt").read_text().split()
    assert set(results["fold"]) == {0, 1} and results["baseline_test_balanced_accuracy"].between(0, 1).all()
    assert impactful == scores.sort_values("rank").index[:3].tolist() == scores.index[scores["impactful"]].tolist()
    skipped = pd.read_parquet(runs / "02_screen" / "skipped_genes.parquet")
    assert set(skipped.index).isdisjoint(scores.index)
    assert (runs / "02_screen" / "truth_check.json").is_file()  # the synthetic world's truth is used
    # stage 03: every usable nucleus of the impactful genes and the control embedded once
    nuclei = ad.read_h5ad(runs / "03_embeddings" / "nucleus_embeddings.h5ad")
    genes = ad.read_h5ad(runs / "03_embeddings" / "gene_embeddings.h5ad")
    assert nuclei.obs["nucleus"].is_unique and (nuclei.obs["split"] == "test").all()
    assert set(nuclei.obs["Metadata_Gene"]) == set(impactful) | {"EMPTY"} == set(genes.obs_names)
    assert genes.obs["n_nuclei"].sum() == nuclei.n_obs and genes.n_vars == nuclei.n_vars == 8
    summary = json.loads((runs / "03_embeddings" / "summary.json").read_text())
    assert summary["classes"] == 4 and summary["chance"] == pytest.approx(0.25)
    assert len(pd.read_parquet(runs / "03_embeddings" / "activity.parquet")) == 3
    # stage 04: each impactful gene held out once, embedded by the model that never saw it
    loto = ad.read_h5ad(runs / "04_loto" / "gene_embeddings_loto.h5ad")
    targets = loto.obs[loto.obs["is_target"]]
    assert sorted(targets["gene"]) == sorted(impactful)
    assert (targets["model"].astype(str) == targets["gene"].astype(str)).all()
    for target in impactful:
        model = loto.obs[loto.obs["model"] == target]
        assert set(model["gene"]) == set(impactful) | {"EMPTY"}
    # stage 05: the interactome, its tables and GraphML agree; the impactful genes in the PPI are covered
    interactome = runs / "05_interactome"
    nodes = pd.read_parquet(interactome / "nodes.parquet")
    edges = pd.read_parquet(interactome / "edges.parquet")
    graph = nx.read_graphml(interactome / "interactome.graphml")
    listed = (interactome / "interactome_genes.txt").read_text().split()
    assert sorted(graph.nodes) == sorted(nodes.index) == sorted(listed)
    assert graph.number_of_edges() == len(edges) and set(edges["gene1"]) | set(edges["gene2"]) <= set(nodes.index)
    assert nodes["is_target"].sum() == json.loads((interactome / "summary.json").read_text())["targets_covered"] >= 1
    assert nodes["robustness"].between(0, 1).all() and edges["in_tree"].sum() == len(nodes) - 1
    sweep = pd.read_parquet(interactome / "beta_sweep.parquet")
    assert sweep["beta"].tolist() == pytest.approx([0.5 * k for k in range(1, 10)])
    # stage 06: one embedding per interactome gene; one LOTO model per covered target, the target unlabelled
    regulatory = runs / "06_regulatory"
    embeddings = ad.read_h5ad(regulatory / "regulatory_embeddings.h5ad")
    assert embeddings.obs_names.tolist() == nodes.index.tolist() and embeddings.n_vars == 4
    covered = sorted(nodes.index[nodes["is_target"]])
    loto_reg = ad.read_h5ad(regulatory / "regulatory_embeddings_loto.h5ad")
    assert sorted(loto_reg.obs["model"].unique()) == covered and loto_reg.n_obs == len(covered) * len(nodes)
    assert (loto_reg.obs.loc[loto_reg.obs["is_target"], "gene"].astype(str).tolist()
            == loto_reg.obs.loc[loto_reg.obs["is_target"], "model"].astype(str).tolist())
    gae_metrics = pd.read_parquet(regulatory / "metrics.parquet")
    assert gae_metrics["kind"].tolist() == ["all", "replicate"] + ["loto"] * len(covered)
    assert gae_metrics["test_auc"].between(0, 1).all()
    # stage 07: a rank per held-out target and method, the grid and its summary
    translation = runs / "07_translation"
    ranks = pd.read_parquet(translation / "ranks.parquet")
    assert sorted(ranks.index) == covered and ranks.to_numpy().min() >= 0 and ranks.to_numpy().max() < len(nodes)
    assert len(pd.read_parquet(translation / "grid.parquet")) == 4
    result = json.loads((translation / "summary.json").read_text())
    assert result["targets"] == len(covered) and 0 <= result["p_random_top5"] <= 1
    held_out = pd.read_parquet(translation / "predict_held_out.parquet")  # the predict command per target
    assert sorted(held_out.index) == covered and held_out["rank"].between(1, len(nodes)).all()
    assert result["predict_top10_fraction"] == pytest.approx((held_out["rank"] <= 10).mean())
    assert 0 <= result["oracle_both_true_top5"] <= 1  # the truth swapped in for either side
    # stage 08: a second screen of the impactful genes (training) and 4 other interactome genes (test)
    validation = runs / "08_validation"
    embedded = ad.read_h5ad(validation / "gene_embeddings.h5ad")
    train = sorted(embedded.obs_names[embedded.obs["role"] == "train"])
    test = sorted(embedded.obs_names[embedded.obs["role"] == "test"])
    assert train == covered and len(test) == 4 and set(test) <= set(nodes.index) - set(impactful)
    transfer = pd.read_parquet(validation / "ranks.parquet")
    assert sorted(transfer.index) == test and transfer.iloc[:, :3].to_numpy().max() < len(nodes)
    checked = json.loads((validation / "summary.json").read_text())
    assert checked["training_genes"] == len(covered) and checked["test_genes"] == 4
    assert 0 < checked["all_p_random_score"] <= 1 and "oracle_both_true_top5" in checked


def test_predict_ranks_the_genes_for_new_images_of_a_held_out_gene(cnn_run, tmp_path, capsys):
    from image2reg.__main__ import main
    from image2reg.data.synthetic import render_query_fields

    workdir, code = cnn_run
    assert code == 0
    runs = workdir / "runs" / "smoke"
    nodes = pd.read_parquet(runs / "05_interactome" / "nodes.parquet")
    gene = sorted(nodes.index[nodes["is_target"]])[0]
    params = load_params(workdir / "params" / "smoke.yml").stage("data").synthetic.screen
    render_query_fields(pd.read_parquet(runs / "raw" / "truth" / "genes.parquet"), gene, 3, params, tmp_path / "q",
                        seed=7)
    out = tmp_path / "ranking.csv"
    args = ["predict", "--images", str(tmp_path / "q"), "--params", str(workdir / "params" / "smoke.yml"),
            "--runs-dir", str(workdir / "runs"), "--model", f"loto:{gene}", "--top", "3", "--out", str(out)]
    assert main(args) == 0
    # the query's crops take the screen's crop scale (the median of its plates'): a query has no controls
    screen_scales = json.loads((runs / "01_images" / "crop_scales.json").read_text())
    [cached] = (runs / "predictions" / "q").glob("*/crop_scales.json")
    assert json.loads(cached.read_text()) == {"query": pytest.approx(float(np.median(list(screen_scales.values()))))}
    ranking = pd.read_csv(out)
    assert sorted(ranking["gene"]) == sorted(nodes.index) and ranking["rank"].tolist() == list(range(1, len(nodes) + 1))
    assert ranking["distance"].is_monotonic_increasing
    printed = capsys.readouterr().out
    assert ranking["gene"].iloc[0] in printed
    assert "query: 3 fields of view" in printed and f"models: loto:{gene}" in printed
    assert "segmented" in printed and "kept by the filters" in printed
    n = len(nodes)
    assert (f"a random gene: rank {(n + 1) / 2:g} of {n} on average, in the top 3 with probability {3 / n:.1%}"
            in printed)
    assert ranking["top_percent"].iloc[-1] == 100.0

    assert main(args + ["--json"]) == 0  # for scripts
    found = json.loads(capsys.readouterr().out)
    assert found["fields"] == 3 and found["models"] == [f"loto:{gene}"] and found["n_candidates"] == n
    assert [row["gene"] for row in found["top"]] == ranking["gene"].head(3).tolist()
    assert found["nuclei_segmented"] >= found["nuclei_kept"] >= found["nuclei_used"] > 0
    assert found["random_gene"]["p_top"] == pytest.approx(3 / n)

    (tmp_path / "empty").mkdir()
    assert main(args[:2] + [str(tmp_path / "empty")] + args[3:]) == 2
    assert "no .tif/.tiff fields of view found" in capsys.readouterr().err
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    tifffile.imwrite(rgb / "colour.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    assert main(args[:2] + [str(rgb)] + args[3:]) == 2
    assert "colour.tif is not a single-channel field" in capsys.readouterr().err
    dark = tmp_path / "dark"
    dark.mkdir()
    tifffile.imwrite(dark / "blank.tif", np.full((160, 160), 100, np.uint16))
    assert main(args[:2] + [str(dark)] + args[3:] + ["--work-dir", str(tmp_path / "dark_work")]) == 2
    assert "no nucleus passed QC and the filters" in capsys.readouterr().err
    fresh = ["predict", "--images", str(tmp_path / "q"), "--params", str(workdir / "params" / "smoke.yml"),
             "--runs-dir", str(tmp_path / "no_runs")]
    assert main(fresh) == 2
    assert "run stage 02_screen first (python runbook.py --dataset smoke --stages 02)" in capsys.readouterr().err


def test_validation_of_a_real_dataset_reads_its_own_images_and_the_reference_run(cnn_run):
    """The JUMP path: stage-01 images of this dataset; impactful genes and embeddings of the reference."""
    from image2reg.runbook import main

    workdir, code = cnn_run
    assert code == 0
    smoke = load_params(workdir / "params" / "smoke.yml")
    validation = {key: value for key, value in cnn_params()["stages"]["validation"].items() if key != "second_screen"}
    other = {"dataset": "other", "seed": 0, "folds": 2,
             "stages": {"data": {"source": "jump"}, "images": smoke.stage_dict("images"),
                        "validation": {**validation, "reference": "smoke"}}}
    (workdir / "params" / "other.yml").write_text(yaml.safe_dump(other, sort_keys=False))
    runs = workdir / "runs"
    # this dataset's stage 01: here, the second screen the demo path preprocessed
    shutil.copytree(runs / "smoke" / "08_validation" / "images", runs / "other" / "01_images")
    args = ["--params", str(workdir / "params" / "other.yml"), "--runs-dir", str(runs), "--reports-dir",
            str(workdir / "reports"), "--stages", "validation", "--no-html"]
    assert main(args, root=REPO) == 0
    checked = json.loads((runs / "other" / "08_validation" / "summary.json").read_text())
    reference = json.loads((runs / "smoke" / "08_validation" / "summary.json").read_text())
    assert checked["reference"] == "smoke" and "oracle_both_true_top5" not in checked  # no truth for real data
    assert (checked["training_genes"], checked["test_genes"]) == (reference["training_genes"], reference["test_genes"])
    inputs = json.loads((runs / "other" / ".manifests" / "08_validation.json").read_text())["components"]["inputs"]
    recorded = json.loads((runs / "smoke" / ".manifests" / "06_regulatory.json").read_text())
    assert inputs["smoke:06_regulatory"] == content_key(recorded) and "06_regulatory" not in inputs


def test_without_image_labels_every_target_gets_the_one_autoencoder_and_replicates_are_scored(cnn_run, run_cli):
    """γ = 0: no LOTO autoencoders; stage 07 still runs, and translates with each replicate model too."""
    workdir, code = cnn_run
    assert code == 0
    copy = Path(shutil.copytree(workdir, workdir.parent / "cnn_stages_unlabelled"))
    params = yaml.safe_load((copy / "params" / "smoke.yml").read_text())
    params["stages"]["regulatory"]["gae"]["gamma"] = 0.0
    (copy / "params" / "smoke.yml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_cli(copy, "--stages", "regulatory", "translation", "--no-html", root=REPO) == 0
    regulatory = copy / "runs" / "smoke" / "06_regulatory"
    assert pd.read_parquet(regulatory / "metrics.parquet")["kind"].tolist() == ["all", "replicate"]
    everything = ad.read_h5ad(regulatory / "regulatory_embeddings.h5ad")
    loto = ad.read_h5ad(regulatory / "regulatory_embeddings_loto.h5ad")
    covered = sorted(everything.obs_names[everything.obs["is_target"]])
    assert sorted(loto.obs["model"].unique()) == covered
    for target in covered:
        np.testing.assert_array_equal(loto[loto.obs["model"] == target].X, everything.X)
    replicates = ad.read_h5ad(regulatory / "regulatory_embeddings_replicates.h5ad")
    assert list(dict.fromkeys(replicates.obs["model"])) == ["all", "replicate_1"]
    summary = json.loads((copy / "runs" / "smoke" / "07_translation" / "summary.json").read_text())
    assert summary["replicates"] == 2 and summary["targets"] == len(covered)
    assert summary["replicates_top5_min"] <= summary["replicates_top5_mean"] <= summary["replicates_top5_max"]
    # the first replicate is the model the headline used: its score is among them
    assert summary["replicates_top5_min"] <= summary["top5"] <= summary["replicates_top5_max"]


def test_a_second_run_skips_every_stage(cnn_run, run_cli, capsys):
    workdir, code = cnn_run
    assert code == 0
    copy = Path(shutil.copytree(workdir, workdir.parent / "cnn_stages_copy"))
    assert run_cli(copy, "--stages", *CNN_STAGES, "--no-html", root=REPO) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (up to date)") == len(CNN_STAGES)


def test_a_screen_stopped_inside_its_worker_pool_resumes_to_the_uninterrupted_runs_results(cnn_run, cli_args,
                                                                                             run_cli):
    """Stage 02 on a process pool, stopped (SIGTERM) once a model is done: no process of the run is left,
    the last outputs stay in place, and the rerun's results equal the uninterrupted run's."""
    from test_faults import stop_run_inside

    workdir, code = cnn_run
    assert code == 0
    copy = workdir.parent / "cnn_stages_stopped"
    copy.mkdir()
    shutil.copytree(workdir / "params", copy / "params")
    for folder in ("raw", "01_images", "02_screen", ".manifests"):
        shutil.copytree(workdir / "runs" / "smoke" / folder, copy / "runs" / "smoke" / folder, symlinks=True)
    params = yaml.safe_load((copy / "params" / "smoke.yml").read_text())
    params["stages"]["screen"]["execution"] = {"backend": "processes", "workers": 2}  # a pool to stop
    (copy / "params" / "smoke.yml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = (copy / "runs" / "smoke" / "02_screen" / "screen_results.parquet").read_bytes()
    work = copy / "runs" / "smoke" / ".02_screen.work"
    process = stop_run_inside([*cli_args(copy), "--stages", "screen", "--no-html"], REPO,
                              lambda: any(work.glob("models/**/done.json")), timeout=300)
    assert process.returncode == 130
    assert (copy / "runs" / "smoke" / "02_screen" / "screen_results.parquet").read_bytes() == before
    assert run_cli(copy, "--stages", "screen", "--no-html", root=REPO) == 0
    for name in ("screen_results", "specificity", "skipped_genes"):
        pd.testing.assert_frame_equal(pd.read_parquet(copy / "runs" / "smoke" / "02_screen" / f"{name}.parquet"),
                                      pd.read_parquet(workdir / "runs" / "smoke" / "02_screen" / f"{name}.parquet"))
    assert ((copy / "runs" / "smoke" / "02_screen" / "impactful_genes.txt").read_text()
            == (workdir / "runs" / "smoke" / "02_screen" / "impactful_genes.txt").read_text())
