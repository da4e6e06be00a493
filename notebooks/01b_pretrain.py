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
# # 01b · Self-supervised pretraining of the nucleus encoder (optional)
#
# The reference starts its CNNs from ImageNet weights. Without them, a small network trained from
# scratch on a few thousand labelled nuclei learns what is easiest to tell apart: size and shape.
# Here the nucleus encoder first learns from **every nucleus of the screen**, labelled or not, with
# a contrastive task (SimCLR-style): two augmented views of each nucleus must find each other among
# the batch. The views differ by a random crop-and-resize, one of the square's eight symmetries and a
# little pixel noise; brightness is never jittered and nothing is blurred, so DNA content and
# chromatin texture stay what tells nuclei apart. The stages whose `model.pretrained` is
# `self_supervised` start from the trunk learnt here.
#
# The report checks what the encoder learnt: how much of each classical feature (shape, intensity,
# texture, radial distribution) a linear read-out of its embeddings explains, against the same
# network with random weights.

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
from image2reg.cnn.pretrain import pretrain_nuclei, write_encoder
from image2reg.cnn.report import pretrain_probe, pretrain_summary, probe_summary
from image2reg.execute import torch_threads
from image2reg.layout import write_parquet, write_summary
from image2reg.notebook import setup_stage

ctx = setup_stage("pretrain", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params = ctx.stage_params
images_dir = ctx.layout.stage_dir_of("images")
print(f"input {params.input_size} px, width {params.width}, {params.epochs} epochs, batch {params.batch_size}")

# %% [markdown]
# ## Contrastive training
#
# A killed run continues from its last finished epoch (`training/checkpoint.pt`).

# %%
with torch_threads(params.torch_threads):
    result = pretrain_nuclei(images_dir, ctx.layout.artifact("pretrain", "training"), params)
write_encoder(result.model, ctx.layout.artifact("pretrain", "encoder"))
print(f"{result.n_nuclei} nuclei, {len(result.history)} epochs in {result.seconds:.0f} s"
      + (" (reused)" if result.reused else ""))
display(result.history.round(4))
plotting.pretraining_history(result.history)
plt.show()

# %% [markdown]
# ## What the encoder sees: linear read-out of classical features
#
# Cross-validated R² (folds grouped by field) of a ridge regression from the embeddings to each
# classical feature of the same nuclei, for the pretrained trunk and for the same trunk with random
# weights (the null). Size and shape are easy for any network; texture and intensity are what the
# pretraining should add.

# %%
with torch_threads(params.torch_threads):
    probe = pretrain_probe(images_dir, result.model.trunk, params, seed=ctx.seed)
write_parquet(probe, ctx.layout.artifact("pretrain", "probe"))
display(probe_summary(probe).round(3))
plotting.probe_bars(probe_summary(probe))
plt.show()

# %%
write_summary(pretrain_summary(result.history, result.n_nuclei, result.seconds, probe),
              ctx.layout.artifact("pretrain", "summary"))
