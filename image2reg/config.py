"""Params files -> validated objects.

One YAML file per dataset (``params/<dataset>.yml``) names the stages to run, the number of folds
and every parameter of every stage. Fold-level overrides (``fold_overrides: {k: {stage: {...}}}``)
change a few keys for one fold without copying the file.

Everything is checked before anything runs: an unknown key, a missing key, a wrong type or a
duplicated key is a :class:`ParamsError` naming the file, the line and the key path.

Why one module of ~900 lines: it is the params *schema*, one pydantic model per stage block, plus the
loader that checks a file against it. A user reading what a key means, and a developer adding one, find
every block, its defaults and the cross-stage checks in one place; the blocks share validators and the
"did you mean" error path, and it imports neither torch nor any stage code (a test checks this).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from image2reg.execute import ExecutionParams
from image2reg.layout import artifact_name, resolve_path
from image2reg.stages import STAGES, stage_by_name


class ParamsError(ValueError):
    """A params file that cannot be used; the message names file, line and key."""


class StrictModel(BaseModel):
    """Base for every params block: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Stage 00: data
# --------------------------------------------------------------------------------------------
class SyntheticScreenParams(StrictModel):
    """Layout and effect sizes of the synthetic perturbation screen (see image2reg.data.synthetic)."""

    n_strong: int = Field(ge=1, description="genes with a strong effect on nuclear morphology")
    n_weak: int = Field(ge=0, description="genes with a weak effect")
    n_none: int = Field(ge=0, description="genes with no effect")
    strong_effect: tuple[float, float] = Field(description="range of strong effect sizes (cell-noise SD units)")
    weak_effect: tuple[float, float] = Field(description="range of weak effect sizes (cell-noise SD units)")
    n_two_allele_genes: int = Field(ge=0, description="genes screened with a second allele (pooled later)")
    n_plates: int = Field(ge=1)
    control_wells_per_plate: int = Field(ge=1)
    sites_per_well: int = Field(ge=1)
    field_size: int = Field(ge=96, description="height = width of a field of view (px)")
    nuclei_per_field: float = Field(gt=0, description="mean number of nuclei per field")
    nucleus_radius: float = Field(gt=3, description="mean nucleus radius of the control (px)")
    touching_fraction: float = Field(ge=0, le=0.5, description="share of nuclei placed touching a neighbour")
    well_effect_sd: float = Field(ge=0, description="per-well phenotype offset (cell-noise SD units)")
    illumination_strength: float = Field(ge=0, lt=1, description="max relative darkening of the plate illumination")
    blurry_fraction: float = Field(ge=0, le=1)
    saturated_fraction: float = Field(ge=0, le=1)
    targets_per_complex: int = Field(
        default=1, ge=1,
        description="impactful genes drawn from each chosen protein complex, of one effect class (1: genes are "
                    "drawn one by one from the screened modules)")

    @model_validator(mode="after")
    def _ranges(self) -> SyntheticScreenParams:
        for key in ("strong_effect", "weak_effect"):
            low, high = getattr(self, key)
            if not 0 <= low <= high:
                raise ValueError(f"{key} must be [low, high] with 0 <= low <= high, got {[low, high]}")
        return self


class SyntheticParams(StrictModel):
    """Sizes of the synthetic world: gene universe, interactome, expression and screen."""

    n_genes: int = Field(ge=20)
    n_modules: int = Field(ge=2)
    latent_dim: int = Field(ge=2)
    module_spread: float = Field(gt=0, description="SD of a gene's latent program around its complex centre (its "
                                                   "module centre with one complex per module)")
    n_complexes: int = Field(default=1, ge=1, description="protein complexes per module")
    complex_spread: float = Field(default=0.0, ge=0, description="SD of a complex centre around its module centre")
    ppi_p_complex: float | None = Field(
        default=None, gt=0, le=1, description="edge probability inside a complex; null: ppi_p_within")
    ppi_p_within: float = Field(gt=0, le=1, description="edge probability inside a module (between its complexes)")
    ppi_p_between: float = Field(ge=0, le=1, description="edge probability between modules")
    ppi_locality: float | None = Field(
        default=None, gt=0,
        description="length scale (program distance) of edges inside a module; null: uniform inside a module")
    n_hubs: int = Field(ge=0)
    hub_degree_fraction: float = Field(ge=0, le=1, description="share of all genes each hub touches")
    n_ppi_only_genes: int = Field(ge=0, description="PPI genes without expression data")
    n_expression_only_genes: int = Field(ge=0, description="expressed genes absent from the PPI")
    n_cells: int = Field(ge=10)
    n_cell_lines: int = Field(ge=3)
    n_random_gene_sets: int = Field(ge=0)
    screen: SyntheticScreenParams


class DownloadParams(StrictModel):
    """Fetch the DNA images (and illumination functions) of a real screen from the Cell Painting Gallery."""

    plates: list[str] | None = Field(default=None, description="only these plates (default: all)")
    genes: list[str] | None = Field(default=None, description="only these genes (the control is always kept)")
    max_fields: int | None = Field(default=None, ge=1, description="at most this many fields, spread over conditions")
    workers: int = Field(default=8, ge=1, description="parallel downloads")
    endpoint_url: str | None = Field(default=None, description="an S3-compatible server instead of AWS")
    metadata: str | None = Field(
        default=None, description="rohban: the reference's per-image table (metadata_image_data.csv, relative to "
                                  "the params file's folder) to plan from; null: the gallery's LoadData tables and "
                                  "platemaps")


