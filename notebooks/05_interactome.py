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
# # 05 · The gene–gene interactome
#
# The translation of stage 07 maps image embeddings onto genes of a regulatory network; this stage
# infers that network (method §5). The protein–protein interactions (PPI) are restricted to genes
# measured in single cells and in bulk, pruned of low-confidence edges and of hub proteins, and
# weighted: an edge costs `1 − |Spearman ρ|` of its two genes' expression over single cells, and a
# gene's prize is how deregulated it is in the screen's cell line (`|logFC|` against other lines),
# the impactful genes of the screen getting the top prize. A prize-collecting Steiner tree (PCST)
# then picks a compact subnetwork that connects the impactful genes through cheap, co-expressed
# edges; the interactome is that tree plus every PPI edge among its genes.

# %% tags=["parameters"]
dataset = "demo"
params_path = None
fold = None
runs_dir = None
reports_dir = None

# %%
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from IPython.display import display

from image2reg import plotting
from image2reg.data import expression
from image2reg.network import pruning
from image2reg.network.enrichment import enrichment
from image2reg.data.network_inputs import load_inputs
from image2reg.network.inference import IndexedNetwork, module_recovery
from image2reg.network.pruning import universe_edges, universe_genes
from image2reg.network.io import write_interactome
from image2reg.network.pcst import beta_sweep, node_prizes, robustness, select_beta, spearman_edge_costs
from image2reg.layout import write_text_atomic
from image2reg.notebook import ground_truth, impactful_genes, setup_stage

ctx = setup_stage("interactome", dataset, params_path, fold, runs_dir, reports_dir)
params, out, raw = ctx.stage_params, ctx.out_dir, ctx.layout.raw
targets, truth = impactful_genes(ctx.layout), ground_truth(ctx.layout)
print(f"{len(targets)} impactful genes from the screen")

# %% [markdown]
# ## Inputs and the gene universe
#
# The universe is the PPI's genes that are also in the single-cell data (after the reference's
# filters) and in the bulk expression; the network is the largest connected component on them.

# %%
inputs = load_inputs(raw, ctx.params.stage("data").source, params)
print(f"PPI: {len(inputs.ppi):,} edges; single cells: {inputs.single_cell.n_obs:,} cells × "
      f"{inputs.single_cell.n_vars:,} genes; bulk: {len(inputs.markers):,} genes "
      f"({params.target_line} against the other lines); {len(inputs.gene_sets)} gene sets")
network, steps = universe_edges(inputs.ppi, [inputs.single_cell.var_names, inputs.markers.index], targets)
display(steps)

# %% [markdown]
# ## Confidence and hub pruning
#
# The scans of the reference: for every cut-off, the largest component of the edges cheaper than it;
# for every degree quantile, the network without the nodes at or above it. The chosen values (the
# params' `confidence_cutoff`, `hub_quantile`) are marked.

# %%
step = params.confidence_scan_step
cutoffs = np.round(np.arange(1, int(round(1 / step)) + 1) * step, 10)
confidence = pruning.confidence_scan(network, cutoffs, targets)
if params.confidence_cutoff is not None:
    network = pruning.prune_confidence(network, params.confidence_cutoff)
hub_table = pruning.hub_scan(network, params.hub_scan, targets)
hubs: list[str] = []
if params.hub_quantile is not None:
    network, hubs = pruning.prune_hubs(network, params.hub_quantile, targets)
plotting.pruning_scans(confidence, hub_table, params.confidence_cutoff, params.hub_quantile, len(targets))
plt.show()
pruned = pruning.summarize(network, targets)
print(f"after pruning: {pruned['n_nodes']:,} genes, {pruned['n_edges']:,} edges (mean degree "
      f"{pruned['mean_degree']:.1f}), {pruned['targets_covered']} of {len(targets)} targets; hubs removed: "
      f"{', '.join(hubs) if hubs else 'none'}")

# %% [markdown]
# ## Edge costs and node prizes

# %%
indexed = IndexedNetwork.from_edges(network)
genes = indexed.genes
if params.edge_cost == "spearman":
    costs = spearman_edge_costs(expression.dense_expression(inputs.single_cell[:, genes]), indexed.edges)
else:
    costs = network["cost"].to_numpy()
universe = sorted(universe_genes(inputs.ppi, [inputs.single_cell.var_names, inputs.markers.index]))
prizes = node_prizes(inputs.markers["log_fc"].reindex(genes), [t for t in targets if t in set(genes)],
                     universe_fold_change=inputs.markers["log_fc"].reindex(universe))
