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
# # 00 · Data
#
# The raw inputs of a run, in `runs/<dataset>/raw/`:
#
# - **demo / smoke**: a synthetic perturbation screen with known ground truth is generated
#   (`image2reg.data.synthetic`): gene modules with hidden latent programs, an interactome, single-cell
#   and bulk expression, gene sets, and 16-bit fields of view of nuclei whose morphology follows the
#   perturbed gene's program.
# - **rohban / jump**: the DNA images (and published illumination functions) are fetched from the Cell
#   Painting Gallery when the params have a `download` block (resumable: finished files are skipped),
#   then every expected raw input is checked, and anything missing is listed with its source.
# - **folder**: a lab's own screen: the metadata table and every image it names are checked first
#   (columns, files, duplicates, controls, fields per gene), then the image table is written and the
#   optional inputs (interactome, expression, gene sets, gene list) are linked into `raw/`.

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
from IPython.display import display

from image2reg import plotting
from image2reg.config import params_relative
from image2reg.data.cellpainting import download, read_image_table
from image2reg.data.overview import condition_montage, module_correlation
from image2reg.data.raw import check_raw_inputs, raise_for_missing
from image2reg.data.report import (
    gallery_download_plan,
    read_world_truth,
    reference_overlap,
    screen_overview,
    take_in_folder_screen,
)
from image2reg.data.synthetic import CONTROL, synthesize_world
from image2reg.notebook import setup_stage

ctx = setup_stage("data", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
data_params = ctx.stage_params
raw = ctx.layout.raw
print(f"dataset {dataset!r}, source {data_params.source!r}, raw folder {raw.root}")

# %% [markdown]
# ## Raw inputs

# %%
if data_params.source == "synthetic":
    synthesize_world(data_params.synthetic, raw, seed=ctx.seed)
elif data_params.source == "folder":  # checked whole before anything is written
    screen, links = take_in_folder_screen(data_params.folder, params_relative(ctx.params, "."), raw,
                                          folds=ctx.params.folds)
    print(f"{len(screen)} fields from {data_params.folder.metadata}; linked: {', '.join(links) or 'nothing'}")
elif data_params.download is not None:
    plan = gallery_download_plan(data_params.source, data_params.download, raw, params_relative(ctx.params, "."))
    print(plan.summary())
    download(plan, workers=data_params.download.workers)
inputs = check_raw_inputs(raw, data_params.source, stages=ctx.params.stage_names())
display(inputs)
raise_for_missing(inputs, raw, data_params.source)

# %% [markdown]
# ## The screen: what the metadata holds
#
# Fields, plates, conditions, controls, well roles and published QC flags of the image table, the
# fields the outlier lists of the images params leave out, and, where there is one, the screen's gene
# list (`genesets/screen_genes.txt`), each of whose genes must be a condition of the screen: stage 02
# screens exactly these genes.

# %%
images = read_image_table(raw)
overview = screen_overview(images, raw, ctx.params.stages.images)
if overview.screen_genes is not None:
    print(f"{raw.screen_genes.name}: {len(overview.screen_genes)} genes to screen, all in the metadata")
display(overview.inventory)
display(overview.per_condition.head(12))

# %% [markdown]
# How many genes of reference lists the screen holds: the lists named in the params
# (`reference_genes`), and for a validation screen (JUMP) the reference run's impactful and interactome
# genes, once that run has them.

# %%
overlap = reference_overlap(images["Metadata_Gene"], ctx.params, ctx.layout)
if overlap is not None:
    display(overlap)

# %% [markdown]
# ## Ground truth of the synthetic world
#
# What each later stage should recover: the effect classes and sizes (stage 02 ranks genes by
# specificity), the phenotype directions that follow the gene's module (stages 03–04), and the
# module structure of the interactome and expression data (stages 05–06).

# %%
world = read_world_truth(raw)
if world is not None:
    display(world.summary_table())
    plotting.effect_sizes(world.genes)
    plt.show()

# %% [markdown]
# A montage of fields for the control, the three strongest genes, two weak and two no-effect ones
# (in-focus fields only; one display range for all panels, so brightness is comparable).

# %%
if world is not None:
    montage = condition_montage(raw, world.metadata, world.genes, CONTROL, data_params.synthetic.screen.field_size)
    plotting.field_montage(montage.panels, montage.conditions, n_fields=montage.n_fields, crop=montage.crop)
    plt.show()

# %% [markdown]
# The omics carry the module structure: confident interactions fall inside modules, genes of a module
# are correlated across single cells, and the target cell line deregulates the modules the screen hits.

# %%
if world is not None:
    rho, modules = module_correlation(ad.read_h5ad(raw.file("scrnaseq")), world.genes)
    plotting.world_overview(world.genes, world.ppi, rho, modules)
    plt.show()