class FolderColumns(StrictModel):
    """Which columns of the user's metadata table hold what (one row per field of view)."""

    file: str = Field(description="the DNA image's file, relative to the images folder (or absolute)")
    plate: str = Field(description="plate name or barcode")
    well: str = Field(description="well (e.g. B03); splits keep a well's fields together")
    site: str | None = Field(default=None, description="field within the well (null: one field per well, site 1)")
    perturbation: str = Field(description="the condition: gene symbol, or a control label")
    allele: str | None = Field(default=None, description="allele or clone, pooled per gene (optional)")
    extra: list[str] = Field(default_factory=list, description="other columns carried along as Metadata_<name>")


class FolderParams(StrictModel):
    """A screen on disk: DNA images in a folder and a metadata table (``source: folder``).

    Paths are absolute or relative to the params file's folder. Nothing is copied and nothing in the
    folder is changed: stage 00 checks everything, writes the normalised image table to
    ``raw/metadata/images.csv`` and links the optional inputs into ``raw/``.
    """

    images: str = Field(description="folder of the DNA images (TIFF, any bit depth, compressed or not)")
    metadata: str = Field(description="the fields of view: CSV or parquet, one row per field")
    columns: FolderColumns
    controls: list[str] = Field(min_length=1, description="label(s) of the negative control in the perturbation "
                                                          "column; they become the condition EMPTY")
    other_controls: list[str] = Field(default_factory=list,
                                      description="control constructs that are never screened (e.g. LacZ)")
    masks: str | None = Field(default=None, description="folder of nuclear label masks named like the images "
                                                        "(use with images.segmentation.method: masks)")
    ppi: str | None = Field(default=None, description="interactome with costs: TSV protein1, protein2, cost")
    single_cell: str | None = Field(default=None, description="single-cell counts, .h5ad or CSV (cells × genes)")
    bulk_expression: str | None = Field(default=None, description="bulk log2(TPM+1) over cell lines (CCLE layout)")
    bulk_sample_info: str | None = Field(default=None, description="cell-line annotation (stripped_cell_line_name)")
    gene_sets: str | None = Field(default=None, description="gene sets, GMT (node features of the autoencoder)")
    gene_list: str | None = Field(default=None, description="the genes to screen, one per line (default: all)")


class DataStageParams(StrictModel):
    """Stage 00: synthesize the demo world, fetch (optionally) and check the raw inputs of a real screen, or
    check and take in a screen from a folder."""

    source: Literal["synthetic", "rohban", "jump", "folder"]
    synthetic: SyntheticParams | None = None
    folder: FolderParams | None = None
    download: DownloadParams | None = None
    reference_genes: dict[str, str] = Field(
        default_factory=dict, description="gene lists whose overlap with the screen stage 00 reports: name -> a "
                                          ".txt list or a CSV with a 'gene' column, relative to the params file's "
                                          "folder (e.g. the reference's 249 interactome and 41 impactful genes)")

    @model_validator(mode="after")
    def _blocks(self) -> DataStageParams:
        if self.source == "synthetic" and self.synthetic is None:
            raise ValueError("source 'synthetic' needs a 'synthetic' block")
        if self.source != "synthetic" and self.synthetic is not None:
            raise ValueError(f"a 'synthetic' block is only used with source 'synthetic', not '{self.source}'")
        if self.source in ("synthetic", "folder") and self.download is not None:
            raise ValueError("a 'download' block is only used with source 'rohban' or 'jump'")
        if (self.source == "folder") != (self.folder is not None):
            raise ValueError("source 'folder' needs a 'folder' block, and a 'folder' block is only used with it")
        if self.download is not None and self.download.metadata is not None and self.source != "rohban":
            raise ValueError("download.metadata (the reference's per-image table) is for source 'rohban'; "
                             f"'{self.source}' plans from the gallery's LoadData tables")
        return self


# --------------------------------------------------------------------------------------------
# Stage 01: image preprocessing
# --------------------------------------------------------------------------------------------
class IlluminationParams(StrictModel):
    """Illumination correction: a published function per plate, one estimated from the plate, or none.

    ``published`` uses the functions the image table names (the Gallery's ``<plate>_Illum<DNA>.npy``)
    and estimates one for a plate that has none, with a warning: the reference corrected every field
    with the screen's published correction.
    """

    method: Literal["estimate", "published", "none"]
    max_fields_per_plate: int = Field(ge=1, description="fields (evenly spread) that the estimate averages")
    downsample: int = Field(ge=1, description="block size the fields are reduced by before averaging")
    smoothing_sigma: float | None = Field(default=None, gt=0, description="px; default 1/20 of the field side")


class QCParams(StrictModel):
    """Field quality control; flagged fields keep their nuclei in the tables, marked ``QC_pass = False``."""

    blur_max_slope: float | None = Field(description="flag fields with a PowerLogLogSlope below this")
    blur_mad_k: float | None = Field(description="flag slopes below the plate median − k·MAD")
    saturation_max_fraction: float = Field(ge=0, le=1, description="flag fields with more pixels at the maximum")
    bit_depth: Literal[8, 10, 12, 14, 16] | None = Field(
        default=None, description="the camera's bit depth: a pixel at 2**bit_depth - 1 is saturated (Rohban: 12-bit "
                                  "values in 16-bit files); null: read off each field (the smallest depth holding "
                                  "its maximum)")
    outlier_plates: list[str] = Field(description="plates left out entirely")
    outlier_wells: list[str] = Field(description="wells left out, as 'plate/well'")


class SegmentationParams(StrictModel):
    """Nuclear segmentation: masks supplied with the data, the built-in classical segmenter, or cellpose."""

    method: Literal["classical", "masks", "cellpose"]
    nucleus_diameter: float = Field(gt=0, description="typical nucleus diameter (px)")
    cellpose_model: str | None = Field(default=None, description="path of local cellpose weights")


class NucleusFilterParams(StrictModel):
    """The reference's nucleus filters (a bound of null switches a rule off)."""

    min_area: float | None
    max_area: float | None
    max_bbox_area: float | None
    min_solidity: float | None
    min_aspect_ratio: float | None
    drop_border: bool


