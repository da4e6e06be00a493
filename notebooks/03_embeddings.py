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
# # 03 · Multi-class CNN: nucleus and gene perturbation embeddings
#
# One CNN learns to tell all impactful genes and the control apart (method §4.4), in k folds
# grouped by field of view, so that every nucleus is embedded once by a model that never saw it.
# Its latent layer gives the **nucleus embeddings**; their mean per condition is the **gene
# perturbation embedding**. The report shows how well the conditions are told apart (balanced
# accuracy against chance and against classical features), which conditions are confused, how the
# embeddings group (UMAP, hierarchical clustering) and how strongly each perturbation separates from
# the control (mean average precision with `copairs`).

# %% tags=["parameters"]
dataset = "demo"
params_path = None
fold = None
runs_dir = None
reports_dir = None

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from scipy.cluster.hierarchy import leaves_list, linkage

from image2reg import plotting
from image2reg.profiling.activity import field_activity
from image2reg.cnn.embed import gene_embeddings, multiclass_tasks, read_embeddings, run_embedding_tasks
from image2reg.cnn.tasks import encoder_spec
from image2reg.layout import atomic_path, write_text_atomic
from image2reg.config import encoder_initialisation
from image2reg.notebook import cnn_inputs, setup_stage

ctx = setup_stage("embeddings", dataset, params_path, fold, runs_dir, reports_dir)
params = ctx.stage_params
print(encoder_initialisation(params.model))
inputs = cnn_inputs(ctx)
control, impactful, truth, out = inputs.control, inputs.impactful, inputs.truth, ctx.out_dir
print(f"{len(impactful)} impactful genes + {control}: {len(impactful) + 1} classes, {ctx.params.folds} folds")

# %% [markdown]
# ## Training, one model per fold

# %%
tasks = multiclass_tasks(
    impactful, n_folds=ctx.params.folds, images_dir=str(inputs.images_dir), out_dir=str(out / "models"),
    seed=ctx.seed, control=control, n_inner=params.n_inner, undersample_control=params.undersample_control,
    encoder=encoder_spec(params.model, params.latent_dim, inputs.illumination), training=params.training,
    torch_threads=params.torch_threads, baseline_profiles=str(inputs.profiles))
metrics = run_embedding_tasks(tasks, params.execution)
with atomic_path(out / "metrics.parquet") as tmp:
    metrics.to_parquet(tmp)
chance = metrics["chance"].iat[0]
display(metrics[["model", "n_train", "n_val", "n_test", "best_epoch", "epochs", "val_balanced_accuracy",
                 "test_balanced_accuracy", "baseline_test_balanced_accuracy"]].round(3))
summary = {"classes": int(metrics["n_classes"].iat[0]), "chance": chance,
           "test_bac_mean": metrics["test_balanced_accuracy"].mean(),
           "test_bac_sd": metrics["test_balanced_accuracy"].std(ddof=1),
           "baseline_bac_mean": metrics["baseline_test_balanced_accuracy"].mean()}
print(f"test balanced accuracy {summary['test_bac_mean']:.3f} ± {summary['test_bac_sd']:.3f} over "
      f"{len(metrics)} folds (chance {chance:.3f}, {summary['test_bac_mean'] / chance:.1f}× chance); "
      f"classical features {summary['baseline_bac_mean']:.3f}")

# %%
histories = {task.name: pd.read_csv(task.folder / "training" / "history.csv") for task in tasks}
plotting.training_histories(histories)
plt.show()

# %% [markdown]
# ## Nucleus embeddings
#
# The test nuclei of all folds, each embedded by the model of its fold, in one AnnData
# (`nucleus_embeddings.h5ad`: `X` the latents, `obs` the nucleus's metadata and prediction).

# %%
nuclei = read_embeddings(tasks)
with atomic_path(out / "nucleus_embeddings.h5ad") as tmp:
    nuclei.write_h5ad(tmp)
print(nuclei)

# %% [markdown]
# ## Confusion matrix (test nuclei of all folds)

# %%
classes = sorted({*impactful, control})  # the label encoding of multiclass_splits
confusion = pd.crosstab(pd.Categorical(nuclei.obs["Metadata_Gene"], classes),
                        pd.Categorical(nuclei.obs["predicted_class"], classes), dropna=False)
confusion.index.name, confusion.columns.name = "true", "predicted"
plotting.confusion_heatmap(confusion, f"Multi-class CNN, {len(classes)} classes: test nuclei of all folds")
plt.show()

# %% [markdown]
# ## Gene perturbation embeddings
#
# The mean nucleus embedding per condition (`gene_embeddings.h5ad`). For the figures below they
# are centred on the control's embedding and compared by cosine similarity: the direction in which
# a perturbation moves nuclei away from the control.

