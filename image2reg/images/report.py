"""What stage 01 computes for its report: field counts, bad files, QC flags against the truth, illumination,
segmentation.

The stage notebook calls one of these per cell and shows or plots what it returns (figures:
:mod:`image2reg.plotting.data`). Comparisons with the ground truth return None for real data, which
has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from image2reg.config import ImagesStageParams
from image2reg.images.illumination import read_illumination_function
from image2reg.images.io import read_field
from image2reg.images.pipeline import (
    corrected_field,
    evaluate_segmentation,
    illumination_path,
    illumination_table,
    overall_f1,
    prepare_illumination,
    segmenter,
)
from image2reg.layout import RawLayout, stored_path

#: Stage 01's QC flag -> the synthetic world's flag of the same defect (its ``Image_Metadata_*`` table).
TRUTH_FLAGS = {"QC_blurry": "Image_Metadata_QCFlag_isBlurry", "QC_saturated": "Image_Metadata_QCFlag_isSaturated"}

#: The columns of :func:`flagged_fields`.
FLAGGED_COLUMNS = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "power_log_log_slope", "saturated_fraction",
                   "QC_blurry", "QC_saturated", "error"]

#: The columns of :func:`bad_fields`.
BAD_COLUMNS = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "image_path", "error"]


def field_counts(fields: pd.DataFrame) -> dict[str, int]:
    """Fields of view, conditions and plates of a field table.

    Parameters
    ----------
    fields
        One row per field (``Metadata_Gene``, ``Metadata_Plate``).

    Returns
    -------
    dict
        ``fields``, ``conditions`` and ``plates``.
    """
    return {"fields": len(fields), "conditions": fields["Metadata_Gene"].nunique(),
            "plates": fields["Metadata_Plate"].nunique()}


def flagged_fields(qc: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The first ``n`` fields that failed QC or could not be read, with their QC measures.

    Parameters
    ----------
    qc
        Stage 01's field table (``images.parquet``).
    n
        At most this many rows.

    Returns
    -------
    pandas.DataFrame
        :data:`FLAGGED_COLUMNS` of the fields with ``QC_pass`` false or an ``error``.
    """
    return qc.loc[~qc["QC_pass"] | (qc["error"] != ""), FLAGGED_COLUMNS].head(n)


def bad_fields(qc: pd.DataFrame) -> pd.DataFrame:
    """Every field skipped as bad (missing, unreadable, truncated, of another shape than its plate's, or
    failing later), with the reason, which names the file.

    Parameters
    ----------
    qc
        Stage 01's field table (``images.parquet``).

    Returns
    -------
    pandas.DataFrame
        :data:`BAD_COLUMNS` of the fields with an ``error``, in the table's order, indexed 0..n-1.
    """
    return qc.loc[qc["error"] != "", BAD_COLUMNS].reset_index(drop=True)


def flags_against_truth(qc: pd.DataFrame, raw: RawLayout) -> pd.DataFrame | None:
    """Stage 01's blur and saturation flags against the synthetic world's (:data:`TRUTH_FLAGS`).

    Parameters
    ----------
    qc
        Stage 01's field table (``images.parquet``: ``image_path`` and the ``QC_*`` flags).
    raw
        The raw folder; fields are matched to the world's per-field table by file name.

    Returns
    -------
    pandas.DataFrame or None
        One column per flag, rows ``true fields``, ``flagged`` and ``flagged and true``; None without a
        synthetic world.
    """
    if not raw.world.is_file():
        return None
    truth = pd.read_csv(raw.image_metadata).rename(columns={"Image_FileName_OrigHoechst": "Metadata_FileName"})
    merged = qc.assign(Metadata_FileName=qc["image_path"].map(lambda p: p.rsplit("/", 1)[-1])).merge(
        truth[["Metadata_FileName", *TRUTH_FLAGS.values()]], on="Metadata_FileName")
    return pd.DataFrame({flag: {"true fields": int(merged[column].sum()),
                                "flagged": int(merged[flag].sum()),
                                "flagged and true": int((merged[flag] & (merged[column] == 1)).sum())}
                         for flag, column in TRUTH_FLAGS.items()})