class ImagesStageParams(StrictModel):
    """Stage 01: fields of view → QC, illumination correction, segmentation, filters, crops."""

    illumination: IlluminationParams
    qc: QCParams
    segmentation: SegmentationParams
    filters: NucleusFilterParams
    crop_size: int = Field(ge=16)
    crop_scaling: Literal["nucleus_max", "plate_percentile"] = Field(
        default="nucleus_max",
        description="crop intensities: nucleus_max scales each crop to its brightest pixel (the reference; hides "
                    "DNA content), plate_percentile scales all crops of a plate by one percentile of its corrected "
                    "fields (keeps DNA content)")
    crop_percentile: float = Field(default=99.99, gt=0, le=100,
                                   description="plate_percentile: the percentile of a field's pixels mapped to 255 "
                                               "(median over up to 24 sampled fields of the plate)")
    shard_size: int = Field(ge=1, description="fields per resumable unit of work")
    max_bad_fraction: float = Field(
        default=0.05, ge=0, le=1,
        description="share of the fields that may be bad (missing, unreadable, truncated, of another shape than "
                    "their plate's fields): each is named in the log, images.parquet's error column and the report, "
                    "and skipped; more stops the stage, naming the files. 0: any bad file stops it; 1: never")
    execution: ExecutionParams


