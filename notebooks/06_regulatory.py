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
# # 06 · Regulatory gene embeddings
#
# A graph convolutional autoencoder (method §6) embeds every gene of the interactome so that genes
# joined by an edge get similar codes: two graph convolutions read each gene's features (its
# single-cell expression, scaled per cell, and its gene-set memberships) and those of its
# neighbours, and an inner-product decoder must tell the interactome's edges from random gene
# pairs. A latent classifier can add the image side: it asks the codes to predict clusters of the
# impactful genes' image embeddings. For the leave-one-target-out evaluation of stage 07, each
# target gets its own model whose labels come from its LOTO CNN, with the target itself unlabelled.

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
import umap
from IPython.display import display
from sklearn.cluster import AgglomerativeClustering
from sklearn.preprocessing import normalize

from image2reg import plotting
from image2reg.execute import run_tasks
from image2reg.data import expression
from image2reg.layout import atomic_path, write_text_atomic
from image2reg.network.gae import node_features
from image2reg.data.network_inputs import load_single_cell, read_gmt
from image2reg.network.inference import module_recovery
from image2reg.network.regulatory import (gae_tasks, loto_embeddings_table, read_task_embeddings, read_task_history,
                                          replicate_embeddings_table, run_gae_task)
from image2reg.data.raw import raw_input_path
from image2reg.notebook import ground_truth, impactful_genes, setup_stage

ctx = setup_stage("regulatory", dataset, params_path, fold, runs_dir, reports_dir)
params, out, layout = ctx.stage_params, ctx.out_dir, ctx.layout
interactome_dir = layout.stage_dir_of("interactome")
nodes = pd.read_parquet(interactome_dir / "nodes.parquet")
edge_table = pd.read_parquet(interactome_dir / "edges.parquet")
targets, truth = impactful_genes(layout), ground_truth(layout)
print(f"interactome: {len(nodes)} genes, {len(edge_table)} edges, {int(nodes['is_target'].sum())} of "
      f"{len(targets)} impactful genes")

# %% [markdown]
# ## Node features
#
# The single cells are those of stage 05 (the same filters and normalisation); each cell is min–max
# scaled over the interactome's genes, then the gene-set memberships are appended.

# %%
genes = nodes.index.to_numpy(str)
position = pd.Series(np.arange(len(genes)), index=genes)
edges = np.column_stack([position.loc[edge_table["gene1"]].to_numpy(), position.loc[edge_table["gene2"]].to_numpy()])
source = ctx.params.stage("data").source
cells = load_single_cell(layout.raw, source, ctx.params.stage("interactome"))
gene_sets = read_gmt(raw_input_path(layout.raw, source, "genesets")) if "gene_sets" in params.features else None
features, names = node_features(expression.dense_expression(cells[:, genes]), genes, gene_sets)
if "expression" not in params.features:
    keep = [not name.startswith("cell:") for name in names]
    features, names = features[:, keep], [name for name, kept in zip(names, keep) if kept]
print(f"{features.shape[1]} features per gene ({sum(n.startswith('cell:') for n in names)} cells, "
      f"{sum(n.startswith('set:') for n in names)} gene sets)")

# %% [markdown]
# ## Labels of the latent classifier
#
# Clusters (complete linkage) of the impactful genes' mean image embeddings: from the k-fold CNN of
# stage 03 for the model on all genes, from each target's LOTO CNN (stage 04) for its own model.

# %%
image = ad.read_h5ad(layout.stage_dir_of("embeddings") / "gene_embeddings.h5ad")
image_embeddings = pd.DataFrame(np.asarray(image.X), index=image.obs_names.astype(str))
loto_image = ad.read_h5ad(layout.stage_dir_of("loto") / "gene_embeddings_loto.h5ad")
tasks = gae_tasks(genes, features, edges, params, out_dir=out / "models", targets=targets,
                  image_embeddings=image_embeddings, loto_embeddings=loto_image)
labels_all = tasks[0].labels
if labels_all is not None:
    labelled = pd.Series(labels_all, index=genes)
    display(labelled[labelled >= 0].rename("image cluster").to_frame().T)
print(f"{len(tasks)} models: all genes, {sum(t.kind == 'replicate' for t in tasks)} other edge splits, "
      f"{sum(t.kind == 'loto' for t in tasks)} held-out targets")

# %% [markdown]
# ## Training
#
# Adam on the whole graph per epoch, fresh negative pairs every epoch, early stopping on the
# validation loss (the best weights kept). Link prediction is scored on the test edges, never seen
# by the encoder during training.

# %%
metrics = pd.DataFrame(run_tasks(run_gae_task, tasks, params.execution, desc="GAE"))
with atomic_path(out / "metrics.parquet") as tmp:
    metrics.to_parquet(tmp)
