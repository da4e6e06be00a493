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
work_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.cnn.embed import gene_embeddings, multiclass_tasks, read_embeddings, run_embedding_tasks
from image2reg.cnn.report import (
    MULTICLASS_COLUMNS,
    class_labels,
    confusion_table,
    control_scaled,
    embedding_activity,
    embeddings_summary,
    gene_umap,
    module_labels,
    multiclass_summary,
    nucleus_umap,
    perturbation_similarity,
    read_histories,
)
from image2reg.cnn.tasks import encoder_spec
from image2reg.config import encoder_initialisation
from image2reg.layout import write_h5ad, write_parquet, write_summary
from image2reg.notebook import cnn_inputs, setup_stage

ctx = setup_stage("embeddings", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params = ctx.stage_params
print(encoder_initialisation(params.model))
inputs = cnn_inputs(ctx)
control, impactful, truth = inputs.control, inputs.impactful, inputs.truth
print(f"{len(impactful)} impactful genes + {control}: {len(impactful) + 1} classes, {ctx.params.folds} folds")

# %% [markdown]
# ## Training, one model per fold

# %%
tasks = multiclass_tasks(
    impactful, n_folds=ctx.params.folds, images_dir=str(inputs.images_dir),
    out_dir=str(ctx.layout.artifact("embeddings", "models")), seed=ctx.seed, control=control,
    n_inner=params.n_inner, undersample_control=params.undersample_control,
    encoder=encoder_spec(params.model, params.latent_dim, inputs.illumination), training=params.training,
    torch_threads=params.torch_threads, baseline_profiles=str(inputs.profiles))
metrics = run_embedding_tasks(tasks, params.execution)
write_parquet(metrics, ctx.layout.artifact("embeddings", "metrics"))
display(metrics[MULTICLASS_COLUMNS].round(3))
summary = multiclass_summary(metrics)
print(f"test balanced accuracy {summary['test_bac_mean']:.3f} ± {summary['test_bac_sd']:.3f} over "
      f"{len(metrics)} folds (chance {summary['chance']:.3f}, {summary['test_bac_mean'] / summary['chance']:.1f}× "
      f"chance); classical features {summary['baseline_bac_mean']:.3f}")

# %%
plotting.training_histories(read_histories(tasks))
plt.show()

# %% [markdown]
# ## Nucleus embeddings
#
# The test nuclei of all folds, each embedded by the model of its fold, in one AnnData
# (`nucleus_embeddings.h5ad`: `X` the latents, `obs` the nucleus's metadata and prediction).

# %%
nuclei = read_embeddings(tasks)
write_h5ad(nuclei, ctx.layout.artifact("embeddings", "nucleus_embeddings"))
print(nuclei)

# %% [markdown]
# ## Confusion matrix (test nuclei of all folds)

# %%
classes = class_labels(impactful, control)
confusion = confusion_table(nuclei.obs["Metadata_Gene"], nuclei.obs["predicted_class"], classes)
plotting.confusion_heatmap(confusion, f"Multi-class CNN, {len(classes)} classes: test nuclei of all folds")
plt.show()

# %% [markdown]
# ## Gene perturbation embeddings
#
# The mean nucleus embedding per condition (`gene_embeddings.h5ad`). Each fold model's embeddings
# live in a space of their own, and every condition's nuclei were embedded by several of them: so
# each nucleus is first standardised against the control nuclei *of its own model*, and the means
# are in control SD units (the control at 0). The figures below compare them by cosine similarity:
# the direction in which a perturbation moves nuclei away from the control.

# %%
genes = gene_embeddings(nuclei, control=control, model="model")
print(f"gene embeddings: {genes.uns['scaling']}")
write_h5ad(genes, ctx.layout.artifact("embeddings", "gene_embeddings"))
perturbations = perturbation_similarity(genes, control)
shifts = perturbations.shifts
modules = module_labels(truth)
plotting.gene_clustermap(perturbations.similarity, perturbations.order, modules,
                         "Gene perturbation embeddings (centred on the control), average-linkage clustering"
                         + (": labels coloured by true module" if modules is not None else ""))
plt.show()

# %% [markdown]
# ## UMAP
#
# Left: a sample of nucleus embeddings (each standardised against its own fold model's control
# nuclei) coloured by condition. Right: the gene perturbation
# embeddings (centred on the control), coloured by the true regulatory module where it is known.

# %%
sample, coordinates = nucleus_umap(control_scaled(nuclei, control), max_nuclei=params.umap_max_nuclei,
                                   n_neighbors=params.umap_neighbors, seed=ctx.seed)
plotting.embedding_scatter(coordinates, nuclei.obs["Metadata_Gene"].iloc[sample],
                           f"UMAP of {len(sample)} nucleus embeddings (test nuclei)")
plt.show()
gene_coordinates = gene_umap(shifts, seed=ctx.seed)
if gene_coordinates is not None:  # None: too few genes to lay out
    plotting.embedding_scatter(gene_coordinates, modules.reindex(shifts.index) if modules is not None
                               else pd.Series(shifts.index), "UMAP of the gene perturbation embeddings",
                               names=list(shifts.index))
    plt.show()

# %% [markdown]
# ## Phenotypic activity (mean average precision, `copairs`)
#
# Field-of-view profiles (mean embedding of a field's nuclei, standardised against the control's
# fields embedded by the same fold model: each model's embeddings live in a space of their own) of
# each perturbation are retrieved against the control's: mAP near 1 when a
# perturbation's fields are all more similar to each other than to any control field. Positive
# pairs must come from different wells, so that a well's own look does not count. The same is
# done with the classical profiles of the same nuclei.

# %%
activity = embedding_activity(nuclei, pd.read_parquet(inputs.profiles), control, seed=ctx.seed)
write_parquet(activity, ctx.layout.artifact("embeddings", "activity"))
summary = embeddings_summary(metrics, activity)
print(f"active perturbations: CNN {summary['active_cnn']}, classical {summary['active_classical']} "
      f"of {len(activity)}; mean mAP CNN {summary['map_cnn']:.3f}, classical {summary['map_classical']:.3f}")
plotting.activity_bars(activity)
plt.show()

# %%
write_summary(summary, ctx.layout.artifact("embeddings", "summary"))