# --------------------------------------------------------------------------------------------
# Stages 02-04: the CNN image encoder
# --------------------------------------------------------------------------------------------
class TrainingParams(BaseModel):
    """How one CNN is trained; the defaults are the reference's optimiser and early stopping (method §4.2).

    ``mixed_precision`` and ``channels_last`` act on CUDA only; the reference trained in float32.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=300, ge=1, description="most epochs")
    learning_rate: float = Field(default=1e-5, gt=0, description="Adam learning rate")
    weight_decay: float = Field(default=5e-4, ge=0, description="Adam weight decay (1e-3 for LOTO)")
    patience: int = Field(default=5, ge=1,
                          description="stop after this many epochs without a better validation balanced accuracy")
    batch_size: int = Field(default=64, ge=1, description="nuclei per training batch; the loader applies it")
    seed: int = Field(default=1234, description="seed of torch's generator and of the flips")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda when available")
    mixed_precision: bool = Field(default=True, description="CUDA only: bf16 autocast (fp16 + loss scaling "
                                                            "on GPUs without bf16)")
    channels_last: bool = Field(default=True, description="CUDA only: channels-last memory format")
    region_window_fields: int = Field(
        default=32, ge=1, description="region branch: fields per shuffling window (the field cache holds twice as "
                                      "many). Batches mix fewer fields and conditions than the reference's free "
                                      "shuffle: 0.72 of its conditions per batch at 32 (batch 32), 0.90 at 128 "
                                      "(batch 64), on a Rohban-sized split (benchmarks/batch_mixing.py)")



class ModelParams(StrictModel):
    """The image encoder (method §4.2): ResNet18 branches on the nucleus crop and the field patch around it.

    The reference: both branches, input 224 px, width 64 (ResNet18's), ImageNet weights. Smaller
    inputs and widths make the same architecture fast enough for a CPU (the demo).
    """

    branches: tuple[Literal["nucleus", "region"], ...] = Field(
        default=("nucleus", "region"), min_length=1, description="nucleus crop, field patch around it, or both")
    input_size: int = Field(default=224, ge=16, description="side (px) both branches' images are resized to")
    width: int = Field(default=64, ge=1, description="channels of ResNet18's first stage (64 = torchvision's)")
    region_size: int = Field(default=448, ge=16, description="side (px) of the field patch centred on the nucleus")
    pretrained: str | None = Field(default=None, description="local torchvision ResNet18 ImageNet weights file "
                                                             "(resnet18-f37072fd.pth; relative to the params file's "
                                                             "folder), as the reference; self_supervised: the "
                                                             "pretrain stage's encoder; null: train from scratch")

    @model_validator(mode="after")
    def _distinct_branches(self) -> ModelParams:
        if len(set(self.branches)) != len(self.branches):
            raise ValueError(f"branches are listed more than once: {list(self.branches)}")
        return self


#: ``model.pretrained`` naming the weights of the run's own self-supervised pretraining stage.
SELF_SUPERVISED = "self_supervised"
#: Outputs of each branch's ``fc`` in the stages' models (:class:`image2reg.cnn.ensemble.ImageEnsemble`).
ENSEMBLE_BRANCH_DIM = 512


class PretrainStageParams(StrictModel):
    """Optional stage: self-supervised pretraining of the nucleus encoder on every nucleus of the screen.

    SimCLR-style contrastive learning: two augmented views of each nucleus must find each other among
    the batch. The views differ by a random shift (and, with ``crop_scale`` below 1, a crop-and-resize,
    which zooms), one of the square's eight symmetries and a little pixel noise; brightness and contrast
    are never jittered and nothing is blurred, so that DNA content and chromatin texture stay what tells
    nuclei apart. The trunk it learns initialises the
    stages whose ``model.pretrained`` is ``self_supervised``; its ``input_size`` and ``width`` must be
    theirs.
    """

    input_size: int = Field(default=64, ge=16, description="side (px) crops are resized to, as the stages' models")
    width: int = Field(default=8, ge=1, description="channels of ResNet18's first stage, as the stages' models")
    branch_dim: int = Field(default=ENSEMBLE_BRANCH_DIM, ge=2,
                            description="outputs of the trunk's fc; the stages' models need 512 to load it")
    projection_dim: int = Field(default=64, ge=2, description="output of the projection head the loss sees")
    temperature: float = Field(default=0.2, gt=0, description="NT-Xent temperature")
    crop_scale: tuple[float, float] = Field(default=(1.0, 1.0),
                                            description="area fraction of the random crop-and-resize of each view "
                                                        "(below 1 it zooms, which hides nuclear size)")
    max_shift: float = Field(default=0.125, ge=0, lt=0.5,
                             description="largest translation of each view, as a fraction of the crop's side")
    noise_sd: float = Field(default=0.02, ge=0,
                            description="SD of the pixel noise added to each view, in [0, 1] intensity units")
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=4, description="nuclei per batch (2 views each)")
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate (cosine decay)")
    weight_decay: float = Field(default=1e-4, ge=0)
    max_nuclei: int | None = Field(default=200_000, ge=2,
                                   description="nuclei drawn (seeded) from the screen; null: all of them")
    seed: int = Field(default=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(default=None, ge=1, description="threads (null: torch's default)")

    @model_validator(mode="after")
    def _crop_scale(self) -> PretrainStageParams:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(self.crop_scale)}")
        return self


class ScreenStageParams(StrictModel):
    """Stage 02: one binary CNN per (gene, fold) against the control; the impactful genes (method §4.3)."""

    control: str = Field(default="EMPTY", description="the negative-control condition")
    genes: list[str] | None = Field(default=None, description="genes to screen; null: every condition")
    n_folds: int | None = Field(default=None, ge=2, description="screen folds; null: the file's folds")
    n_inner: int = Field(default=5, ge=2, description="inner folds of a fold's remainder; one is validation")
    latent_dim: int = Field(default=512, ge=2)
    model: ModelParams = Field(default_factory=ModelParams)
    training: TrainingParams = Field(default_factory=TrainingParams)
    selection: Literal["knee", "top_n"] = Field(default="knee", description="cut of the specificity ranking")
    top_n: int | None = Field(default=None, ge=1, description="genes kept with selection: top_n")
    baseline: bool = Field(default=True, description="also score classical nucleus features, same splits")
    torch_threads: int | None = Field(default=1, ge=1, description="threads per task (null: torch's default)")
    execution: ExecutionParams = Field(default_factory=ExecutionParams)

    @model_validator(mode="after")
    def _selection(self) -> ScreenStageParams:
        if (self.selection == "top_n") != (self.top_n is not None):
            raise ValueError("top_n is required with selection: top_n and only allowed with it")
        return self


class EmbeddingStageParams(StrictModel):
    """Stage 03: the multi-class CNN on the impactful genes and the control, k-fold (method §4.4)."""

    n_inner: int = Field(default=5, ge=2, description="inner folds of a fold's remainder; one is validation")
    undersample_control: bool = Field(default=True, description="control down to the largest gene's count")
    latent_dim: int = Field(default=1024, ge=2)
    model: ModelParams = Field(default_factory=ModelParams)
    training: TrainingParams = Field(default_factory=lambda: TrainingParams(batch_size=32))
    umap_neighbors: int = Field(default=15, ge=2, description="neighbours of the nucleus-embedding UMAP")
    umap_max_nuclei: int = Field(default=5000, ge=10, description="nuclei drawn for the UMAP")
    torch_threads: int | None = Field(default=1, ge=1, description="threads per task (null: torch's default)")
    execution: ExecutionParams = Field(default_factory=ExecutionParams)


class LotoStageParams(StrictModel):
    """Stage 04: leave-one-target-out CNNs, one per impactful gene (method §4.5)."""

    include_control: bool = Field(default=False, description="also train one model without the control")
    n_folds: int = Field(default=5, ge=2, description="the test part is the first of this many folds")
    n_inner: int = Field(default=4, ge=2, description="the validation part: first of this many inner folds")
    undersample_control: bool = Field(default=True, description="control down to the largest gene's count")
    latent_dim: int = Field(default=1024, ge=2)
    model: ModelParams = Field(default_factory=ModelParams)
    training: TrainingParams = Field(default_factory=lambda: TrainingParams(weight_decay=1e-3))
    torch_threads: int | None = Field(default=1, ge=1, description="threads per task (null: torch's default)")
    execution: ExecutionParams = Field(default_factory=ExecutionParams)


# --------------------------------------------------------------------------------------------
# Stage 05: the gene–gene interactome
# --------------------------------------------------------------------------------------------
class PpiParams(StrictModel):
    """The protein–protein interactions: the iRefIndex/OmicsIntegrator costs table or STRING links."""

    format: Literal["irefindex", "string"] = Field(default="irefindex", description="protein1, protein2, cost "
                                                   "(irefindex) | STRING protein.links + protein.info")
    string_links: str | None = Field(default=None, description="STRING protein.links file, relative to the raw "
                                                               "folder (format string only)")
    string_info: str | None = Field(default=None, description="STRING protein.info file, relative to the raw "
                                                              "folder (format string only)")
    string_min_score: int = Field(default=0, ge=0, le=1000, description="STRING combined_score kept (0–1000)")

    @model_validator(mode="after")
    def _string(self) -> PpiParams:
        given = (self.string_links is not None, self.string_info is not None)
        if given != ((self.format == "string"),) * 2:
            raise ValueError("string_links and string_info are required with format: string and only allowed "
                             "with it")
        return self


class SingleCellParams(StrictModel):
    """The reference's single-cell preprocessing (scanpy): filters, then counts per million and log1p."""

    cells_in_rows: bool = Field(default=True, description="a counts CSV has one row per cell")
    min_genes: int = Field(default=8000, ge=0, description="cells with fewer detected genes are dropped")
    min_cells: int = Field(default=10, ge=0, description="genes detected in fewer cells are dropped")
    target_sum: float = Field(default=1e6, gt=0, description="counts per cell after normalisation")


class InteractomeStageParams(StrictModel):
    """Stage 05: PPI ∩ expression → confidence and hub pruning → costs and prizes → PCST (method §5)."""

    ppi: PpiParams = Field(default_factory=PpiParams)
    single_cell: SingleCellParams = Field(default_factory=SingleCellParams)
    target_line: str = Field(default="U2OS", description="cell line of the screen in the bulk expression")
    confidence_cutoff: float | None = Field(default=0.594, gt=0, description="keep PPI edges with cost below "
                                                                             "this; null: no pruning")
    confidence_scan_step: float = Field(default=0.001, gt=0, lt=1, description="step of the cut-off scan")
    hub_quantile: float | None = Field(default=0.999, gt=0, le=1, description="drop nodes whose degree reaches "
                                                                               "this quantile; null: none")
    hub_scan: list[float] = Field(default_factory=lambda: [round(0.99 + 0.001 * i, 3) for i in range(11)],
                                  description="degree quantiles of the hub scan")
    edge_cost: Literal["spearman", "ppi"] = Field(default="spearman", description="1 − |Spearman ρ| over single "
                                                  "cells (the reference) | the PPI's own cost")
    betas: tuple[float, float, float] = Field(default=(0.1, 10.0, 0.1), description="β sweep: start, stop "
                                              "(excluded), step")
    beta: float | None = Field(default=None, gt=0, description="use this β; null: the smallest β of the sweep "
                                                               "covering the most targets")
    robustness_repeats: int = Field(default=100, ge=0, description="re-solves under edge-cost noise (0: skip)")
    robustness_noise: float = Field(default=0.1, ge=0, description="relative SD of the edge-cost noise")
    enrichment_fdr: float = Field(default=0.05, gt=0, le=1, description="FDR of the gene-set enrichment table")
    execution: ExecutionParams = Field(default_factory=ExecutionParams)

    @model_validator(mode="after")
    def _betas(self) -> InteractomeStageParams:
        start, stop, step = self.betas
        if not (0 < start < stop and step > 0):
            raise ValueError(f"betas must be [start, stop, step] with 0 < start < stop and step > 0, got "
                             f"{list(self.betas)}")
        if any(not 0 < q <= 1 for q in self.hub_scan):
            raise ValueError("hub_scan quantiles must lie in (0, 1]")
        return self

    def beta_values(self) -> list[float]:
        """The β values of the sweep (rounded to the step's decimals: 0.1, 0.2, … 9.9 by default)."""
        start, stop, step = self.betas
        decimals = max(0, -int(math.floor(math.log10(step))) + 2)
        count = int(math.floor((stop - start) / step - 1e-9)) + 1
        return [round(start + i * step, decimals) for i in range(count)]


# --------------------------------------------------------------------------------------------
# Stage 06: regulatory gene embeddings
# --------------------------------------------------------------------------------------------
class GaeParams(StrictModel):
    """Hyper-parameters of one GAE run (the ``gae`` block of stage 06's params)."""

    hidden_dim: int = Field(default=1024, ge=1, description="output size of the first graph convolution")
    latent_dim: int = Field(default=1024, ge=1, description="size of the gene embeddings")
    alpha: float = Field(default=1.0, ge=0, description="weight of the link reconstruction loss")
    beta: float = Field(default=0.0, ge=0, description="weight of the L1 node-feature reconstruction loss")
    gamma: float = Field(default=1.0, ge=0, description="weight of the latent classifier's cross-entropy")
    learning_rate: float = Field(default=1e-5, gt=0, description="Adam learning rate")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay")
    epochs: int = Field(default=10000, ge=1, description="maximum number of epochs (full-graph steps)")
    patience: int = Field(default=100, ge=1, description="epochs without a lower validation loss before stopping")
    val_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of the edges held out for validation")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of the edges held out for testing")
    graph: Literal["split_graph", "full_graph"] = Field(
        default="split_graph",
        description="message passing on the train (+val for testing) edges only, or on all edges everywhere")
    seed: int = Field(default=5678, description="seed of the edge split, the initial weights and the negatives")
    device: Literal["auto", "cpu", "cuda"] = Field(default="cpu", description="auto: cuda when available")

    @model_validator(mode="after")
    def _check(self) -> GaeParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1 to leave training edges, got "
                             f"{self.val_fraction} + {self.test_fraction}")
        if self.alpha + self.beta + self.gamma <= 0:
            raise ValueError("at least one of alpha, beta, gamma must be > 0")
        return self


