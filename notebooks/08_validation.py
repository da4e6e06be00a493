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
# # 08 · Validation on a second screen: predicting genes nobody trained on
#
# The method's external check (§8, JUMP-CP in the reference). A second screen perturbs the impactful
# genes of the first screen (the *training* genes) and many other interactome genes (the *test* genes).
# A CNN is trained on the second screen's training genes and the control only; it then embeds the
# nuclei of every condition, the test genes included, and the mean per condition is the gene
# perturbation embedding. The translation is fitted on the training genes (image embedding → regulatory
# embedding of the first screen's interactome) and predicts each test gene, whose rank among all
# interactome genes is scored against a random gene, the mean embeddings, and shuffled training pairs.
#
# On the demo, the second screen is synthesized here: the same world's genes, imaged in a new "lab"
# (plates, illumination, well effects and nuclei of its own). On JUMP, it is this dataset's stage-01
# output, and the impactful genes, interactome and regulatory embeddings come from the reference
# dataset (`reference: rohban`).

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
from image2reg.cnn.embed import EmbeddingTask, run_embedding_task
from image2reg.cnn.report import training_history
from image2reg.cnn.splits import min_fields
from image2reg.cnn.tasks import encoder_spec
from image2reg.config import encoder_initialisation
from image2reg.data.synthetic import render_second_screen, second_screen_plan, world_shifts
from image2reg.images.pipeline import illumination_files, prepare_illumination, preprocess_images
from image2reg.layout import RunLayout, artifact_name, write_h5ad, write_parquet, write_summary
from image2reg.notebook import ground_truth, impactful_genes, setup_stage
from image2reg.translation.report import example_targets, model_label, nearest_genes
from image2reg.translation.transfer import (
    permutation_transfer_ranks,
    regulatory_clusters,
    restricted_test,
    transfer_predictions,
)
from image2reg.translation.validation_report import (
    reference_regulatory,
    screen_genes,
    second_screen_embeddings,
    second_screen_genes,
    training_per_cluster,
    transfer_fit_predict,
    transfer_oracle,
    transfer_rank_table,
    transfer_reports,
    validation_summary,
)

ctx = setup_stage("validation", dataset, params_path, fold, runs_dir, reports_dir, work_dir)
params, layout = ctx.stage_params, ctx.layout
print(encoder_initialisation(params.model))
control = ctx.params.stage("screen").control if "screen" in ctx.params.stage_names() else "EMPTY"
reference = layout if params.reference is None else RunLayout(params.reference, layout.runs_dir, layout.reports_dir)
impactful = impactful_genes(reference)
regulatory = reference_regulatory(reference)
interactome = list(regulatory.index)
truth = ground_truth(layout)
print(f"reference: dataset '{reference.dataset}' — {len(impactful)} impactful genes, {len(interactome)} "
      f"interactome genes with regulatory embeddings")

# %% [markdown]
# ## The second screen
#
# Training genes: the impactful genes in the interactome. Test genes: the other interactome genes the
# second screen perturbed. On the demo, their effects follow the world's truth: a gene of the first
# screen keeps its effect, any other gene perturbs the nuclei along the direction its program dictates.

# %%
images_params = ctx.params.stage("images")
if params.second_screen is not None:
    if truth is None:
        raise FileNotFoundError(f"{layout.raw.truth_genes} is missing: the second screen needs the synthetic world "
                                "of stage 00")
    second = params.second_screen
    train_genes, others = second_screen_genes(impactful, interactome, truth, second.max_test_genes, ctx.seed)
    plan = second_screen_plan(train_genes, others, train_wells=second.train_wells, test_wells=second.test_wells,
                              control_wells=second.control_wells, sites_per_well=second.sites_per_well, seed=ctx.seed)
    shifts = world_shifts(truth.reset_index(), train_genes + others, tuple(second.effect), ctx.seed)
    fields = render_second_screen(shifts, plan, ctx.params.stage("data").synthetic.screen,
                                  layout.artifact("validation", "screen"), seed=ctx.seed)
    images_dir = layout.artifact("validation", "images")
    counts = preprocess_images(fields, images_dir, images_params, portable_within=layout.root)
    illumination = prepare_illumination(fields, images_dir, images_params, progress_bar=False)
    print(f"synthesized {len(fields)} fields: {len(train_genes)} training genes × {second.train_wells} wells, "
          f"{len(others)} test genes × {second.test_wells} well(s), {second.control_wells} control wells; "
          f"stage-01 preprocessing kept {counts['nuclei']} nuclei")
    plotting.shift_sizes(shifts, {"training genes": train_genes, "test genes": others})
    plt.show()
else:
    images_dir = layout.stage_dir_of("images")
    illumination = None  # the region branch cuts patches from the fields corrected as in stage 01
    if "region" in params.model.branches:
        illumination = illumination_files(layout.raw, images_dir, images_params)
split = screen_genes(pd.read_parquet(images_dir / artifact_name("images", "nuclei")), impactful, interactome,
                     min_fields(params.n_folds, params.n_inner), control)
train, test = split.train, split.test
print(f"{len(train)} training genes, {len(test)} test genes (interactome genes of the second screen); "
      f"impactful genes with too few fields to train on (< {split.needed}): "
      f"{', '.join(split.short) if split.short else 'none'}")

