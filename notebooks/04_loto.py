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

# %%
import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.cnn.embed import gene_embeddings, loto_tasks, read_embeddings, run_embedding_tasks
from image2reg.cnn.tasks import encoder_spec
from image2reg.layout import atomic_path, write_text_atomic
from image2reg.config import encoder_initialisation
from image2reg.notebook import cnn_inputs, setup_stage

ctx = setup_stage("loto", dataset, params_path, fold, runs_dir, reports_dir)
params = ctx.stage_params
print(encoder_initialisation(params.model))
inputs = cnn_inputs(ctx)
control, impactful, truth, out = inputs.control, inputs.impactful, inputs.truth, ctx.out_dir

# %% [markdown]
# ## One model per held-out target

# %%
tasks = loto_tasks(
    impactful, include_control=params.include_control, images_dir=str(inputs.images_dir),
    out_dir=str(out / "models"), seed=ctx.seed, control=control, n_folds=params.n_folds, n_inner=params.n_inner,
    undersample_control=params.undersample_control,
    encoder=encoder_spec(params.model, params.latent_dim, inputs.illumination), training=params.training,
    torch_threads=params.torch_threads, baseline_profiles=str(inputs.profiles))
print(f"{len(tasks)} LOTO models, {len(impactful)} classes each (the other genes and {control})")
metrics = run_embedding_tasks(tasks, params.execution)
with atomic_path(out / "metrics.parquet") as tmp:
    metrics.to_parquet(tmp)
display(metrics[["held_out", "n_classes", "n_train", "n_test", "n_held_out", "best_epoch", "test_balanced_accuracy",
                 "baseline_test_balanced_accuracy", "chance"]].round(3))

# %% [markdown]
# ## Gene perturbation embeddings of every model
#
# Per model: the mean embedding of the held-out target's nuclei and of each other condition's test
# nuclei. Every impactful gene must have its embedding from the model that never saw it.

# %%
parts, assignments = [], {}
for task in tasks:
    embedded = read_embeddings([task])
    part = gene_embeddings(embedded, by=("model", "Metadata_Gene"))
    part.obs["is_target"] = (part.obs["Metadata_Gene"] == task.held_out).to_numpy()
    parts.append(part)
    target = embedded.obs[embedded.obs["split"] == "held_out"]
    assignments[task.held_out] = target["predicted_class"].value_counts(normalize=True)
loto = ad.concat(parts, merge="same")
loto.obs = loto.obs.rename(columns={"Metadata_Gene": "gene"})
with atomic_path(out / "gene_embeddings_loto.h5ad") as tmp:
    loto.write_h5ad(tmp)
targets = loto.obs.loc[loto.obs["is_target"], "gene"]
missing = sorted(set(impactful) - set(targets))
if missing:
    raise RuntimeError(f"no LOTO embedding for {missing}")
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
classes = sorted(set(impactful) | {control})
assignment = pd.DataFrame(assignments).T.reindex(index=[task.held_out for task in tasks], columns=classes).fillna(0)
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
rows = []
for task in tasks:
    if task.held_out == control:
        continue
    block = loto[loto.obs["model"] == task.name]
    names = block.obs["gene"].to_numpy()
    shifts = np.asarray(block.X) - np.asarray(block.X)[names == control]
    keep = names != control
    shifts, names = shifts[keep], names[keep]
    unit = shifts / np.maximum(np.linalg.norm(shifts, axis=1, keepdims=True), 1e-12)
    at = int(np.flatnonzero(names == task.held_out)[0])
    cosine = unit @ unit[at]
    others = np.flatnonzero(names != task.held_out)
    nearest = names[others[np.argmax(cosine[others])]]
    row = {"target": task.held_out, "nearest_trained_gene": nearest, "cosine": float(cosine[others].max())}
    if truth is not None:
        module = truth.loc[task.held_out, "module"]
        row["same_module"] = bool(truth.loc[nearest, "module"] == module)
        row["chance"] = float(np.mean(truth.loc[names[others], "module"].to_numpy() == module))
    rows.append(row)
neighbours = pd.DataFrame(rows).set_index("target")
display(neighbours.round(3))
summary = {"models": len(tasks), "targets": len(targets),
           "test_bac_mean": float(metrics["test_balanced_accuracy"].mean()), "chance": float(metrics["chance"].mean())}
if truth is not None:
    summary.update(nearest_same_module=float(neighbours["same_module"].mean()),
                   nearest_same_module_chance=float(neighbours["chance"].mean()))
    print(f"nearest trained gene in the target's true module for {neighbours['same_module'].mean():.0%} of "
          f"targets (chance {neighbours['chance'].mean():.0%})")
write_text_atomic(out / "summary.json", pd.Series(summary).to_json(indent=2) + "\n")