class RegulatoryStageParams(StrictModel):
    """Stage 06: graph autoencoder on the interactome → regulatory gene embeddings (method §6)."""

    features: list[Literal["expression", "gene_sets"]] = Field(
        default_factory=lambda: ["expression", "gene_sets"],
        description="node features: scaled single-cell expression and/or gene-set membership")
    labels: Literal["image_clusters", "none"] = Field(
        default="image_clusters", description="classes of the latent classifier: clusters of the genes' mean image "
                                              "embeddings (the reference's 'physical' labels) | none")
    n_clusters: int = Field(default=10, ge=1, description="image clusters of a LOTO model's training targets")
    n_clusters_all: int = Field(default=11, ge=1, description="image clusters of all targets (the model on all "
                                                              "genes)")
    loto: bool = Field(default=True, description="one model per held-out target, its labels without the target")
    evaluation_seeds: int = Field(default=5, ge=1, description="edge splits of the model on all genes, for the "
                                                               "spread of the link-prediction AUC")
    gae: GaeParams = Field(default_factory=GaeParams)
    n_embedding_clusters: int = Field(default=8, ge=2, description="clusters of the embeddings in the report")
    umap_neighbors: int = Field(default=15, ge=2)
    torch_threads: int | None = Field(default=1, ge=1, description="threads per model (null: torch's default)")
    execution: ExecutionParams = Field(default_factory=ExecutionParams)

    @model_validator(mode="after")
    def _features(self) -> RegulatoryStageParams:
        if not self.features or len(set(self.features)) != len(self.features):
            raise ValueError("features must name expression and/or gene_sets, each once")
        return self


