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

# %%
import anndata as ad
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from image2reg.data.cellpainting import GallerySource, download, plan_downloads
from image2reg.data.cellpainting import read_image_table, write_image_table
from image2reg.data.folder import link_inputs, read_folder_screen
from image2reg.config import params_relative
from image2reg.data.metadata import (check_gene_list, condition_counts, inventory, overlap_table, read_gene_list,
                                     read_gene_table, read_rohban_metadata)
from image2reg.data.raw import check_raw_inputs, raise_for_missing
from image2reg.data.overview import montage_conditions, montage_fields, module_correlation
from image2reg.data.synthetic import CONTROL, read_world_info, synthesize_world
from image2reg.images.qc import outlier_fields
from image2reg.layout import RunLayout
from image2reg.notebook import reference_gene_lists, setup_stage
from image2reg import plotting

ctx = setup_stage("data", dataset, params_path, fold, runs_dir, reports_dir)
data_params = ctx.stage_params
raw = ctx.layout.raw
print(f"dataset {dataset!r}, source {data_params.source!r}, raw folder {raw.root}")

# %% [markdown]
# ## Raw inputs

# %%
if data_params.source == "synthetic":
    synthesize_world(data_params.synthetic, raw, seed=ctx.seed)
    source = "synthetic"
elif data_params.source == "folder":  # checked whole before anything is written
    source = "folder"
    screen = read_folder_screen(data_params.folder, params_relative(ctx.params, "."), folds=ctx.params.folds)
    links = link_inputs(data_params.folder, params_relative(ctx.params, "."), raw)
    write_image_table(screen, raw)
    print(f"{len(screen)} fields from {data_params.folder.metadata}; linked: {', '.join(links) or 'nothing'}")
else:
    source = data_params.source
    fetch = data_params.download
    if fetch is not None:
        subset = {key: value for key, value in
                  {"plates": fetch.plates, "genes": fetch.genes, "max_fields": fetch.max_fields}.items() if value}
        fields = (read_rohban_metadata(params_relative(ctx.params, fetch.metadata))
                  if source == "rohban" and fetch.metadata else None)
        plan = plan_downloads(source, raw, subset=subset, source=GallerySource(endpoint_url=fetch.endpoint_url),
                              fields=fields)
        print(plan.summary())
        download(plan, workers=fetch.workers)
inputs = check_raw_inputs(raw, source, stages=ctx.params.stage_names())
display(inputs)
raise_for_missing(inputs, raw, source)

# %% [markdown]
# ## The screen: what the metadata holds
#
# Fields, plates, conditions, controls, well roles and published QC flags of the image table, the
# fields the outlier lists of the images params leave out, and, where there is one, the screen's gene
# list (`genesets/screen_genes.txt`), each of whose genes must be a condition of the screen: stage 02
# screens exactly these genes.

# %%
images = read_image_table(raw)
images_params = ctx.params.stages.images
outliers = (outlier_fields(images, images_params.qc.outlier_plates, images_params.qc.outlier_wells)
            if images_params is not None else None)
if raw.screen_genes.is_file():
    listed = check_gene_list(read_gene_list(raw.screen_genes), images["Metadata_Gene"], raw.screen_genes)
    print(f"{raw.screen_genes.name}: {len(listed)} genes to screen, all in the metadata")
display(inventory(images, outliers=outliers).set_index("what"))
per_condition = condition_counts(images)
display(per_condition.head(12))

# %% [markdown]
# How many genes of reference lists the screen holds: the lists named in the params
# (`reference_genes`), and for a validation screen (JUMP) the reference run's impactful and interactome
# genes, once that run has them.

# %%
lists = {name: read_gene_table(params_relative(ctx.params, path)) for name, path in data_params.reference_genes.items()}
validation = ctx.params.stages.validation
if validation is not None and validation.reference is not None:
    lists |= reference_gene_lists(RunLayout(validation.reference, ctx.layout.runs_dir, ctx.layout.reports_dir))
if lists:
    display(overlap_table(images["Metadata_Gene"], lists))

# %% [markdown]
# ## Ground truth of the synthetic world
#
# What each later stage should recover: the effect classes and sizes (stage 02 ranks genes by
# specificity), the phenotype directions that follow the gene's module (stages 03–04), and the
# module structure of the interactome and expression data (stages 05–06).

# %%
world = read_world_info(raw)
if world is not None:
    metadata = pd.read_csv(raw.image_metadata)  # the synthetic world's own Image_Metadata_* table
    display(pd.Series(world["summary"], name="synthetic world", dtype=object).to_frame())
    genes = pd.read_parquet(raw.truth_genes)
    ppi = pd.read_parquet(raw.truth_ppi)
    plotting.effect_sizes(genes)
    plt.show()

# %% [markdown]
# A montage of fields for the control, the three strongest genes, two weak and two no-effect ones
# (in-focus fields only; one display range for all panels, so brightness is comparable).

# %%
if world is not None:
    picks = montage_conditions(genes, CONTROL)
    crop = min(192, data_params.synthetic.screen.field_size)
    plotting.field_montage(montage_fields(raw, metadata, picks, n_fields=4, crop=crop), picks, n_fields=4, crop=crop)
    plt.show()

# %% [markdown]
# The omics carry the module structure: confident interactions fall inside modules, genes of a module
# are correlated across single cells, and the target cell line deregulates the modules the screen hits.

# %%
if world is not None:
    rho, modules = module_correlation(ad.read_h5ad(raw.file("scrnaseq")), genes)
    plotting.world_overview(genes, ppi, rho, modules)
    plt.show()