# %%
genes = gene_embeddings(nuclei)
with atomic_path(out / "gene_embeddings.h5ad") as tmp:
    genes.write_h5ad(tmp)
shifts = pd.DataFrame(genes.X - genes[control].X, index=genes.obs_names).drop(index=control)
norms = np.linalg.norm(shifts.to_numpy(), axis=1, keepdims=True)
unit = shifts.to_numpy() / np.where(norms > 0, norms, 1)
similarity = pd.DataFrame(unit @ unit.T, index=shifts.index, columns=shifts.index)
order = list(shifts.index[leaves_list(linkage(unit, method="average", metric="cosine"))])
modules = truth["module"].astype(str).rename("true module") if truth is not None else None
plotting.gene_clustermap(similarity, order, modules,
                         "Gene perturbation embeddings (centred on the control), average-linkage clustering"
                         + (": labels coloured by true module" if modules is not None else ""))
plt.show()

# %% [markdown]
# ## UMAP
#
# Left: a sample of nucleus embeddings coloured by condition. Right: the gene perturbation
# embeddings (centred on the control), coloured by the true regulatory module where it is known.

# %%
import umap  # noqa: E402  (imported here: numba compiles on first import)

rng = np.random.default_rng(ctx.seed)
sample = np.sort(rng.choice(nuclei.n_obs, size=min(params.umap_max_nuclei, nuclei.n_obs), replace=False))
coordinates = umap.UMAP(n_neighbors=params.umap_neighbors, random_state=ctx.seed, n_jobs=1).fit_transform(
    nuclei.X[sample])
plotting.embedding_scatter(coordinates, nuclei.obs["Metadata_Gene"].iloc[sample],
                           f"UMAP of {len(sample)} nucleus embeddings (test nuclei)")
plt.show()
if len(shifts) >= 5:  # UMAP needs a few points to lay out
    gene_coordinates = umap.UMAP(n_neighbors=min(10, len(shifts) - 1), random_state=ctx.seed, n_jobs=1,
                                 metric="cosine").fit_transform(shifts.to_numpy())
    plotting.embedding_scatter(gene_coordinates, modules.reindex(shifts.index) if modules is not None
                               else pd.Series(shifts.index), "UMAP of the gene perturbation embeddings",
                               names=list(shifts.index))
    plt.show()

# %% [markdown]
# ## Phenotypic activity (mean average precision, `copairs`)
#
# Field-of-view profiles (mean embedding of a field's nuclei, standardised against the control's
# fields) of each perturbation are retrieved against the control's: mAP near 1 when a
# perturbation's fields are all more similar to each other than to any control field. Positive
# pairs must come from different wells, so that a well's own look does not count. The same is
# done with the classical profiles of the same nuclei.

# %%
obs = nuclei.obs.reset_index(drop=True)
activity = field_activity(np.asarray(nuclei.X), obs, control, seed=ctx.seed)
profiles = pd.read_parquet(inputs.profiles).loc[obs["nucleus"].to_numpy()]
profile_values = profiles.to_numpy(np.float64)
profile_values = np.where(np.isfinite(profile_values), profile_values, np.nanmedian(profile_values, axis=0))
classical = field_activity(profile_values, obs, control, seed=ctx.seed)
activity = activity.join(classical[["mean_average_precision", "active"]], rsuffix="_classical")
with atomic_path(out / "activity.parquet") as tmp:
    activity.to_parquet(tmp)
summary.update(active_cnn=int(activity["active"].sum()), active_classical=int(activity["active_classical"].sum()),
               map_cnn=float(activity["mean_average_precision"].mean()),
               map_classical=float(activity["mean_average_precision_classical"].mean()))
print(f"active perturbations: CNN {summary['active_cnn']}, classical {summary['active_classical']} "
      f"of {len(activity)}; mean mAP CNN {summary['map_cnn']:.3f}, classical {summary['map_classical']:.3f}")
fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(activity)), 3.2))
x = np.arange(len(activity))
ax.bar(x - 0.2, activity["mean_average_precision"], width=0.4, color="#2980b9", label="CNN embeddings")
ax.bar(x + 0.2, activity["mean_average_precision_classical"], width=0.4, color="#e67e22", label="classical profiles")
ax.set_xticks(x, activity.index, rotation=90, fontsize=6)
ax.set_ylabel("mAP vs control (fields)")
ax.legend(frameon=False, fontsize=8)
fig.tight_layout()
plt.show()

# %%
write_text_atomic(out / "summary.json", pd.Series(summary).to_json(indent=2) + "\n")