# --------------------------------------------------------------------------------------------
# Stage 07: translation
# --------------------------------------------------------------------------------------------
class TranslationInputParams(StrictModel):
    """Input augmentations of the translation (method §7.3); the defaults add none (the released setting)."""

    use_y_train_mean: bool = Field(default=False, description="append the training genes' mean regulatory "
                                                              "embedding")
    n_neighbors: int = Field(default=0, ge=0, description="relaxed SI coefficients on this many nearest training "
                                                          "genes (0: none)")
    n_encodings: int = Field(default=2, ge=1, description="Fourier encodings of the coefficients")
    encoding: Literal["positional", "gauss"] = "positional"
    sigma: float = Field(default=1.0, gt=0, description="scale of the Fourier encoding")
    append_neighbors: Literal["images", "genes"] | None = Field(default=None, description="also append the "
                                                                "neighbours' image or regulatory embeddings")
    normalize_inputs: bool = Field(default=False, description="image embeddings scaled to unit length first")


class TranslationStageParams(StrictModel):
    """Stage 07: image → regulatory embedding translation, LOTO evaluation and grid search (method §7)."""

    model: Literal["ntk", "linear", "kernel_ridge", "si"] = Field(default="ntk", description="the translation")
    reg: float = Field(default=1.0, ge=0, description="ridge of the model (the released NTK setting: 1)")
    inputs: TranslationInputParams = Field(default_factory=TranslationInputParams)
    compare: list[Literal["ntk", "linear", "kernel_ridge", "si"]] = Field(
        default_factory=lambda: ["linear", "kernel_ridge", "si"], description="other models in the report")
    max_k: int = Field(default=50, ge=1, description="top-k curves up to this k")
    auc_ks: list[int] = Field(default_factory=lambda: [20, 50],
                              description="areas under the top-k curve reported (the mean of top-1..K, the reference's "
                                          "JUMP scale; its Rohban notebooks' areas are these × K/(K+1))")
    selection_ks: list[int] = Field(default_factory=lambda: [20, 50], description="grid selection: the sum of "
                                                                                    "these areas")
    permutation_repeats: int = Field(default=1000, ge=0, description="shuffled image–gene pairings (0: skip)")
    random_repeats: int = Field(default=1000, ge=1, description="random-gene rankings for the random baseline band")
    grid_search: bool = Field(default=True, description="run the grid of input augmentations and ridges")
    query_fields: int = Field(default=8, ge=0, description="synthetic data only: fresh fields per impactful gene "
                                                           "run through the predict command (0: skip)")
    grid: dict[str, list[Any]] | None = Field(default=None, description="values per setting; null: the "
                                                                          "reference's grid (1,440 settings)")
    execution: ExecutionParams = Field(default_factory=ExecutionParams)

    @model_validator(mode="after")
    def _ks(self) -> TranslationStageParams:
        for key in ("auc_ks", "selection_ks"):
            values = getattr(self, key)
            if not values or any(k < 1 or k > self.max_k for k in values):
                raise ValueError(f"{key} must list values between 1 and max_k ({self.max_k})")
        return self


# --------------------------------------------------------------------------------------------
# Stage 08: validation on a second screen (JUMP)
# --------------------------------------------------------------------------------------------
class SecondScreenParams(StrictModel):
    """Synthetic data only: the second screen of stage 08, the same world's genes imaged in a new "lab"."""

    train_wells: int = Field(default=2, ge=1, description="wells per training (impactful) gene")
    test_wells: int = Field(default=1, ge=1, description="wells per test gene")
    control_wells: int = Field(default=8, ge=1)
    sites_per_well: int = Field(default=4, ge=1)
    effect: tuple[float, float] = Field(default=(1.2, 2.4), description="effect sizes of genes outside the first "
                                                                          "screen (cell-noise SD units)")
    max_test_genes: int | None = Field(default=None, ge=1, description="at most this many test genes, drawn at "
                                                                       "random (null: every other interactome gene)")

    @model_validator(mode="after")
    def _effect(self) -> SecondScreenParams:
        low, high = self.effect
        if not 0 <= low <= high:
            raise ValueError(f"effect must be [low, high] with 0 <= low <= high, got {[low, high]}")
        return self


class ValidationStageParams(StrictModel):
    """Stage 08: train the translation on the impactful genes of a second screen, predict its other genes (§8)."""

    reference: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$",
                                  description="dataset whose impactful genes (stage 02), interactome (05) and "
                                              "regulatory embeddings (06) are used, e.g. rohban for jump; "
                                              "null: this dataset")
    second_screen: SecondScreenParams | None = Field(default=None, description="synthetic data: the second screen "
                                                                                "to synthesize")
    n_folds: int = Field(default=4, ge=2, description="the CNN trains on fold 0 of this many folds")
    n_inner: int = Field(default=5, ge=2)
    undersample_control: bool = True
    latent_dim: int = Field(default=1024, ge=2)
    model: ModelParams = Field(default_factory=ModelParams)
    training: TrainingParams = Field(default_factory=lambda: TrainingParams(batch_size=64))
    translation: Literal["ntk", "linear", "kernel_ridge", "si"] = "ntk"
    reg: float = Field(default=1.0, ge=0)
    inputs: TranslationInputParams = Field(default_factory=TranslationInputParams)
    n_clusters: int = Field(default=9, ge=1, description="k-means clusters of the regulatory embeddings")
    min_train_per_cluster: int = Field(default=2, ge=0, description="the restricted evaluation keeps test genes of "
                                                                    "clusters with at least this many training "
                                                                    "genes (the reference: 2)")
    max_k: int = Field(default=50, ge=1)
    auc_ks: list[int] = Field(default_factory=lambda: [10, 20, 30, 40, 50],
                              description="areas under the top-k curve; their sum is the reference's JUMP score")
    permutation_repeats: int = Field(default=1000, ge=0, description="shuffled training pairs (0: skip)")
    random_repeats: int = Field(default=1000, ge=1)
    torch_threads: int | None = Field(default=None, ge=1, description="torch threads (null: torch's default)")

    @model_validator(mode="after")
    def _ks(self) -> ValidationStageParams:
        if not self.auc_ks or any(k < 1 or k > self.max_k for k in self.auc_ks):
            raise ValueError(f"auc_ks must list values between 1 and max_k ({self.max_k})")
        return self