prizes = prizes.reindex(genes).to_numpy()
target_index = indexed.indices(targets)
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].hist(costs, bins=40, color="#7f8c8d")
axes[0].set_xlabel(f"edge cost ({params.edge_cost})")
axes[1].hist(prizes, bins=40, color="#2c3e50", label="all genes")
axes[1].hist(prizes[target_index], bins=40, color="#c0392b", label="impactful targets")
axes[1].set_xlabel("prize (|logFC|, targets at the maximum)")
axes[1].legend(frameon=False, fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Prize-collecting Steiner tree: the β sweep
#
# β scales the min–max scaled prizes against the edge costs: small β gives small trees. The
# reference keeps the smallest β whose solution covers the most targets.

# %%
betas = params.beta_values()
sweep, solutions = beta_sweep(indexed.edges, costs, prizes, betas, target_index, seed=ctx.seed,
                              execution=params.execution, progress_bar=True)
beta = params.beta if params.beta is not None else select_beta(sweep)
solution = solutions.get(beta) or beta_sweep(indexed.edges, costs, prizes, [beta], target_index, seed=ctx.seed,
                                             execution=params.execution)[1][beta]
sweep.to_parquet(out / "beta_sweep.parquet")
plotting.beta_sweep(sweep, beta, len(target_index))
plt.show()
display(sweep.set_index("beta").loc[[beta]])

# %% [markdown]
# ## The interactome
#
# Nodes: the selected genes with their prize, Louvain cluster and robustness (how often a gene is
# selected again when the edge costs are perturbed by noise); edges: every PPI edge among them
# (`in_tree` marks the Steiner tree's). Saved as GraphML for Cytoscape and as parquet tables.

# %%
selected = genes[solution.nodes]
edge_table = network.iloc[solution.augmented_edges][["gene1", "gene2"]].reset_index(drop=True)
edge_table["ppi_cost"] = network["cost"].to_numpy()[solution.augmented_edges]
edge_table["cost"] = costs[solution.augmented_edges]
edge_table["in_tree"] = np.isin(solution.augmented_edges, solution.tree_edges)
graph = nx.Graph()
graph.add_nodes_from(selected)
graph.add_edges_from(edge_table[["gene1", "gene2"]].itertuples(index=False))
communities = nx.community.louvain_communities(graph, seed=ctx.seed)
communities = sorted((sorted(c) for c in communities), key=lambda c: (-len(c), c[0]))
cluster = pd.Series({gene: k for k, members in enumerate(communities) for gene in members})
nodes = pd.DataFrame(index=pd.Index(selected, name="gene"))
nodes["prize"] = prizes[solution.nodes]
nodes["log_fc"] = inputs.markers["log_fc"].reindex(selected).to_numpy()
nodes["is_target"] = np.isin(selected, targets)
nodes["cluster"] = cluster.reindex(selected).to_numpy()
nodes["degree"] = pd.Series(dict(graph.degree())).reindex(selected).to_numpy()
if params.robustness_repeats:
    frequency = robustness(indexed.edges, costs, prizes, beta, repeats=params.robustness_repeats,
                           noise=params.robustness_noise, seed=ctx.seed, execution=params.execution)
    nodes["robustness"] = frequency[solution.nodes]
write_interactome(out, nodes, edge_table)
write_text_atomic(out / "interactome_genes.txt", "\n".join(selected) + "\n")
covered = sorted(set(targets) & set(selected))
missing = sorted(set(targets) - set(selected))
print(f"interactome: {len(nodes)} genes, {len(edge_table)} edges ({int(edge_table['in_tree'].sum())} in the tree), "
      f"{len(communities)} Louvain clusters; {len(covered)} of {len(targets)} impactful genes "
      f"(missing: {', '.join(missing) if missing else 'none'})")
plotting.interactome_drawing(nodes, edge_table, "cluster", size="prize", seed=ctx.seed)
plt.show()
if "robustness" in nodes:
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.hist(nodes["robustness"], bins=20, color="#2c3e50")
    ax.set_xlabel(f"selection frequency under {params.robustness_noise:.0%} cost noise "
                  f"({params.robustness_repeats} repeats)")
    ax.set_ylabel("genes")
    fig.tight_layout()
    plt.show()
    display(nodes.sort_values("robustness").head(10))

# %% [markdown]
# ## Does the interactome follow the true regulatory modules?
#
# Only for the synthetic world, whose genes belong to hidden regulatory modules: the Louvain clusters
# against the modules (normalised mutual information, adjusted Rand index) and the share of edges
# within a module, each against 1,000 permutations of the modules over the interactome's genes.

# %%
summary = {"n_genes": len(nodes), "n_edges": len(edge_table), "beta": beta, "n_clusters": len(communities),
           "targets": len(targets), "targets_covered": len(covered), "targets_missing": missing,
           "hubs_removed": hubs}
if truth is not None:
    recovery = module_recovery(cluster, truth["module"], edge_table, seed=ctx.seed)
    display(recovery.round(4))
    summary["module_recovery"] = recovery.to_dict(orient="index")
    plotting.interactome_drawing(nodes.assign(true_module=truth["module"].reindex(selected).to_numpy()),
                                 edge_table, "true_module", seed=ctx.seed, title="coloured by the true module")
    plt.show()

# %% [markdown]
# ## Gene-set enrichment
#
# Over-representation of each gene set among the interactome's genes, against the genes the PCST
# could choose from (hypergeometric test, Benjamini–Hochberg FDR).

# %%
enriched = enrichment(selected, inputs.gene_sets, genes, min_size=3)
enriched.to_parquet(out / "enrichment.parquet")
significant = enriched[enriched["fdr"] < params.enrichment_fdr]
print(f"{len(significant)} of {len(enriched)} gene sets enriched at FDR < {params.enrichment_fdr}")
display(enriched.head(15).round(4))
summary["enriched_gene_sets"] = int(len(significant))
write_text_atomic(out / "summary.json", pd.Series(summary).to_json(indent=2) + "\n")