@dataclass(frozen=True)
class IlluminationOverview:
    """The illumination functions stage 01 corrected with."""

    files: dict[str, str | None]  #: plate -> function file (None: no correction)
    table: pd.DataFrame  #: :func:`image2reg.images.pipeline.illumination_table`
    functions: dict[str, np.ndarray]  #: plate -> function, for the plates with one
    truth: dict[str, np.ndarray] | None  #: plate -> the synthetic world's function (None: none known)


def illumination_overview(fields: pd.DataFrame, out_dir: Path, params: ImagesStageParams,
                          raw: RawLayout) -> IlluminationOverview:
    """The illumination function of every plate, read back, with the ground truth where it is known.

    Parameters
    ----------
    fields
        Stage 01's field table (:func:`image2reg.images.pipeline.field_inputs`).
    out_dir
        Stage 01's folder, which holds the estimated functions once the stage has run.
    params
        Stage 01's params.
    raw
        The raw folder; a synthetic world keeps its true functions in ``truth/illumination/<plate>.tif``.

    Returns
    -------
    IlluminationOverview
    """
    files = prepare_illumination(fields, out_dir, params, progress_bar=False)
    functions = {plate: read_illumination_function(path) for plate, path in files.items() if path is not None}
    known = {plate: tifffile.imread(illumination_path(raw.truth, plate)) for plate in functions
             if illumination_path(raw.truth, plate).is_file()}
    return IlluminationOverview(files, illumination_table(files, out_dir), functions, known or None)


