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
# # 01 · Image preprocessing
#
# From fields of view to single-nucleus crops (reference §3): per-plate illumination correction,
# field QC (blur, saturation, listed outlier plates and wells), nuclear segmentation, the reference's
# nucleus filters, and masked 64×64 crops, stored in one chunked zarr array with a nucleus table.
# Work is spread over processes in shards of fields; a killed run resumes where it stopped.

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
from image2reg.data.cellpainting import read_image_table
from image2reg.images import store
from image2reg.images.pipeline import field_inputs, preprocess_images
from image2reg.images.report import (
    bad_fields,
    field_counts,
    flagged_fields,
    flags_against_truth,
    illumination_overview,
    images_summary,
    largest_conditions,
    score_segmentation,
    segmentation_examples,
)
from image2reg.layout import write_summary
from image2reg.notebook import setup_stage

ctx = setup_stage("images", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params = ctx.stage_params
raw, out = ctx.layout.raw, ctx.out_dir
images = read_image_table(raw)
fields = field_inputs(images, raw, supplied_masks=params.segmentation.method == "masks")
counts = field_counts(fields)
print(f"{counts['fields']} fields of view, {counts['conditions']} conditions, "
      f"{counts['plates']} plates; segmentation: {params.segmentation.method}")

# %%
summary = preprocess_images(fields, out, params, portable_within=ctx.layout.root)
display(pd.Series(summary, name="stage 01", dtype=object).to_frame())

# %% [markdown]
# ## Field quality control
#
# Blur is CellProfiler's PowerLogLogSlope (steeper = blurrier), flagged per plate below the median
# minus k·MAD; saturation is the fraction of pixels at the camera's maximum. Flagged fields keep
# their nuclei in the tables with `QC_pass = False`.

# %%
qc = pd.read_parquet(ctx.layout.artifact("images", "images"))
plotting.qc_overview(qc)
plt.show()
display(flagged_fields(qc, n=20))

# %% [markdown]
# ## Bad files
#
# Fields that could not be read (missing, truncated, corrupt), whose shape differs from the other fields
# of their plate, or that failed later. Each was named in the log and skipped, by every step that reads
# fields; more than `max_bad_fraction` of them would have stopped the stage, naming the files.

# %%
bad = bad_fields(qc)
print(f"{len(bad)} of {len(qc)} fields skipped as bad (the stage stops above a share of "
      f"{params.max_bad_fraction:g})")
if len(bad):
    display(bad)

# %% [markdown]
# Where the truth is known (the synthetic world), the flags are compared with it.

# %%
against_truth = flags_against_truth(qc, raw)
if against_truth is not None:
    display(against_truth)

# %% [markdown]
# ## Illumination functions

# %%
illumination = illumination_overview(fields, out, params, raw)  # what stage 01 corrected with
display(illumination.table)
if illumination.functions:
    plotting.illumination_functions(illumination.functions, illumination.truth)
    plt.show()

# %% [markdown]
# ## Segmentation
#
# Example fields with the segmentation outlined (yellow; the ground truth in cyan when known).

# %%
examples = segmentation_examples(qc, fields, illumination.functions, params, raw, seed=ctx.seed, n=3,
                                 folder=out)
plotting.segmentation_overlays(examples.images, examples.labels, examples.titles, truth=examples.truth)
plt.show()

# %% [markdown]
# Against ground-truth masks (synthetic world; real datasets have none): F1 of object matching at
# IoU ≥ 0.5 over up to 150 random QC-passing fields.

# %%
segmentation = score_segmentation(qc, raw, illumination.files, params, seed=ctx.seed, n=150, folder=out)
if segmentation is not None:
    print(f"segmentation F1 at IoU 0.5 over {len(segmentation.scores)} fields: {segmentation.f1:.3f} "
          f"(precision {segmentation.precision:.3f}, recall {segmentation.recall:.3f}, "
          f"mean matched IoU {segmentation.mean_iou:.3f})")
write_summary(images_summary(summary, segmentation), ctx.layout.artifact("images", "summary"))

# %% [markdown]
# ## Nuclei: filters, counts and crops

# %%
nuclei = pd.read_parquet(ctx.layout.artifact("images", "nuclei"))
dropped = pd.read_parquet(ctx.layout.artifact("images", "nuclei_dropped"))
plotting.filter_distributions(nuclei, dropped, params.filters.model_dump())
plt.show()

# %%
plotting.nuclei_per_condition(nuclei)
plt.show()

# %%
crops = store.open_crops(out)
plotting.crop_montage(crops, nuclei[nuclei["QC_pass"]], largest_conditions(nuclei, n=12), n=12, seed=ctx.seed)
plt.show()
print(f"{crops.shape[0]} crops of {crops.shape[1]}×{crops.shape[2]} in {ctx.layout.artifact('images', 'crops')} "
      f"(chunks {crops.chunks})")
