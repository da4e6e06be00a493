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

# %%
import matplotlib.pyplot as plt
import pandas as pd
import tifffile
from IPython.display import display

from image2reg import plotting
from image2reg.data.cellpainting import read_image_table
from image2reg.images import store
from image2reg.images.illumination import read_illumination_function
from image2reg.images.io import read_field
from image2reg.images.pipeline import (corrected_field, evaluate_segmentation, field_inputs,
                                       illumination_table, overall_f1, prepare_illumination,
                                       preprocess_images, segmenter)
from image2reg.notebook import setup_stage

ctx = setup_stage("images", dataset, params_path, fold, runs_dir, reports_dir)
params = ctx.stage_params
raw, out = ctx.layout.raw, ctx.out_dir
images = read_image_table(raw)
fields = field_inputs(images, raw, supplied_masks=params.segmentation.method == "masks")
print(f"{len(fields)} fields of view, {fields['Metadata_Gene'].nunique()} conditions, "
      f"{fields['Metadata_Plate'].nunique()} plates; segmentation: {params.segmentation.method}")

# %%
summary = preprocess_images(fields, out, params)
display(pd.Series(summary, name="stage 01", dtype=object).to_frame())

# %% [markdown]
# ## Field quality control
#
# Blur is CellProfiler's PowerLogLogSlope (steeper = blurrier), flagged per plate below the median
# minus k·MAD; saturation is the fraction of pixels at the camera's maximum. Flagged fields keep
# their nuclei in the tables with `QC_pass = False`.

# %%
qc = pd.read_parquet(out / "images.parquet")
plotting.qc_overview(qc)
plt.show()
flagged = qc[~qc["QC_pass"] | (qc["error"] != "")]
display(flagged[["Metadata_Plate", "Metadata_Well", "Metadata_Site", "power_log_log_slope", "saturated_fraction",
                 "QC_blurry", "QC_saturated", "error"]].head(20))

# %% [markdown]
# Where the truth is known (the synthetic world), the flags are compared with it.

# %%
truth_flags = {"QC_blurry": "Image_Metadata_QCFlag_isBlurry", "QC_saturated": "Image_Metadata_QCFlag_isSaturated"}
if (raw.truth / "world.json").is_file():
    truth = pd.read_csv(raw.image_metadata).rename(columns={"Image_FileName_OrigHoechst": "Metadata_FileName"})
    merged = qc.assign(Metadata_FileName=qc["image_path"].map(lambda p: p.rsplit("/", 1)[-1])).merge(
        truth[["Metadata_FileName", *truth_flags.values()]], on="Metadata_FileName")
    display(pd.DataFrame({flag: {"true fields": int(merged[column].sum()),
                                 "flagged": int(merged[flag].sum()),
                                 "flagged and true": int((merged[flag] & (merged[column] == 1)).sum())}
                          for flag, column in truth_flags.items()}))

# %% [markdown]
# ## Illumination functions

# %%
plates = sorted(fields["Metadata_Plate"].astype(str).unique())
used = prepare_illumination(fields, out, params, progress_bar=False)  # what stage 01 corrected with
functions = {plate: read_illumination_function(path) for plate, path in used.items() if path is not None}
display(illumination_table(used, out))
known = {plate: tifffile.imread(raw.truth / "illumination" / f"{plate}.tif") for plate in functions
         if (raw.truth / "illumination" / f"{plate}.tif").is_file()}
if functions:
    plotting.illumination_functions(functions, known or None)
    plt.show()

# %% [markdown]
# ## Segmentation
#
# Example fields with the segmentation outlined (yellow; the ground truth in cyan when known).

# %%
segment = segmenter(params)
passing = qc[qc["QC_pass"]].sample(min(3, int(qc["QC_pass"].sum())), random_state=ctx.seed)
views, labels, masks = [], [], []
for row in passing.itertuples():
    image = read_field(row.image_path)
    corrected = corrected_field(image, functions.get(str(row.Metadata_Plate)))
    mask_path = fields.set_index("image_path").get("mask_path", pd.Series(dtype=str)).get(row.image_path)
    views.append(corrected)
    labels.append(segment(corrected, mask_path))
    truth_mask = raw.masks / str(row.Metadata_Plate) / row.image_path.rsplit("/", 1)[-1]
    masks.append(tifffile.imread(truth_mask) if truth_mask.is_file() else None)
plotting.segmentation_overlays(views, labels, [f"{r.Metadata_Gene} {r.Metadata_Well} s{r.Metadata_Site}"
                                               for r in passing.itertuples()],
                               truth=masks if all(m is not None for m in masks) else None)
plt.show()

# %% [markdown]
# Against ground-truth masks (synthetic world; real datasets have none): F1 of object matching at
# IoU ≥ 0.5 over up to 150 random QC-passing fields.

# %%
if (raw.truth / "world.json").is_file() and params.segmentation.method != "masks":
    scored = qc[qc["QC_pass"]].sample(min(150, int(qc["QC_pass"].sum())), random_state=ctx.seed)
    truth_paths = [raw.masks / str(p) / f.rsplit("/", 1)[-1] for p, f in zip(scored["Metadata_Plate"], scored["image_path"])]
    scores = evaluate_segmentation(scored, truth_paths, used, params)
    print(f"segmentation F1 at IoU 0.5 over {len(scores)} fields: {overall_f1(scores):.3f} "
          f"(precision {scores['tp'].sum() / max(scores['tp'].sum() + scores['fp'].sum(), 1):.3f}, "
          f"recall {scores['tp'].sum() / max(scores['tp'].sum() + scores['fn'].sum(), 1):.3f}, "
          f"mean matched IoU {scores['mean_iou'].mean():.3f})")

# %% [markdown]
# ## Nuclei: filters, counts and crops

# %%
nuclei = pd.read_parquet(out / "nuclei.parquet")
dropped = pd.read_parquet(out / "nuclei_dropped.parquet")
plotting.filter_distributions(nuclei, dropped, params.filters.model_dump())
plt.show()

# %%
plotting.nuclei_per_condition(nuclei)
plt.show()

# %%
crops = store.open_crops(out)
conditions = nuclei["Metadata_Gene"].value_counts().index[:12].tolist()
plotting.crop_montage(crops, nuclei[nuclei["QC_pass"]], conditions, n=12, seed=ctx.seed)
plt.show()
print(f"{crops.shape[0]} crops of {crops.shape[1]}×{crops.shape[2]} in {out / store.CROPS} (chunks {crops.chunks})")
