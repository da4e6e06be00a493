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
work_dir = None

# %%

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.cnn.report import ranked_screen, screened_genes, truth_check
from image2reg.cnn.screen import run_screen, screen_summary, screen_tasks
from image2reg.config import encoder_initialisation
from image2reg.images.pipeline import illumination_files
from image2reg.layout import write_json, write_parquet, write_summary, write_text_atomic
from image2reg.notebook import ground_truth, setup_stage
from image2reg.profiling.features import nucleus_profiles

ctx = setup_stage("screen", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params = ctx.stage_params
print(encoder_initialisation(params.model))
images_dir = ctx.layout.stage_dir_of("images")
nuclei = pd.read_parquet(ctx.layout.artifact("images", "nuclei"))
illumination = (illumination_files(ctx.layout.raw, images_dir, ctx.params.stage("images"))
                if "region" in params.model.branches else None)

# %% [markdown]
# ## Classical nucleus profiles
#
# Shape, intensity, texture (co-occurrence, local binary patterns) and radial features of every
# nucleus: the baseline's inputs, computed once and reused by stages 03 and 04.

# %%
profiles_path = ctx.layout.artifact("screen", "profiles")
if not profiles_path.exists():
    profiles = nucleus_profiles(images_dir, nuclei, progress_bar=True)
    write_parquet(profiles, profiles_path)
profiles = pd.read_parquet(profiles_path)
print(f"{profiles.shape[1]} features for {len(profiles)} nuclei")

# %% [markdown]
# ## The screen
#
# Genes with too few fields of view passing QC to appear in every split of every fold are not
# screened; they are listed here.

# %%
# params genes, else the raw gene list, else every perturbation but the control constructs
genes, without_nuclei = screened_genes(nuclei, ctx.layout.raw.screen_genes, control=params.control,
                                       genes=params.genes)
if without_nuclei:
    print(f"listed genes without a nucleus after stage 01 (not screened): {', '.join(without_nuclei)}")
tasks, skipped = screen_tasks(
    nuclei, genes, images_dir=images_dir, out_dir=ctx.layout.artifact("screen", "models"), control=params.control,
    n_folds=params.n_folds or ctx.params.folds, n_inner=params.n_inner, seed=ctx.seed,
    branches=params.model.branches, latent_dim=params.latent_dim, input_size=params.model.input_size,
    width=params.model.width, training=params.training, region_size=params.model.region_size,
    illumination=illumination, torch_threads=params.torch_threads, pretrained=params.model.pretrained,
    baseline_profiles=profiles_path if params.baseline else None)
write_parquet(skipped.to_frame(), ctx.layout.artifact("screen", "skipped_genes"))
print(f"{len(tasks)} models: {len(tasks) // (params.n_folds or ctx.params.folds)} genes × "
      f"{params.n_folds or ctx.params.folds} folds; skipped (too few fields): {dict(skipped) or 'none'}")
results = run_screen(tasks, params.execution)
write_parquet(results, ctx.layout.artifact("screen", "screen_results"))

# %%
scores, impactful = ranked_screen(results, method=params.selection, top_n=params.top_n)
write_parquet(scores, ctx.layout.artifact("screen", "specificity"))
write_text_atomic(ctx.layout.artifact("screen", "impactful_genes"), "\n".join(impactful) + "\n")
summary = screen_summary(scores, impactful, skipped)
write_json(summary, ctx.layout.artifact("screen", "summary"))
print(f"{len(impactful)} impactful genes ({params.selection}): {', '.join(impactful)}")
display(scores.head(len(impactful) + 5).round(3))

# %% [markdown]
# ## Ranking and cut
#
# Bars: specificity score ± SD over folds (0.5 = chance); below, each fold's test BAC. The dashed
# line is the cut. In the synthetic world, bars are coloured by the true effect class.

# %%
truth = ground_truth(ctx.layout)
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
    check = truth_check(scores, truth)
    plotting.screen_vs_truth(scores, truth, check.auroc, check.fpr, check.tpr)
    plt.show()
    display(check.selected)
    write_summary(check.summary, ctx.layout.artifact("screen", "truth_check"))
    print(f"AUROC of the specificity score for the truly impactful genes: {check.auroc:.3f}")

# %% [markdown]
# ## CNN against classical features
#
# Mean test BAC over the folds per gene: the CNN on the crops against a linear model on the
# classical profiles of the same nuclei, same splits.

# %%
if "baseline_score" in scores:
    plotting.cnn_vs_baseline(scores, "specificity_score", "baseline_score", chance=0.5, classes=classes)
    plt.show()
    print(f"mean test BAC over genes: CNN {summary['specificity_mean']:.3f}, "
          f"classical {summary['baseline_mean']:.3f}")
plotting.fold_accuracies(results, impactful)
plt.show()

# %% [markdown]
# ## Training
#
# Epochs run and the best epoch per model (early stopping on validation BAC).

# %%
plotting.training_epochs(results)
plt.show()
