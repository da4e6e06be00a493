# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Specificity screen
#
# Which perturbations change nuclear morphology? For every gene and fold, a binary CNN learns to
# tell the gene's nuclei from the control's (method §4.3): splits grouped by field of view, the
# control undersampled to the gene's count, early stopping on validation balanced accuracy (BAC).
# A gene's **specificity score** is its mean test BAC over the folds; the **impactful genes** are the
# top of that ranking, cut at its knee or after a fixed number. Every (gene, fold) is an independent,
# resumable task, run here, in a process pool, or on a Dask cluster (`execution` in the params).
# The same splits are scored with classical nucleus features and a linear model, for comparison.

# %% tags=["parameters"]
dataset = "demo"
params_path = None
fold = None
runs_dir = None
reports_dir = None

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from sklearn.metrics import roc_auc_score, roc_curve

from image2reg import plotting
from image2reg.profiling.features import nucleus_profiles
from image2reg.cnn.screen import run_screen, screen_summary, screen_tasks, select_impactful, specificity_scores
from image2reg.data.metadata import genes_to_screen
from image2reg.images.pipeline import illumination_files
from image2reg.layout import atomic_path, write_text_atomic
from image2reg.config import encoder_initialisation
from image2reg.notebook import setup_stage

ctx = setup_stage("screen", dataset, params_path, fold, runs_dir, reports_dir)
params = ctx.stage_params
print(encoder_initialisation(params.model))
images_dir, out = ctx.layout.stage_dir_of("images"), ctx.out_dir
nuclei = pd.read_parquet(images_dir / "nuclei.parquet")
illumination = (illumination_files(ctx.layout.raw, images_dir, ctx.params.stage("images"))
                if "region" in params.model.branches else None)

# %% [markdown]
# ## Classical nucleus profiles
#
# Shape, intensity, texture (co-occurrence, local binary patterns) and radial features of every
# nucleus: the baseline's inputs, computed once and reused by stages 03 and 04.

# %%
profiles_path = out / "profiles.parquet"
if not profiles_path.exists():
    profiles = nucleus_profiles(images_dir, nuclei, progress_bar=True)
    with atomic_path(profiles_path) as tmp:
        profiles.to_parquet(tmp)
profiles = pd.read_parquet(profiles_path)
print(f"{profiles.shape[1]} features for {len(profiles)} nuclei")

# %% [markdown]
# ## The screen
#
# Genes with too few fields of view passing QC to appear in every split of every fold are not
# screened; they are listed here.

# %%
# params genes, else the raw gene list (screen_genes.txt), else every perturbation but the control constructs
constructs = nuclei.loc[nuclei["Metadata_ControlType"].fillna("").astype(str) != "", "Metadata_Gene"]
genes, without_nuclei = genes_to_screen(nuclei["Metadata_Gene"], constructs, ctx.layout.raw.screen_genes,
                                        control=params.control)
genes = params.genes or genes
if without_nuclei:
    print(f"listed genes without a nucleus after stage 01 (not screened): {', '.join(without_nuclei)}")
tasks, skipped = screen_tasks(
    nuclei, genes, images_dir=images_dir, out_dir=out / "models", control=params.control,
    n_folds=params.n_folds or ctx.params.folds, n_inner=params.n_inner, seed=ctx.seed,
    branches=params.model.branches, latent_dim=params.latent_dim, input_size=params.model.input_size,
    width=params.model.width, training=params.training, region_size=params.model.region_size,
    illumination=illumination, torch_threads=params.torch_threads, pretrained=params.model.pretrained,
    baseline_profiles=profiles_path if params.baseline else None)
with atomic_path(out / "skipped_genes.parquet") as tmp:
    skipped.to_frame().to_parquet(tmp)
print(f"{len(tasks)} models: {len(tasks) // (params.n_folds or ctx.params.folds)} genes × "
      f"{params.n_folds or ctx.params.folds} folds; skipped (too few fields): {dict(skipped) or 'none'}")