@dataclass(frozen=True)
class SegmentationExamples:
    """Corrected fields with their segmentation (for :func:`image2reg.plotting.segmentation_overlays`)."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    titles: list[str]  #: condition, well and site of each field
    truth: list[np.ndarray] | None  #: the true label masks (None unless every field has one)


def segmentation_examples(qc: pd.DataFrame, fields: pd.DataFrame, functions: dict[str, np.ndarray],
                          params: ImagesStageParams, raw: RawLayout, seed: int, n: int = 3,
                          folder: str | Path | None = None) -> SegmentationExamples:
    """Segment ``n`` random QC-passing fields again, as stage 01 did.

    Parameters
    ----------
    qc
        Stage 01's field table (``images.parquet``).
    fields
        Stage 01's field inputs (``image_path`` and, for supplied masks, ``mask_path``).
    functions
        Plate -> illumination function (plates without one are not corrected).
    params
        Stage 01's params (the segmenter).
    raw
        The raw folder; true masks are looked up in ``raw.masks/<plate>/<file name>``.
    seed
        Seed of the draw of fields.
    n
        Fields to draw (fewer when fewer pass QC).
    folder
        The folder of ``qc`` (stage 01's), when its ``image_path`` values are stored relative to it.

    Returns
    -------
    SegmentationExamples
    """
    segment = segmenter(params)
    passing = _passing_sample(qc, folder, n, seed)
    mask_paths = fields.set_index("image_path").get("mask_path", pd.Series(dtype=str))
    images, labels, masks = [], [], []
    for row in passing.itertuples():
        corrected = corrected_field(read_field(row.image_path), functions.get(str(row.Metadata_Plate)))
        images.append(corrected)
        labels.append(segment(corrected, mask_paths.get(row.image_path)))
        truth_mask = _truth_mask(raw, row.Metadata_Plate, row.image_path)
        masks.append(tifffile.imread(truth_mask) if truth_mask.is_file() else None)
    titles = [f"{r.Metadata_Gene} {r.Metadata_Well} s{r.Metadata_Site}" for r in passing.itertuples()]
    return SegmentationExamples(images, labels, titles, masks if all(m is not None for m in masks) else None)


@dataclass(frozen=True)
class SegmentationScore:
    """The segmentation of fields scored against their true masks (object matching at an IoU threshold)."""

    scores: pd.DataFrame  #: one row per field (:func:`image2reg.images.pipeline.evaluate_segmentation`)
    f1: float  #: over all objects of all fields
    precision: float
    recall: float
    mean_iou: float  #: mean over fields of the mean IoU of their matched objects


def score_segmentation(qc: pd.DataFrame, raw: RawLayout, illumination: dict[str, str | None],
                       params: ImagesStageParams, seed: int, n: int = 150,
                       folder: str | Path | None = None) -> SegmentationScore | None:
    """Score the segmentation of up to ``n`` random QC-passing fields against the synthetic world's masks.

    Parameters
    ----------
    qc
        Stage 01's field table (``images.parquet``).
    raw
        The raw folder, with the true masks in ``raw.masks/<plate>/<file name>``.
    illumination
        Plate -> illumination function file (:func:`image2reg.images.pipeline.prepare_illumination`).
    params
        Stage 01's params (the segmenter; IoU threshold 0.5).
    seed
        Seed of the draw of fields.
    n
        Fields to score (fewer when fewer pass QC).
    folder
        The folder of ``qc`` (stage 01's), when its ``image_path`` values are stored relative to it.

    Returns
    -------
    SegmentationScore or None
        None without a synthetic world, or when the segmentation is the supplied masks themselves.
    """
    if not raw.world.is_file() or params.segmentation.method == "masks":
        return None
    scored = _passing_sample(qc, folder, n, seed)
    truth_paths = [_truth_mask(raw, plate, path) for plate, path in zip(scored["Metadata_Plate"], scored["image_path"])]
    scores = evaluate_segmentation(scored, truth_paths, illumination, params)
    tp, fp, fn = scores["tp"].sum(), scores["fp"].sum(), scores["fn"].sum()
    return SegmentationScore(scores, overall_f1(scores), tp / max(tp + fp, 1), tp / max(tp + fn, 1),
                             scores["mean_iou"].mean())


def largest_conditions(nuclei: pd.DataFrame, n: int = 12, column: str = "Metadata_Gene") -> list[str]:
    """The ``n`` conditions with the most nuclei, most first.

    Parameters
    ----------
    nuclei
        Stage 01's nucleus table.
    n
        How many conditions.
    column
        The condition column.

    Returns
    -------
    list of str
    """
    return nuclei[column].value_counts().index[:n].tolist()


def images_summary(preprocessing: dict, segmentation: SegmentationScore | None) -> dict:
    """Stage 01's ``summary.json``: the counts of :func:`~image2reg.images.pipeline.preprocess_images` (without
    its wall-clock ``seconds``, which no rerun repeats) and, where true masks exist, the segmentation scores.

    Parameters
    ----------
    preprocessing
        What :func:`~image2reg.images.pipeline.preprocess_images` returned.
    segmentation
        :func:`score_segmentation`'s result, or None (real data).
    """
    summary = {key: value for key, value in preprocessing.items() if key != "seconds"}
    if segmentation is not None:
        summary.update(segmentation_fields=len(segmentation.scores), segmentation_f1=segmentation.f1,
                       segmentation_precision=segmentation.precision, segmentation_recall=segmentation.recall,
                       segmentation_mean_iou=segmentation.mean_iou)
    return summary


def _passing_sample(qc: pd.DataFrame, folder: str | Path | None, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` random QC-passing fields of ``qc``, their ``image_path`` as the files it names (paths stored
    relative to ``folder``)."""
    passing = qc[qc["QC_pass"]].sample(min(n, int(qc["QC_pass"].sum())), random_state=seed)
    if folder is None:
        return passing
    return passing.assign(image_path=[str(stored_path(path, folder)) for path in passing["image_path"]])


def _truth_mask(raw: RawLayout, plate, image_path: str) -> Path:
    """The synthetic world's true mask of a field: ``raw.masks/<plate>/<file name>``."""
    return raw.masks / str(plate) / Path(image_path).name
