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
# # 07 · Translation: from images to the perturbed gene
#
# The payoff of the method (§7): learn a map from a gene's perturbation embedding (images, stage
# 04) to its regulatory embedding (interactome, stage 06), then, for a perturbation never seen,
# predict its regulatory embedding and rank every interactome gene by distance to the prediction.
# Each impactful gene is held out in turn: its image embedding comes from the CNN that never saw it,
# its regulatory embeddings from the graph autoencoder that never saw its images, and the map is
# fitted on the other targets only. The translation is kernel ridge regression with the neural
# tangent kernel (NTK) of a one-hidden-layer ReLU network.

# %% tags=["parameters"]
dataset = "demo"
params_path = None
fold = None
runs_dir = None
reports_dir = None
work_dir = None

# %%
import anndata as ad
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.layout import write_parquet, write_summary
from image2reg.notebook import ground_truth, impactful_genes, setup_stage
from image2reg.predict import rank_genes
from image2reg.translation.features import InputSettings
from image2reg.translation.inputs import loto_data
from image2reg.translation.loto import loto_predictions, model_fit_predict, permutation_ranks, random_ranks
from image2reg.translation.report import (
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

ctx = setup_stage("translation", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params, layout = ctx.stage_params, ctx.layout
control = ctx.params.stage("screen").control
targets, truth = impactful_genes(layout), ground_truth(layout)
genes = ad.read_h5ad(layout.artifact("regulatory", "regulatory_embeddings")).obs_names.astype(str).to_numpy()
data, left_out = loto_data(ad.read_h5ad(layout.artifact("loto", "gene_embeddings_loto")),
                           ad.read_h5ad(layout.artifact("regulatory", "regulatory_embeddings_loto")), genes, targets,
                           control)
n_genes, max_k = len(genes), min(params.max_k, len(genes))
print(f"{len(data.targets)} held-out targets ranked among {n_genes} interactome genes; left out (not in the "
      f"interactome or without LOTO models): {', '.join(left_out) if left_out else 'none'}")

# %% [markdown]
# ## The translation, target by target
#
# The params' model (the released setting: NTK, ridge 1, no input augmentation) against the
# baselines of the reference: a random gene, the mean of all regulatory embeddings, the mean of the
# training targets' embeddings, and other models fitted the same way. One more row swaps the image side:
# the same model on the mean classical profiles of stage 02 (shape, intensity, texture; standardised
# against the control), which need no training and are therefore leave-one-target-out as they stand.
# Where it beats the CNNs, the learnt image embeddings are what holds the translation back.

# %%
settings = InputSettings(**params.inputs.model_dump())
main = model_label(params.model, params.reg)
fitted = model_fit_predict(params.model, params.reg, settings, seed=ctx.seed)
compared = {name: model_fit_predict(name, params.reg, settings, seed=ctx.seed) for name in params.compare}
ranks = translation_ranks(data, {main: fitted, **compared}, classical_profiles(layout, control))
write_parquet(ranks, layout.artifact("translation", "ranks"))
random = random_ranks(n_genes, len(data.targets), params.random_repeats, ctx.seed)
null = None
if params.permutation_repeats:
    null = permutation_ranks(data, fitted, params.permutation_repeats, ctx.seed + 1, progress_bar=True)

# %% [markdown]
# ## Top-k accuracy against the baselines
#
# Top-k accuracy is the share of held-out targets whose true gene is among the k genes closest to
# the prediction; the areas are its mean over k = 1 … K. p-values: the share of random-gene
# rankings, and of LOTO runs with the image embeddings shuffled between genes (the pairing broken),
# that score at least as high; against the two mean baselines, a paired sign-flip test on the same
# targets (exact over all sign patterns up to 16 targets).

# %%
table, p_values = score_report(ranks, random, null, main, n_genes, max_k=max_k, auc_ks=params.auc_ks, seed=ctx.seed)
display(pd.concat([table, p_values], axis=1).round(4))
curves, bands = curve_bands(ranks, random, null, max_k)
plotting.topk_curves(curves, bands, f"LOTO top-k accuracy, {len(data.targets)} held-out targets, "
                                    f"{n_genes} candidate genes")
plt.show()
plotting.target_ranks(ranks[main], n_genes, title=f"{main}: rank of each held-out target")
plt.show()

# %% [markdown]
# ## What these targets can show
#
# Each target is a hit or not, so with few targets a top-k accuracy is a coarse count: the exact 95 %
# interval of each, and the fewest hits that a test at p < 0.05 can call significant, against random
# genes and, in the paired test, against a baseline that hits none of the targets.

# %%
power = power_table(ranks[main], n_genes, [k for k in (5, 10) if k <= max_k])
display(power.round(3))

# %% [markdown]
# ## What the predictions look like
#
# For a few held-out targets: the ten genes nearest to the predicted regulatory embedding (on the
# synthetic data, with each gene's true module; the target's own module marked).

# %%
predictions = loto_predictions(data, fitted)
for target in example_targets(ranks[main]):
    print(f"{target}: true gene at rank {int(ranks.loc[target, main]) + 1} of {n_genes}")
    display(nearest_genes(pd.DataFrame(data.regulatory[target], index=genes), predictions[target], truth, target).T)

# %% [markdown]
# ## What limits the prediction (synthetic data only)
#
# The world's truth lets us swap either side for its ideal: the targets' true phenotype shifts in place
# of the LOTO CNNs' image embeddings, and the genes' true programs in place of the graph autoencoder's
# embeddings. The same LOTO evaluation with the same model: where the score jumps, that side is where
# the signal is lost.

# %%
oracle = None
if truth is not None:
    oracle = oracle_table(data, fitted, truth, ctx.seed, max_k=max_k, auc_ks=params.auc_ks)
    display(oracle.round(3))

# %% [markdown]
# ## How much the scores depend on the autoencoder's training draw
#
# When the graph autoencoder learns no image labels, stage 06's replicate models (other edge splits and
# initial weights) are leak-free leave-one-target-out models too. The same translation with each of
# them shows how much of the headline is the luck of one training run: with a dozen targets, one hit
# more or less moves top-5 by several points.

# %%
replicate_file = layout.artifact("regulatory", "regulatory_embeddings_replicates")
replicates = None
if replicate_file.is_file():
    replicates = replicate_scores(data, fitted, ad.read_h5ad(replicate_file), max_k=max_k, auc_ks=params.auc_ks)
    spread = score_spread(replicates)
    display(pd.concat([replicates, spread]).round(3))
    print(f"{len(replicates)} autoencoder trainings: top-5 {spread.loc['mean', 'top5']:.3f} on average "
          f"({spread.loc['min', 'top5']:.3f}–{spread.loc['max', 'top5']:.3f}), random {5 / n_genes:.3f}")
else:
    print("the autoencoder learnt image labels: its replicates saw every target, so only the LOTO models count")

# %% [markdown]
# ## Grid search over the model settings
#
# The reference searched ridge values and input augmentations (§7.3) and kept the setting with the
# largest areas under the top-k curve. Choosing the setting on the same targets it is scored on is
# **optimistic**; the nested variant picks, for every target, the setting that is best on the other
# targets, and scores the target under it: that number is an honest estimate.

# %%
grid = None
if params.grid_search:
    ranked, grid = grid_report(data, params.grid, seed=ctx.seed, execution=params.execution,
                               selection_ks=params.selection_ks, max_k=max_k, auc_ks=params.auc_ks, progress_bar=True)
    write_parquet(ranked, layout.artifact("translation", "grid"))
    print(f"{grid['grid_settings']} settings × {len(data.targets)} targets")
    display(ranked.head(10).round(4))
    print(f"best setting on all targets (optimistic): top-5 {grid['grid_best_top5_optimistic']:.3f}; nested "
          f"selection (honest): top-5 {grid['nested_top5']:.3f}, "
          + ", ".join(f"AUC{k} {grid[f'nested_auc{k}']:.3f}" for k in params.auc_ks if k <= max_k))
summary = translation_summary(targets=len(data.targets), candidates=n_genes, left_out=left_out, main=main,
                              table=table, p_values=p_values, power=power, max_k=max_k, auc_ks=params.auc_ks,
                              oracle=oracle, replicates=replicates, grid=grid)

# %% [markdown]
# ## The predict command on held-out conditions
#
# Synthetic data only: for every impactful gene, fresh fields of view that no stage has seen are
# drawn from the world's truth and run through `python -m image2reg predict --model loto:<GENE>`
# (preprocessing, the LOTO CNN that never saw the gene, the translation fitted on the other
# genes). Where does the true gene land among the interactome's genes?

# %%
if truth is not None and params.query_fields:
    queries = predict_held_out(truth, data.targets, params.query_fields, ctx.params.stage("data").synthetic.screen,
                               rank_genes, queries_dir=layout.artifact("translation", "queries"),
                               work_dir=layout.artifact("translation", "queries_work"), seed=ctx.seed,
                               dataset=ctx.params.dataset, params_path=ctx.params.source_path, runs_dir=layout.runs_dir)
    write_parquet(queries, layout.artifact("translation", "predict_held_out"))
    held_out = held_out_scores(queries)
    fraction = held_out["predict_top10_fraction"]
    print(f"true gene in the top 10 for {round(fraction * len(queries))} of {len(queries)} held-out conditions "
          f"({fraction:.0%}; random {10 / n_genes:.0%}); median rank {held_out['predict_median_rank']:g} of {n_genes}")
    display(queries.sort_values("rank"))
    summary.update(held_out)
write_summary(summary, layout.artifact("translation", "summary"))