results = run_screen(tasks, params.execution)
with atomic_path(out / "screen_results.parquet") as tmp:
    results.to_parquet(tmp)

# %%
scores = specificity_scores(results)
if "baseline_test_balanced_accuracy" in results:
    scores = scores.join(results.groupby("gene")["baseline_test_balanced_accuracy"].mean()
                         .rename("baseline_score"))
impactful = select_impactful(scores, method=params.selection, top_n=params.top_n)
scores["impactful"] = scores.index.isin(impactful)
with atomic_path(out / "specificity.parquet") as tmp:
    scores.to_parquet(tmp)
write_text_atomic(out / "impactful_genes.txt", "\n".join(impactful) + "\n")
write_text_atomic(out / "summary.json", json.dumps(screen_summary(scores, impactful, skipped), indent=2) + "\n")
print(f"{len(impactful)} impactful genes ({params.selection}): {', '.join(impactful)}")
display(scores.head(len(impactful) + 5).round(3))

# %% [markdown]
# ## Ranking and cut
#
# Bars: specificity score ± SD over folds (0.5 = chance); below, each fold's test BAC. The dashed
# line is the cut. In the synthetic world, bars are coloured by the true effect class.

# %%
truth_file = ctx.layout.raw.truth / "genes.parquet"
truth = pd.read_parquet(truth_file).set_index("gene") if truth_file.exists() else None
classes = truth["effect_class"] if truth is not None else None
plotting.screen_ranking(scores, results, len(impactful), classes)
plt.show()

# %% [markdown]
# ## Against the ground truth (synthetic world only)
#
# The screen should rank the genes with a real effect above those without one: the AUROC of the
# specificity score for "impactful in truth" over the screened genes.

# %%
if truth is not None:
    screened = truth.loc[scores.index]
    auroc = roc_auc_score(screened["impactful"], scores["specificity_score"])
    fpr, tpr, _ = roc_curve(screened["impactful"], scores["specificity_score"])
    plotting.screen_vs_truth(scores, truth, auroc, fpr, tpr)
    plt.show()
    selected = pd.crosstab(screened["effect_class"], scores["impactful"].rename("selected as impactful"))
    display(selected)
    summary = {"auroc": float(auroc), "n_screened": int(len(scores)),
               "n_true_impactful": int(screened["impactful"].sum()), "n_selected": len(impactful),
               "selected_true": int((scores["impactful"] & screened["impactful"]).sum())}
    if "baseline_score" in scores:
        summary["baseline_auroc"] = float(roc_auc_score(screened["impactful"], scores["baseline_score"]))
    write_text_atomic(out / "truth_check.json", pd.Series(summary).to_json(indent=2) + "\n")
    print(f"AUROC of the specificity score for the truly impactful genes: {auroc:.3f}")

# %% [markdown]
# ## CNN against classical features
#
# Mean test BAC over the folds per gene: the CNN on the crops against a linear model on the
# classical profiles of the same nuclei, same splits.

# %%
if "baseline_score" in scores:
    plotting.cnn_vs_baseline(scores, "specificity_score", "baseline_score", chance=0.5, classes=classes)
    plt.show()
    print(f"mean test BAC over genes: CNN {scores['specificity_score'].mean():.3f}, "
          f"classical {scores['baseline_score'].mean():.3f}")
plotting.fold_accuracies(results, impactful)
plt.show()

# %% [markdown]
# ## Training
#
# Epochs run and the best epoch per model (early stopping on validation BAC).

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].hist(results["epochs"], bins=np.arange(results["epochs"].max() + 2) - 0.5, color="#34495e")
axes[0].set_xlabel("epochs trained")
axes[1].hist(results["best_epoch"], bins=np.arange(results["best_epoch"].max() + 2) - 0.5, color="#2980b9")
axes[1].set_xlabel("best epoch")
fig.tight_layout()
plt.show()
