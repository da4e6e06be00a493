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
# # 04 · Leave-one-target-out CNNs
#
# For the translation to gene regulation (stage 06), the perturbation embedding of a gene must come
# from a model that never saw that gene (method §4.5). For every impactful gene `T`, a multi-class
# CNN is trained on the other genes and the control, then embeds all of `T`'s nuclei and the test
# nuclei of the other conditions. Their means per condition are the gene perturbation embeddings of
# model `T` (`gene_embeddings_loto.h5ad`, one row per model and condition, `is_target` marking `T`).

# %% tags=["parameters"]
dataset = "demo"
params_path = None
fold = None
runs_dir = None
reports_dir = None
work_dir = None

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from image2reg import plotting
from image2reg.cnn.embed import loto_tasks, run_embedding_tasks
from image2reg.cnn.report import (
    LOTO_COLUMNS,
    class_labels,
    held_out_targets,
    loto_embeddings,
    loto_summary,
    nearest_trained_genes,
)
from image2reg.cnn.tasks import encoder_spec
from image2reg.config import encoder_initialisation
from image2reg.layout import write_h5ad, write_parquet, write_summary
from image2reg.notebook import cnn_inputs, setup_stage

ctx = setup_stage("loto", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params = ctx.stage_params
print(encoder_initialisation(params.model))
inputs = cnn_inputs(ctx)
control, impactful, truth = inputs.control, inputs.impactful, inputs.truth

# %% [markdown]
# ## One model per held-out target

# %%
tasks = loto_tasks(
    impactful, include_control=params.include_control, images_dir=str(inputs.images_dir),
    out_dir=str(ctx.layout.artifact("loto", "models")), seed=ctx.seed, control=control, n_folds=params.n_folds,
    n_inner=params.n_inner, undersample_control=params.undersample_control,
    encoder=encoder_spec(params.model, params.latent_dim, inputs.illumination), training=params.training,
    torch_threads=params.torch_threads, baseline_profiles=str(inputs.profiles))
print(f"{len(tasks)} LOTO models, {len(impactful)} classes each (the other genes and {control})")
metrics = run_embedding_tasks(tasks, params.execution)
write_parquet(metrics, ctx.layout.artifact("loto", "metrics"))
display(metrics[LOTO_COLUMNS].round(3))

# %% [markdown]
# ## Gene perturbation embeddings of every model
#
# Per model: the mean embedding of the held-out target's nuclei and of each other condition's test
# nuclei. Every impactful gene must have its embedding from the model that never saw it.

# %%
classes = class_labels(impactful, control)
loto, assignment = loto_embeddings(tasks, classes)
write_h5ad(loto, ctx.layout.artifact("loto", "gene_embeddings_loto"))
targets = held_out_targets(loto, impactful)
print(f"{loto.n_obs} gene embeddings ({loto.n_vars} dimensions) from {len(tasks)} models; "
      f"every impactful gene has its held-out embedding ({len(targets)} targets)")
display(loto.obs.head())

# %% [markdown]
# ## Models and the unseen targets
#
# Left: test balanced accuracy of each model on the conditions it was trained on (with the
# classical baseline on the same split, and chance). Right: which class the model assigns the
# nuclei of the target it never saw; a target that resembles one trained gene lands on it.

# %%
plotting.loto_overview(metrics, assignment)
plt.show()

# %% [markdown]
# ## Is the unseen target placed near related genes?
#
# In each model, the held-out target's embedding (centred on the control's) is compared by cosine
# similarity with those of the trained genes. In the synthetic world, genes of the same regulatory
# module share their effect direction, so the nearest trained gene should often be in the
# target's module; chance is the share of same-module genes among the others.

# %%
neighbours = nearest_trained_genes(loto, control, truth)
display(neighbours.round(3))
summary = loto_summary(metrics, len(targets), neighbours)
if "nearest_same_module" in summary:
    print(f"nearest trained gene in the target's true module for {summary['nearest_same_module']:.0%} of "
          f"targets (chance {summary['nearest_same_module_chance']:.0%})")
write_summary(summary, ctx.layout.artifact("loto", "summary"))
