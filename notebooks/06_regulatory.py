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
work_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.data.network_inputs import load_single_cell, read_gmt
from image2reg.data.raw import raw_input_path
from image2reg.layout import write_h5ad, write_parquet, write_summary
from image2reg.network import regulatory, regulatory_report
from image2reg.notebook import ground_truth, impactful_genes, setup_stage

ctx = setup_stage("regulatory", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params, layout = ctx.stage_params, ctx.layout
nodes = pd.read_parquet(layout.artifact("interactome", "nodes"))
edge_table = pd.read_parquet(layout.artifact("interactome", "edges"))
targets, truth = impactful_genes(layout), ground_truth(layout)
print(f"interactome: {len(nodes)} genes, {len(edge_table)} edges, {int(nodes['is_target'].sum())} of "
      f"{len(targets)} impactful genes")

# %% [markdown]
# ## Node features
#
# The single cells are those of stage 05 (the same filters and normalisation); each cell is min–max
# scaled over the interactome's genes, then the gene-set memberships are appended.

# %%
genes, edges = regulatory_report.graph_arrays(nodes, edge_table)
source = ctx.params.stage("data").source
cells = load_single_cell(layout.raw, source, ctx.params.stage("interactome"))
gene_sets = read_gmt(raw_input_path(layout.raw, source, "genesets")) if "gene_sets" in params.features else None
features = regulatory_report.regulatory_features(cells, genes, gene_sets, params.features)
print(f"{features.values.shape[1]} features per gene ({features.n_cells} cells, {features.n_gene_sets} gene sets)")

# %% [markdown]
# ## Labels of the latent classifier
#
# Clusters (complete linkage) of the impactful genes' mean image embeddings: from the k-fold CNN of
# stage 03 for the model on all genes, from each target's LOTO CNN (stage 04) for its own model.

# %%
image_embeddings, loto_image = regulatory_report.read_image_embeddings(layout)
tasks = regulatory.gae_tasks(genes, features.values, edges, params, out_dir=layout.artifact("regulatory", "models"),
                             targets=targets, image_embeddings=image_embeddings, loto_embeddings=loto_image)
labels_all = tasks[0].labels
if labels_all is not None:
    display(regulatory_report.image_cluster_table(genes, labels_all))
counts = regulatory_report.model_counts(tasks)
print(f"{len(tasks)} models: all genes, {counts['replicate']} other edge splits, {counts['loto']} held-out targets")

# %% [markdown]
# ## Training
#
# Adam on the whole graph per epoch, fresh negative pairs every epoch, early stopping on the
# validation loss (the best weights kept). Link prediction is scored on the test edges, never seen
# by the encoder during training.

# %%
metrics = regulatory_report.train_models(tasks, params.execution)
write_parquet(metrics, layout.artifact("regulatory", "metrics"))
display(metrics.drop(columns=["held_out"]).round(3).head(12))
plotting.gae_history(regulatory.read_task_history(tasks[0]), metrics.loc[0, "best_epoch"])
plt.show()

# %% [markdown]
# ## Link prediction on held-out edges
#
# The test edges of a split are a few dozen on a small interactome, so the AUC of one split is
# noisy: the model on all genes is also trained on other random splits, and every LOTO model is
# scored on the same split as the model on all genes.

# %%
link = regulatory_report.link_prediction_summary(metrics)
print(f"model on all genes: test AUC {link['test_auc']:.3f}, AP {link['test_ap']:.3f}; over {link['splits']} edge "
      f"splits AUC {link['test_auc_over_splits_mean']:.3f} ± {link['test_auc_over_splits_sd']:.3f} "
      f"(min {link['test_auc_over_splits_min']:.3f})")
plotting.link_auc_by_kind(metrics)
plt.show()

# %% [markdown]
# ## The embeddings
#
# `regulatory_embeddings`: the model on all genes (one row per interactome gene);
# `regulatory_embeddings_loto`: one block per held-out target (`model`, `gene`, `is_target`);
# without image labels also `regulatory_embeddings_replicates`: the model on all genes and its
# replicate splits (`model`, `gene`), each a valid LOTO model since none saw an image. They are the raw
# codes; stage 07 normalises them to unit length, as the reference did.

# %%
embeddings = regulatory_report.embedding_table(regulatory.read_task_embeddings(tasks[0]), nodes, labels_all,
                                    params.n_embedding_clusters)
write_h5ad(embeddings, layout.artifact("regulatory", "regulatory_embeddings"))
loto = regulatory.loto_embeddings_table(tasks, genes, targets)
if loto is not None:
    write_h5ad(loto, layout.artifact("regulatory", "regulatory_embeddings_loto"))
    print(regulatory_report.describe_loto_embeddings(tasks, loto))
replicates = regulatory.replicate_embeddings_table(tasks, genes)
if replicates is not None:  # leak-free for LOTO: stage 07 translates with each of them too
    write_h5ad(replicates, layout.artifact("regulatory", "regulatory_embeddings_replicates"))
coordinates = regulatory_report.umap_coordinates(embeddings.X, params.umap_neighbors, ctx.seed)
plotting.regulatory_umaps(coordinates, nodes, labels_all, truth["module"] if truth is not None else None)
plt.show()

# %% [markdown]
# ## Structure of the embeddings
#
# The embeddings clustered by cosine distance (complete linkage, as the reference did for its
# figures; the `embedding_cluster` of `regulatory_embeddings`), compared with the interactome's Louvain
# clusters and, on synthetic data, with the true regulatory modules (normalised mutual information
# against 1,000 permutations).

# %%
recovery = regulatory_report.embedding_cluster_recovery(embeddings, nodes["cluster"], edge_table,
                                             truth["module"] if truth is not None else None, seed=ctx.seed)
display(recovery.round(4))
summary = regulatory_report.regulatory_summary(len(genes), features, len(tasks), link, recovery)
write_summary(summary, layout.artifact("regulatory", "summary"))
