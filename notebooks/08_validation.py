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
# # 08 · Validation on a second screen: predicting genes nobody trained on
#
# The method's external check (§8, JUMP-CP in the reference). A second screen perturbs the impactful
# genes of the first screen (the *training* genes) and many other interactome genes (the *test* genes).
# A CNN is trained on the second screen's training genes and the control only; it then embeds the
# nuclei of every condition, the test genes included, and the mean per condition is the gene
# perturbation embedding. The translation is fitted on the training genes (image embedding → regulatory
# embedding of the first screen's interactome) and predicts each test gene, whose rank among all
# interactome genes is scored against a random gene, the mean embeddings, and shuffled training pairs.
#
# On the demo, the second screen is synthesized here: the same world's genes, imaged in a new "lab"
# (plates, illumination, well effects and nuclei of its own). On JUMP, it is this dataset's stage-01
# output, and the impactful genes, interactome and regulatory embeddings come from the reference
# dataset (`reference: rohban`).

# %% tags=["parameters"]
dataset = "demo"
params_path = None
fold = None
runs_dir = None
reports_dir = None

# %%
import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.cnn.embed import EmbeddingTask, gene_embeddings, run_embedding_task
from image2reg.cnn.splits import min_fields
from image2reg.cnn.tasks import embed_nuclei, encoder_spec
from image2reg.execute import torch_threads
from image2reg.data.synthetic import latent, render_second_screen, second_screen_plan, world_shifts
from image2reg.images.pipeline import illumination_files, prepare_illumination, preprocess_images
from image2reg.layout import RunLayout, TaskFiles, atomic_path, write_text_atomic
from image2reg.config import encoder_initialisation
from image2reg.notebook import (ORACLE_ROWS, ground_truth, impactful_genes, nearest_genes, oracle_summary,
                                setup_stage)
from image2reg.translation.loto import model_fit_predict
from image2reg.translation.metrics import rank_scores
from image2reg.translation.statistics import power_summary, power_table
from image2reg.translation.features import InputSettings, unit_rows
from image2reg.translation.transfer import (baseline_transfer_ranks, permutation_transfer_ranks, regulatory_clusters,
                                            restricted_test, transfer_comparison, transfer_predictions, transfer_ranks)

ctx = setup_stage("validation", dataset, params_path, fold, runs_dir, reports_dir)
params, out, layout = ctx.stage_params, ctx.out_dir, ctx.layout
print(encoder_initialisation(params.model))
control = ctx.params.stage("screen").control if "screen" in ctx.params.stage_names() else "EMPTY"
reference = layout if params.reference is None else RunLayout(params.reference, layout.runs_dir, layout.reports_dir)
impactful = impactful_genes(reference)
regulatory_file = reference.stage_dir_of("regulatory") / "regulatory_embeddings.h5ad"
if not regulatory_file.is_file():
    raise FileNotFoundError(f"{regulatory_file} is missing: run stages 05–06 of dataset '{reference.dataset}' first")
embedded = ad.read_h5ad(regulatory_file)
regulatory = pd.DataFrame(unit_rows(np.asarray(embedded.X, dtype=np.float64)),
                          index=embedded.obs_names.astype(str))
interactome = list(regulatory.index)
truth = ground_truth(layout)
print(f"reference: dataset '{reference.dataset}' — {len(impactful)} impactful genes, {len(interactome)} "
      f"interactome genes with regulatory embeddings")

# %% [markdown]
# ## The second screen
#
# Training genes: the impactful genes in the interactome. Test genes: the other interactome genes the
# second screen perturbed. On the demo, their effects follow the world's truth: a gene of the first
# screen keeps its effect, any other gene perturbs the nuclei along the direction its program dictates.

