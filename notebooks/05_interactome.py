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
work_dir = None

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from image2reg import plotting
from image2reg.data.network_inputs import load_inputs
from image2reg.layout import write_parquet, write_summary
from image2reg.network import report
from image2reg.network.enrichment import enrichment
from image2reg.network.inference import module_recovery
from image2reg.network.pruning import universe_edges
from image2reg.notebook import ground_truth, impactful_genes, setup_stage

ctx = setup_stage("interactome", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
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
pruned = report.prune_network(network, targets, scan_step=params.confidence_scan_step,
                              confidence_cutoff=params.confidence_cutoff, hub_quantiles=params.hub_scan,
                              hub_quantile=params.hub_quantile)
plotting.pruning_scans(pruned.confidence_scan, pruned.hub_scan, params.confidence_cutoff, params.hub_quantile,
                       len(targets))
plt.show()
print(f"after pruning: {pruned.summary['n_nodes']:,} genes, {pruned.summary['n_edges']:,} edges (mean degree "
      f"{pruned.summary['mean_degree']:.1f}), {pruned.summary['targets_covered']} of {len(targets)} targets; "
      f"hubs removed: {', '.join(pruned.hubs) if pruned.hubs else 'none'}")

# %% [markdown]
# ## Edge costs and node prizes

# %%
pcst = report.pcst_inputs(pruned.edges, inputs, targets, params.edge_cost)
plotting.costs_and_prizes(pcst.costs, pcst.prizes, pcst.targets, params.edge_cost)
plt.show()

# %% [markdown]
# ## Prize-collecting Steiner tree: the β sweep
#
# β scales the min–max scaled prizes against the edge costs: small β gives small trees. The
# reference keeps the smallest β whose solution covers the most targets.

# %%
selection = report.select_solution(pcst, params.beta_values(), params.beta, seed=ctx.seed,
                                   execution=params.execution, progress_bar=True)
write_parquet(selection.sweep, ctx.layout.artifact("interactome", "beta_sweep"))
plotting.beta_sweep(selection.sweep, selection.beta, len(pcst.targets))
plt.show()
display(selection.sweep.set_index("beta").loc[[selection.beta]])

# %% [markdown]
# ## The interactome
#
# Nodes: the selected genes with their prize, Louvain cluster and robustness (how often a gene is
# selected again when the edge costs are perturbed by noise); edges: every PPI edge among them
# (`in_tree` marks the Steiner tree's). Saved as GraphML for Cytoscape and as parquet tables.

# %%
interactome = report.interactome_tables(pcst, selection.solution, inputs.markers["log_fc"], targets, seed=ctx.seed,
                                        robustness_repeats=params.robustness_repeats,
                                        robustness_noise=params.robustness_noise, execution=params.execution)
nodes, edge_table = interactome.nodes, interactome.edges
report.save_interactome(out, interactome)
covered, missing = interactome.coverage(targets)
print(f"interactome: {len(nodes)} genes, {len(edge_table)} edges ({interactome.n_tree_edges} in the tree), "
      f"{interactome.n_clusters} Louvain clusters; {len(covered)} of {len(targets)} impactful genes "
      f"(missing: {', '.join(missing) if missing else 'none'})")
plotting.interactome_drawing(nodes, edge_table, "cluster", size="prize", seed=ctx.seed)
plt.show()
if "robustness" in nodes:
    plotting.robustness_histogram(nodes["robustness"], params.robustness_noise, params.robustness_repeats)
    plt.show()
    display(nodes.sort_values("robustness").head(10))

# %% [markdown]
# ## Does the interactome follow the true regulatory modules?
#
# Only for the synthetic world, whose genes belong to hidden regulatory modules: the Louvain clusters
# against the modules (normalised mutual information, adjusted Rand index) and the share of edges
# within a module, each against 1,000 permutations of the modules over the interactome's genes.

# %%
recovery = None
if truth is not None:
    recovery = module_recovery(interactome.clusters, truth["module"], edge_table, seed=ctx.seed)
    display(recovery.round(4))
    plotting.interactome_by_module(nodes, edge_table, truth["module"], seed=ctx.seed)
    plt.show()

# %% [markdown]
# ## Gene-set enrichment
#
# Over-representation of each gene set among the interactome's genes, against the genes the PCST
# could choose from (hypergeometric test, Benjamini–Hochberg FDR).

# %%
enriched = enrichment(interactome.genes, inputs.gene_sets, pcst.genes, min_size=3)
write_parquet(enriched, ctx.layout.artifact("interactome", "enrichment"))
summary = report.interactome_summary(interactome, selection.beta, targets, pruned.hubs, enriched,
                                     params.enrichment_fdr, recovery)
print(f"{summary['enriched_gene_sets']} of {len(enriched)} gene sets enriched at FDR < {params.enrichment_fdr}")
display(enriched.head(15).round(4))
write_summary(summary, ctx.layout.artifact("interactome", "summary"))