# --------------------------------------------------------------------------------------------
# The whole file
# --------------------------------------------------------------------------------------------
class StagesParams(StrictModel):
    """One optional block per stage; a stage runs when its block is present."""

    data: DataStageParams | None = None
    images: ImagesStageParams | None = None
    pretrain: PretrainStageParams | None = None
    screen: ScreenStageParams | None = None
    embeddings: EmbeddingStageParams | None = None
    loto: LotoStageParams | None = None
    interactome: InteractomeStageParams | None = None
    regulatory: RegulatoryStageParams | None = None
    translation: TranslationStageParams | None = None
    validation: ValidationStageParams | None = None

    @model_validator(mode="after")
    def _second_screen(self) -> StagesParams:
        if self.validation is None or self.data is None:
            return self
        synthetic = self.data.source == "synthetic"
        if synthetic and self.validation.second_screen is None:
            raise ValueError("validation: synthetic data needs a 'second_screen' block (the screen to synthesize)")
        if not synthetic and self.validation.second_screen is not None:
            raise ValueError(f"validation: 'second_screen' is for synthetic data; source '{self.data.source}' "
                             "validates on its own stage-01 images")
        return self


class RunParams(StrictModel):
    """A validated params file. Use :func:`load_params` to make one."""

    dataset: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    seed: int = Field(ge=0)
    folds: int = Field(ge=1, description="k of the k-fold stages; per-fold stages run once per fold")
    stages: StagesParams
    fold_overrides: dict[int, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    # set by load_params, not by the file
    source_path: Path | None = Field(default=None, exclude=True)

    def stage_names(self) -> list[str]:
        """Names of the stages this file runs, in run order."""
        present = {name for name in StagesParams.model_fields if getattr(self.stages, name) is not None}
        return [stage.name for stage in STAGES if stage.name in present]

    def stage(self, name: str, fold: int | None = None) -> StrictModel:
        """The params of one stage, with the fold's overrides applied."""
        block = getattr(self.stages, name, None)
        if block is None:
            raise KeyError(f"{self._where()}: stage '{name}' is not configured (stages: {self.stage_names()})")
        if fold is None or fold not in self.fold_overrides or name not in self.fold_overrides[fold]:
            return block
        merged = _deep_merge(block.model_dump(mode="python"), self.fold_overrides[fold][name])
        return type(block).model_validate(merged)

    def stage_dict(self, name: str, fold: int | None = None) -> dict[str, Any]:
        """A stage's params as plain JSON-able data (what the manifest hashes)."""
        return self.stage(name, fold).model_dump(mode="json")

    def fingerprint(self, name: str, fold: int | None = None) -> str:
        """Hash of everything in the file that a stage's result depends on."""
        payload = {"dataset": self.dataset, "seed": self.seed, "folds": self.folds,
                   "fold": fold, "params": self.stage_dict(name, fold)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _where(self) -> str:
        return str(self.source_path) if self.source_path else "<params>"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------
# Loading with precise errors
# --------------------------------------------------------------------------------------------
def _key_lines(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """Map every key path of a YAML document to its 1-based line number.

    Raises
    ------
    ParamsError
        For a key given twice in one mapping (YAML loaders silently keep the last).
    """
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            path = prefix + (key,)
            if path in lines:
                raise ParamsError(f"line {key_node.start_mark.line + 1}: key '{key}' is given twice "
                                  f"(first on line {lines[path]})")
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[prefix + (str(index),)] = item.start_mark.line + 1
            lines.update(_key_lines(item, prefix + (str(index),)))
    return lines


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    path = tuple(str(part) for part in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    """Keys allowed in the mapping at ``loc`` (for 'did you mean' hints)."""
    model: type[BaseModel] | None = RunParams
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = _model_of(field.annotation)
    return sorted(name for name in (model.model_fields if model else {}) if name != "source_path")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _format_error(error: dict[str, Any], lines: dict[tuple, int], where: str, prefix: tuple = ()) -> str:
    loc = prefix + tuple(part for part in error["loc"] if not _is_union_tag(part))
    line = _line_of(lines, loc)
    place = f"{where}, line {line}" if line else where
    key = ".".join(str(part) for part in loc) or "<top level>"
    kind = error["type"]
    if kind == "missing":
        parent = ".".join(str(part) for part in loc[:-1]) or "<top level>"
        return f"{place}: missing required key '{loc[-1]}' in {parent}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[len(prefix):-1]) if not prefix else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return f"{place}: unknown key '{key}'{suggestion}"
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    return f"{place}: {key}: {error['msg']}{shown}"


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member's class name into the location; users never wrote it
    return isinstance(part, str) and (part[:1].isupper() or part.startswith("function-"))


def load_params(path: str | Path) -> RunParams:
    """Read and validate a params file.

    Parameters
    ----------
    path
        A YAML params file (``params/<dataset>.yml``).

    Returns
    -------
    RunParams
        The validated params, with every fold's overrides checked as well.

    Raises
    ------
    ParamsError
        Naming the file, line and key of every problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    text = path.read_text()
    try:
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except ParamsError as error:
        raise ParamsError(f"{path}, {error}") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")

    try:
        params = RunParams.model_validate(raw)
    except ValidationError as error:
        messages = [_format_error(item, lines, str(path)) for item in error.errors()]
        raise ParamsError("\n".join(messages)) from None
    params = params.model_copy(update={"source_path": path})
    _check_fold_overrides(params, lines)
    return params


#: Where users get the ImageNet weights the reference fine-tunes (torchvision's ResNet18, IMAGENET1K_V1).
RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


class PretrainedWeightsError(FileNotFoundError):
    """A params file asks for pretrained encoder weights that are not on disk; the message names key and file."""


def resolve_pretrained(params: RunParams, stage: str, self_supervised: Path | None = None) -> RunParams:
    """The params with the stage's ``model.pretrained`` made absolute, after checking the file exists.

    A relative path is taken relative to the params file's folder (``../weights/resnet18-f37072fd.pth``
    in ``params/rohban.yml`` is ``weights/`` of the project). ``self_supervised`` names the encoder of
    the run's own pretraining stage, whose file is the ``self_supervised`` argument; its trunk must have
    the stage's ``width`` and ``input_size``. Stages without a ``model`` block, and ``pretrained: null``
    (training from scratch), are returned unchanged.

    Raises
    ------
    PretrainedWeightsError
        Naming the params file, the key and the missing file, with where to download it (or which stage
        makes it) and how to train from scratch instead: before any training starts.
    ValueError
        ``self_supervised`` without a ``pretrain`` block, or with another width or input size than it.
    """
    block = getattr(params.stages, stage, None)
    model = getattr(block, "model", None)
    if not isinstance(model, ModelParams) or model.pretrained is None:
        return params  # no image encoder (translation's ``model`` names its regression)
    key = f"stages.{stage}.model.pretrained"
    if model.pretrained == SELF_SUPERVISED:
        pretrain = params.stages.pretrain
        if pretrain is None:
            raise ValueError(f"{params._where()}: {key} is {SELF_SUPERVISED}, but the file has no 'pretrain' block "
                             "(the self-supervised pretraining stage): add one, or name ImageNet weights or null")
        differing = [name for name in ("width", "input_size") if getattr(pretrain, name) != getattr(model, name)]
        if pretrain.branch_dim != ENSEMBLE_BRANCH_DIM:
            differing.append("branch_dim")
        if differing:
            raise ValueError(f"{params._where()}: stages.{stage}.model and stages.pretrain differ in "
                             + ", ".join(f"{name} ({getattr(model, name, ENSEMBLE_BRANCH_DIM)} vs "
                                         f"{getattr(pretrain, name)})" for name in differing)
                             + ": the pretrained trunk would not fit")
        path = self_supervised
        if path is None or not Path(path).is_file():
            raise PretrainedWeightsError(
                f"{params._where()}: {key} is {SELF_SUPERVISED}, but the pretraining stage's encoder "
                f"{path} does not exist: run stage 01b (python runbook.py --dataset {params.dataset} --stages "
                f"01b) first, or set {key}: null to train the encoder from scratch")
    else:
        path = params_relative(params, model.pretrained)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"{params._where()}: {key} names {model.pretrained}, but {path} does not exist. Download "
                f"torchvision's ImageNet ResNet18 weights once ({RESNET18_IMAGENET_URL}) to that path, or set "
                f"{key}: null to train the encoder from scratch (not the reference's setting)")
    resolved = block.model_copy(update={"model": model.model_copy(update={"pretrained": str(path)})})
    return params.model_copy(update={"stages": params.stages.model_copy(update={stage: resolved})})


def params_relative(params: RunParams, value: str) -> Path:
    """A path given in a params file: absolute, or relative to the params file's folder."""
    return resolve_path(value, params.source_path.parent if params.source_path else Path.cwd())


def encoder_initialisation(model: ModelParams) -> str:
    """One line for a report: how the image encoder starts (pretrained weights from a file, or from scratch)."""
    if model.pretrained is None:
        return ("encoder initialisation: random, trained from scratch (model.pretrained: null; the reference "
                "fine-tunes ImageNet weights)")
    weights = Path(model.pretrained)
    if model.pretrained == SELF_SUPERVISED or (weights.name == artifact_name("pretrain", "encoder")
                                               and weights.parent.name == stage_by_name("pretrain").id):
        return f"encoder initialisation: self-supervised pretraining on the screen's nuclei ({model.pretrained})"
    return f"encoder initialisation: ImageNet weights from {model.pretrained}"


def _check_fold_overrides(params: RunParams, lines: dict[tuple, int]) -> None:
    where = str(params.source_path)
    messages = []
    for fold, overrides in params.fold_overrides.items():
        if not 0 <= fold < params.folds:
            line = _line_of(lines, ("fold_overrides", str(fold)))
            messages.append(f"{where}, line {line}: fold_overrides.{fold}: fold {fold} is outside "
                            f"0..{params.folds - 1}")
            continue
        for name in overrides:
            loc = ("fold_overrides", str(fold), name)
            stage = stage_by_name(name)
            if stage is None or getattr(params.stages, name, None) is None:
                messages.append(f"{where}, line {_line_of(lines, loc)}: fold_overrides.{fold}.{name}: "
                                f"no stage '{name}' in this file (stages: {', '.join(params.stage_names())})")
            elif not stage.per_fold:
                messages.append(f"{where}, line {_line_of(lines, loc)}: fold_overrides.{fold}.{name}: "
                                f"stage '{name}' does not run per fold")
            else:
                try:
                    params.stage(name, fold)
                except ValidationError as error:
                    messages.extend(_format_error(item, lines, where, loc) for item in error.errors())
    if messages:
        raise ParamsError("\n".join(messages))


def params_path_for(dataset: str, root: str | Path) -> Path:
    """The params file of a dataset: ``<root>/params/<dataset>.yml``."""
    return Path(root) / "params" / f"{dataset}.yml"