# %%
images_params = ctx.params.stage("images")
if params.second_screen is not None:
    if truth is None:
        raise FileNotFoundError(f"{layout.raw.truth / 'genes.parquet'} is missing: the second screen needs the "
                                "synthetic world of stage 00")
    second = params.second_screen
    train_genes = [g for g in impactful if g in regulatory.index]
    others = [g for g in interactome if g not in set(train_genes) and g in truth.index]
    if second.max_test_genes is not None and len(others) > second.max_test_genes:
        rng = np.random.default_rng(ctx.seed)
        others = sorted(rng.choice(others, size=second.max_test_genes, replace=False))
    plan = second_screen_plan(train_genes, others, train_wells=second.train_wells, test_wells=second.test_wells,
                              control_wells=second.control_wells, sites_per_well=second.sites_per_well, seed=ctx.seed)
    shifts = world_shifts(truth.reset_index(), train_genes + others, tuple(second.effect), ctx.seed)
    fields = render_second_screen(shifts, plan, ctx.params.stage("data").synthetic.screen, out / "screen",
                                  seed=ctx.seed)
    images_dir = out / "images"
    counts = preprocess_images(fields, images_dir, images_params)
    illumination = prepare_illumination(fields, images_dir, images_params, progress_bar=False)
    print(f"synthesized {len(fields)} fields: {len(train_genes)} training genes × {second.train_wells} wells, "
          f"{len(others)} test genes × {second.test_wells} well(s), {second.control_wells} control wells; "
          f"stage-01 preprocessing kept {counts['nuclei']} nuclei")
    fig, ax = plt.subplots(figsize=(6, 3))
    for role, genes in (("training genes", train_genes), ("test genes", others)):
        ax.hist(shifts.loc[genes, "effect_size"], bins=20, range=(0, shifts["effect_size"].max()), alpha=0.6,
                label=role)
    ax.set_xlabel("true effect size (cell-noise SD)")
    ax.set_ylabel("genes")
    ax.legend(frameon=False)
    ax.set_title("Ground truth: effects of the second screen's perturbations", fontsize=10)
    plt.show()
else:
    images_dir = layout.stage_dir_of("images")
    illumination = None  # the region branch cuts patches from the fields corrected as in stage 01
    if "region" in params.model.branches:
        illumination = illumination_files(layout.raw, images_dir, images_params)
nuclei = pd.read_parquet(images_dir / "nuclei.parquet")
usable = nuclei[nuclei["QC_pass"].astype(bool)]
fields_per = usable.groupby("Metadata_Gene")["image_path"].nunique()
needed = min_fields(params.n_folds, params.n_inner)
train = [g for g in impactful if g in regulatory.index and fields_per.get(g, 0) >= needed]
test = [g for g in interactome if g not in set(impactful) and fields_per.get(g, 0) >= 1]
short = [g for g in impactful if g in regulatory.index and 0 < fields_per.get(g, 0) < needed]
print(f"{len(train)} training genes, {len(test)} test genes (interactome genes of the second screen); "
      f"impactful genes with too few fields to train on (< {needed}): {', '.join(short) if short else 'none'}")
if control not in fields_per.index:
    raise ValueError(f"the second screen has no QC-passing nuclei of the control {control!r}")

# %% [markdown]
# ## The CNN of the second screen
#
# The multi-class model of stage 03 (same architecture and training), trained on the training genes and
# the control of the second screen, fold 0 of its folds. Its test nuclei give the training genes'
# embeddings; every nucleus of the test genes is embedded by it without having been seen.

# %%
encoder = encoder_spec(params.model, params.latent_dim, illumination)
task = EmbeddingTask(kind="multiclass", genes=tuple(train), images_dir=str(images_dir), out_dir=str(out / "models"),
                     fold=0, seed=ctx.seed, control=control, n_folds=params.n_folds, n_inner=params.n_inner,
                     undersample_control=params.undersample_control, encoder=encoder, training=params.training,
                     torch_threads=params.torch_threads)
metrics = run_embedding_task(task, progress_bar=True)
print(f"{metrics['n_classes']} classes: test balanced accuracy {metrics['test_balanced_accuracy']:.3f} "
      f"(chance {metrics['chance']:.3f}), best epoch {metrics['best_epoch']}")