# %% [markdown]
# ## The CNN of the second screen
#
# The multi-class model of stage 03 (same architecture and training), trained on the training genes and
# the control of the second screen, fold 0 of its folds. Its test nuclei give the training genes'
# embeddings; every nucleus of the test genes is embedded by it without having been seen.

# %%
encoder = encoder_spec(params.model, params.latent_dim, illumination)
task = EmbeddingTask(kind="multiclass", genes=tuple(train), images_dir=str(images_dir),
                     out_dir=str(layout.artifact("validation", "models")), fold=0, seed=ctx.seed, control=control,
                     n_folds=params.n_folds, n_inner=params.n_inner, undersample_control=params.undersample_control,
                     encoder=encoder, training=params.training, torch_threads=params.torch_threads)
metrics = run_embedding_task(task, progress_bar=True)
print(f"{metrics['n_classes']} classes: test balanced accuracy {metrics['test_balanced_accuracy']:.3f} "
      f"(chance {metrics['chance']:.3f}), best epoch {metrics['best_epoch']}")
plotting.training_histories({"second screen": training_history(task.folder)})
plt.show()

embedded = second_screen_embeddings(task, split.usable, test)
image = embedded.image
write_h5ad(embedded.genes, layout.artifact("validation", "gene_embeddings"))
print(f"gene perturbation embeddings: {len(train)} training genes (from {embedded.train_nuclei} test nuclei), "
      f"{len(test)} test genes (from {embedded.test_nuclei} unseen nuclei)")

# %% [markdown]
# ## Translation to the unseen genes
#
# The params' model is fitted on the training genes and predicts every test gene. The headline numbers
# keep the test genes whose regulatory cluster (k-means of the embeddings) holds at least
# `min_train_per_cluster` training genes, as in the reference; all test genes are shown as well.
# p-values: the share of random-gene rankings, and of fits on shuffled training pairs, that score at
# least as high; against the mean baselines, a paired sign-flip test on the same test genes.

# %%
fit_predict = transfer_fit_predict(params, len(train), ctx.seed)
clusters = regulatory_clusters(regulatory, min(params.n_clusters, len(regulatory)), ctx.seed)
kept = restricted_test(clusters, train, test, params.min_train_per_cluster)
n_genes, max_k = len(regulatory), min(params.max_k, len(regulatory))
main = model_label(params.translation, params.reg)
ranks = transfer_rank_table(image, regulatory, train, test, fit_predict, main, clusters, kept)
write_parquet(ranks, layout.artifact("validation", "ranks"))
null = None
if params.permutation_repeats:
    null = permutation_transfer_ranks(image, regulatory, train, test, fit_predict, params.permutation_repeats,
                                      ctx.seed + 1, progress_bar=True)
print(f"training genes per regulatory cluster: {training_per_cluster(clusters, train).to_dict()}; {len(kept)} of "
      f"{len(test)} test genes are in clusters with ≥ {params.min_train_per_cluster} training genes")


# %%
reports = transfer_reports(ranks, {"restricted": kept, "all": test}, main, n_genes, null, max_k=max_k,
                           auc_ks=params.auc_ks, random_repeats=params.random_repeats, seed=ctx.seed)
if "restricted" not in reports:
    print("restricted: no test genes")
for label, report in reports.items():
    print(f"{label} test genes ({len(report.genes)}):")
    display(report.table.round(4))
    # exact 95 % intervals of the top-k accuracies and the fewest hits a test at p < 0.05 accepts
    display(report.power.round(3))
    plotting.topk_curves(report.curves, report.bands, f"{label}: top-k accuracy of {len(report.genes)} unseen genes "
                                                      f"among {n_genes} candidates ({len(train)} training genes)")
    plt.show()
plotting.target_ranks(ranks.loc[kept or test, main], n_genes, title=f"{main}: rank of each test gene")
plt.show()

# %% [markdown]
# ## What the predictions look like
#
# For a few test genes: the ten genes nearest to the predicted regulatory embedding (on the synthetic
# data, with each gene's true module).

# %%
predicted = transfer_predictions(image, regulatory, train, test, fit_predict)
for gene in example_targets(ranks.loc[kept or test, main]):
    print(f"{gene}: true gene at rank {int(ranks.loc[gene, main]) + 1} of {n_genes}")
    display(nearest_genes(regulatory, predicted.loc[gene].to_numpy(), truth, gene, training=train).T)

# %% [markdown]
# ## What limits the prediction (synthetic data only)
#
# The world's truth lets us swap either side for its ideal: the genes' true phenotype shifts in place
# of the CNN's image embeddings, and the genes' true programs in place of the regulatory embeddings.
# The same translation is fitted on the same training genes and scored on the same test genes. Where
# the score jumps, that side is where the signal is lost.

# %%
oracle = None
if truth is not None:
    effect = params.second_screen.effect if params.second_screen else None
    oracle = transfer_oracle(image, regulatory, truth, train, test, kept or test, fit_predict, effect, ctx.seed,
                             max_k=max_k, auc_ks=params.auc_ks)
    display(oracle.round(3))

# %%
summary = validation_summary(reference=reference.dataset, train=train, test=test, restricted=kept, candidates=n_genes,
                             main=main, metrics=metrics, reports=reports, oracle=oracle)
write_summary(summary, layout.artifact("validation", "summary"))
print({key: round(value, 3) if isinstance(value, float) else value for key, value in summary.items()})