display(metrics.drop(columns=["held_out"]).round(3).head(12))
history = read_task_history(tasks[0])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(history["epoch"], history["train_loss"], label="train")
axes[0].plot(history["epoch"], history["val_loss"], label="validation")
axes[0].axvline(metrics.loc[0, "best_epoch"], color="#8e44ad", ls="--", lw=1, label="best epoch")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("loss")
axes[0].legend(frameon=False, fontsize=8)
axes[1].plot(history["epoch"], history["val_auc"], color="#2c3e50")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("validation link AUC")
fig.suptitle("model on all genes", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Link prediction on held-out edges
#
# The test edges of a split are a few dozen on a small interactome, so the AUC of one split is
# noisy: the model on all genes is also trained on other random splits, and every LOTO model is
# scored on the same split as the model on all genes.

# %%
by_kind = metrics.assign(kind=metrics["kind"].replace({"replicate": "all"}))
splits = by_kind[by_kind["kind"] == "all"]
link = {"test_auc": float(metrics.loc[0, "test_auc"]), "test_ap": float(metrics.loc[0, "test_ap"]),
        "test_auc_over_splits_mean": float(splits["test_auc"].mean()),
        "test_auc_over_splits_sd": float(splits["test_auc"].std(ddof=0)),
        "test_auc_over_splits_min": float(splits["test_auc"].min()), "splits": int(len(splits))}
if (metrics["kind"] == "loto").any():
    link["loto_test_auc_mean"] = float(metrics.loc[metrics["kind"] == "loto", "test_auc"].mean())
print(f"model on all genes: test AUC {link['test_auc']:.3f}, AP {link['test_ap']:.3f}; over {len(splits)} edge "
      f"splits AUC {link['test_auc_over_splits_mean']:.3f} ± {link['test_auc_over_splits_sd']:.3f} "
      f"(min {link['test_auc_over_splits_min']:.3f})")
fig, ax = plt.subplots(figsize=(5, 3))
groups = [g["test_auc"].to_numpy() for _, g in by_kind.groupby("kind", sort=True)]
ax.boxplot(groups, tick_labels=sorted(by_kind["kind"].unique()))
for k, values in enumerate(groups, start=1):
    ax.scatter(np.full(len(values), k) + np.random.default_rng(k).uniform(-0.08, 0.08, len(values)), values, s=12,
               color="#2c3e50", zorder=3)
ax.axhline(0.5, color="k", lw=0.6, ls=":")
ax.set_ylabel("test link AUC")
ax.set_xticks([1, 2][:len(groups)], ["all genes (edge splits)", "LOTO models"][:len(groups)])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The embeddings
#
# `regulatory_embeddings.h5ad`: the model on all genes (one row per interactome gene);
# `regulatory_embeddings_loto.h5ad`: one block per held-out target (`model`, `gene`, `is_target`);
# without image labels also `regulatory_embeddings_replicates.h5ad`: the model on all genes and its
# replicate splits (`model`, `gene`), each a valid LOTO model since none saw an image. They are the raw
# codes; stage 07 normalises them to unit length, as the reference did.

# %%
obs = nodes[["is_target", "cluster"]].rename(columns={"cluster": "interactome_cluster"})
if labels_all is not None:
    obs["image_cluster"] = labels_all
embeddings = ad.AnnData(read_task_embeddings(tasks[0]), obs=obs.rename_axis(None))
with atomic_path(out / "regulatory_embeddings.h5ad") as tmp:
    embeddings.write_h5ad(tmp)
loto = loto_embeddings_table(tasks, genes, targets)
if loto is not None:
    with atomic_path(out / "regulatory_embeddings_loto.h5ad") as tmp:
        loto.write_h5ad(tmp)
    how = ("its own LOTO model" if any(task.kind == "loto" for task in tasks)
           else "the model on all genes, which learns no image labels and so never sees a target")
    print(f"{loto.obs['model'].nunique()} held-out targets × {len(genes)} genes, each from {how}")
replicates = replicate_embeddings_table(tasks, genes)
if replicates is not None:  # leak-free for LOTO: stage 07 translates with each of them too
    with atomic_path(out / "regulatory_embeddings_replicates.h5ad") as tmp:
        replicates.write_h5ad(tmp)
unit = normalize(embeddings.X)
coordinates = umap.UMAP(n_neighbors=min(params.umap_neighbors, len(genes) - 1), metric="cosine",
                        random_state=ctx.seed).fit_transform(unit)
plotting.embedding_scatter(coordinates, nodes["cluster"].astype(str).rename("interactome cluster"),
                           "UMAP of the regulatory embeddings: Louvain cluster of the interactome",
                           names=[g if t else "" for g, t in zip(genes, nodes["is_target"])])
plt.show()
if labels_all is not None:
    plotting.embedding_scatter(coordinates, pd.Series(np.where(labels_all >= 0, labels_all.astype(str), "none")),
                               "… image cluster of the impactful targets (the classifier's labels; other genes: none)")
    plt.show()

# %% [markdown]
# ## Structure of the embeddings
#
# The embeddings clustered by cosine distance (complete linkage, as the reference did for its
# figures), compared with the interactome's Louvain clusters and, on synthetic data, with the true
# regulatory modules (normalised mutual information against 1,000 permutations).

# %%
k = min(params.n_embedding_clusters, len(genes) - 1)
clusters = pd.Series(AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="complete").fit_predict(unit),
                     index=genes)
embeddings.obs["embedding_cluster"] = clusters.to_numpy()
with atomic_path(out / "regulatory_embeddings.h5ad") as tmp:
    embeddings.write_h5ad(tmp)
comparisons = {"interactome clusters": nodes["cluster"]}
if truth is not None:
    comparisons["true modules"] = truth["module"]
    plotting.embedding_scatter(coordinates, truth["module"].reindex(genes).astype(str).rename("true module"),
                               "… true module (synthetic ground truth)")
    plt.show()
recovery = {}
for label, reference in comparisons.items():
    table = module_recovery(clusters, reference, edge_table, seed=ctx.seed)
    recovery[label] = table.loc["nmi"].to_dict()
recovery = pd.DataFrame(recovery).T
display(recovery.round(4))
summary = {"n_genes": len(genes), "n_features": int(features.shape[1]), "models": len(tasks), **link,
           "embedding_clusters_nmi": recovery["observed"].to_dict()}
write_text_atomic(out / "summary.json", pd.Series(summary).to_json(indent=2) + "\n")