history = pd.read_csv(task.folder / TaskFiles.TRAINING / TaskFiles.HISTORY)
plotting.training_histories({"second screen": history})
plt.show()

trained = ad.read_h5ad(task.folder / "embeddings.h5ad")
test_nuclei = usable[usable["Metadata_Gene"].isin(test)]
with torch_threads(params.torch_threads):
    latents = embed_nuclei(test_nuclei, images_dir=images_dir, weights=task.folder / TaskFiles.TRAINING / TaskFiles.BEST_MODEL,
                           n_classes=len(trained.uns["classes"]), encoder=encoder,
                           batch_size=params.training.batch_size, device=params.training.device)
unseen = ad.AnnData(latents.astype(np.float32), obs=test_nuclei[["Metadata_Gene"]].astype(str).reset_index(drop=True))
unseen.var_names = trained.var_names
means = ad.concat([gene_embeddings(trained[trained.obs["Metadata_Gene"] != control]), gene_embeddings(unseen)])
image = pd.DataFrame(np.asarray(means.X, dtype=np.float64), index=means.obs_names.astype(str))
with atomic_path(out / "gene_embeddings.h5ad") as tmp:
    means.obs["role"] = np.where(means.obs_names.isin(train), "train", "test")
    means.write_h5ad(tmp)
print(f"gene perturbation embeddings: {len(train)} training genes (from {int(means.obs.loc[train, 'n_nuclei'].sum())}"
      f" test nuclei), {len(test)} test genes (from {len(test_nuclei)} unseen nuclei)")

# %% [markdown]
# ## Translation to the unseen genes
#
# The params' model is fitted on the training genes and predicts every test gene. The headline numbers
# keep the test genes whose regulatory cluster (k-means of the embeddings) holds at least
# `min_train_per_cluster` training genes, as in the reference; all test genes are shown as well.
# p-values: the share of random-gene rankings, and of fits on shuffled training pairs, that score at
# least as high; against the mean baselines, a paired sign-flip test on the same test genes.

# %%
settings = InputSettings(**{**params.inputs.model_dump(), "n_neighbors": min(params.inputs.n_neighbors, len(train))})
fit_predict = model_fit_predict(params.translation, params.reg, settings, seed=ctx.seed)
clusters = regulatory_clusters(regulatory, min(params.n_clusters, len(regulatory)), ctx.seed)
kept = restricted_test(clusters, train, test, params.min_train_per_cluster)
n_genes, max_k = len(regulatory), min(params.max_k, len(regulatory))
main = f"{params.translation} (reg {params.reg:g})"
ranks = pd.DataFrame({main: transfer_ranks(image, regulatory, train, test, fit_predict),
                      "mean of all genes": baseline_transfer_ranks(regulatory, train, test, "mean_all"),
                      "mean of training genes": baseline_transfer_ranks(regulatory, train, test, "train_mean")})
ranks["cluster"] = clusters.loc[test].to_numpy()
ranks["restricted"] = ranks.index.isin(kept)
with atomic_path(out / "ranks.parquet") as tmp:
    ranks.to_parquet(tmp)
null = None
if params.permutation_repeats:
    null = permutation_transfer_ranks(image, regulatory, train, test, fit_predict, params.permutation_repeats,
                                      ctx.seed + 1, progress_bar=True)
per_cluster = clusters.loc[train].value_counts().reindex(range(clusters.max() + 1), fill_value=0)
print(f"training genes per regulatory cluster: {per_cluster.to_dict()}; {len(kept)} of {len(test)} test genes are in "
      f"clusters with ≥ {params.min_train_per_cluster} training genes")


# %%
results, powers = {}, {}
for label, genes in (("restricted", kept), ("all", test)):
    if not genes:
        print(f"{label}: no test genes")
        continue
    table, curves, bands = transfer_comparison(ranks, genes, main, n_genes, null, max_k=max_k,
                                               auc_ks=params.auc_ks, random_repeats=params.random_repeats,
                                               seed=ctx.seed)
    results[label] = table
    print(f"{label} test genes ({len(genes)}):")
    display(table.round(4))
    # exact 95 % intervals of the top-k accuracies and the fewest hits a test at p < 0.05 accepts
    powers[label] = power_table(ranks.loc[genes, main], n_genes, [k for k in (5, 10) if k <= max_k])
    display(powers[label].round(3))
    plotting.topk_curves(curves, bands, f"{label}: top-k accuracy of {len(genes)} unseen genes among "
                                        f"{n_genes} candidates ({len(train)} training genes)")
    plt.show()
plotting.target_ranks(ranks.loc[kept or test, main], n_genes, title=f"{main}: rank of each test gene")
plt.show()

# %% [markdown]
# ## What the predictions look like
#
# For a few test genes: the ten genes nearest to the predicted regulatory embedding (on the synthetic
# data, with each gene's true module).

# %%
predicted = transfer_predictions(image, regulatory, train, test, fit_predict)
examples = ranks.loc[kept or test, main].sort_values().index
for gene in dict.fromkeys(examples[[0, len(examples) // 2, -1]]):
    nearest = nearest_genes(regulatory, predicted.loc[gene].to_numpy(), truth, gene)
    nearest.insert(2, "training gene", nearest["gene"].isin(train))
    print(f"{gene}: true gene at rank {int(ranks.loc[gene, main]) + 1} of {n_genes}")
    display(nearest.T)

# %% [markdown]
# ## What limits the prediction (synthetic data only)
#
# The world's truth lets us swap either side for its ideal: the genes' true phenotype shifts in place
# of the CNN's image embeddings, and the genes' true programs in place of the regulatory embeddings.
# The same translation is fitted on the same training genes and scored on the same test genes. Where
# the score jumps, that side is where the signal is lost.

# %%
oracle = None
if truth is not None:
    shift_columns = [c for c in truth.columns if c.startswith("shift_")]
    true_image = world_shifts(truth.reset_index(), train + test, tuple(params.second_screen.effect)
                              if params.second_screen else (1.0, 1.0), ctx.seed)[shift_columns]
    true_regulatory = pd.DataFrame(unit_rows(latent(truth.loc[interactome])), index=regulatory.index)
    genes_scored = kept or test
    oracle = pd.DataFrame({
        label: rank_scores(transfer_ranks(x, y, train, test, fit_predict).loc[genes_scored].to_numpy(), max_k,
                           params.auc_ks, score=True)
        for label, x, y in ((ORACLE_ROWS["the method"], image, regulatory),
                            (ORACLE_ROWS["true_images"], true_image, regulatory),
                            (ORACLE_ROWS["true_programs"], image, true_regulatory),
                            (ORACLE_ROWS["both_true"], true_image, true_regulatory))}).T
    display(oracle.round(3))

# %%
summary = {"reference": reference.dataset, "training_genes": len(train), "test_genes": len(test),
           "restricted_test_genes": len(kept), "candidates": n_genes, "model": main,
           "cnn_test_bac": metrics["test_balanced_accuracy"], "cnn_chance": metrics["chance"]}
for label, table in results.items():
    for column, value in table.loc[main].dropna().items():
        summary[f"{label}_{column}"] = float(value)
    for name, key in (("mean of all genes", "mean_all"), ("mean of training genes", "train_mean")):
        summary[f"{label}_{key}_score"] = float(table.loc[name, "score"])
        summary[f"{label}_{key}_top5"] = float(table.loc[name, "top5"]) if "top5" in table else None
    summary[f"{label}_random_score"] = float(table.loc["random gene (expected)", "score"])
    summary.update({f"{label}_{key}": value for key, value in power_summary(powers[label]).items()})
if oracle is not None:
    summary.update(oracle_summary(oracle))
write_text_atomic(out / "summary.json", pd.Series(summary).to_json(indent=2) + "\n")
print({key: round(value, 3) if isinstance(value, float) else value for key, value in summary.items()})
