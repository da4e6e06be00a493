"""Single nuclei: shape measures, the reference's shape filters, and fixed-size crops for the CNN.

For each field, :func:`measure_nuclei` turns a label mask into a table, :func:`filter_nuclei` says
which nuclei to drop and why, and :func:`crop_nuclei` cuts the kept ones into 64×64 uint8 crops.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

logger = logging.getLogger("image2reg")

#: Columns of :func:`measure_nuclei` (plus ``mean_intensity`` and ``integrated_intensity`` with an image).
SHAPE_COLUMNS = ["label", "area", "bbox_area", "solidity", "aspect_ratio", "eccentricity", "centroid_y",
                 "centroid_x", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x", "touches_border"]

_PROPERTIES = ("label", "area", "area_bbox", "solidity", "axis_minor_length", "axis_major_length",
               "eccentricity", "centroid", "bbox")


def measure_nuclei(labels: np.ndarray, image: np.ndarray | None = None) -> pd.DataFrame:
    """Shape (and intensity) measures of every labelled nucleus of one field.

    Parameters
    ----------
    labels
        Integer label image, 0 = background.
    image
        The field's intensities (same shape), for the intensity columns.

    Returns
    -------
    pandas.DataFrame
        One row per label, in label order: ``label``, ``area`` (pixels), ``bbox_area`` (bounding box
        height × width), ``solidity`` (area / convex hull area), ``aspect_ratio`` (minor / major axis
        length of the fitted ellipse, in [0, 1]; 1 for a single pixel), ``eccentricity``,
        ``centroid_y``, ``centroid_x``, ``bbox_min_y``, ``bbox_min_x``, ``bbox_max_y``, ``bbox_max_x``
        (max exclusive, so ``labels[min_y:max_y, min_x:max_x]`` is the box), ``touches_border``, and
        with an image ``mean_intensity`` and ``integrated_intensity`` (sum over the nucleus).
    """
    if labels.ndim != 2:
        raise ValueError(f"a label image must be 2-D, got shape {labels.shape}")
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"the image has shape {image.shape} but the labels {labels.shape}")
    properties = _PROPERTIES + (("intensity_mean",) if image is not None else ())
    raw = regionprops_table(labels, intensity_image=image, properties=properties)
    major, minor = raw["axis_major_length"], raw["axis_minor_length"]
    table = pd.DataFrame({
        "label": raw["label"].astype(np.int64),
        "area": raw["area"].astype(np.int64),
        "bbox_area": raw["area_bbox"].astype(np.int64),
        "solidity": raw["solidity"],
        "aspect_ratio": np.divide(minor, major, out=np.ones_like(major), where=major > 0),
        "eccentricity": raw["eccentricity"],
        "centroid_y": raw["centroid-0"],
        "centroid_x": raw["centroid-1"],
        "bbox_min_y": raw["bbox-0"].astype(np.int64),
        "bbox_min_x": raw["bbox-1"].astype(np.int64),
        "bbox_max_y": raw["bbox-2"].astype(np.int64),
        "bbox_max_x": raw["bbox-3"].astype(np.int64),
    })
    table["touches_border"] = ((table["bbox_min_y"] == 0) | (table["bbox_min_x"] == 0)
                               | (table["bbox_max_y"] == labels.shape[0]) | (table["bbox_max_x"] == labels.shape[1]))
    if image is not None:
        table["mean_intensity"] = raw["intensity_mean"]
        table["integrated_intensity"] = raw["intensity_mean"] * table["area"]
    return table


def filter_nuclei(
    table: pd.DataFrame,
    *,
    min_area: float | None = 400,
    max_area: float | None = 4000,
    max_bbox_area: float | None = 4000,
    min_solidity: float | None = 0.1,
    min_aspect_ratio: float | None = 0.1,
    drop_border: bool = True,
) -> pd.Series:
    """Why each nucleus is dropped: the reference's shape filters, plus nuclei cut by the field edge.

    The defaults are the reference's (Rohban and JUMP, in pixels of 20× fields). The reference had no
    border filter (quirk 11); a nucleus cut by the edge is a partial shape, so it is dropped here unless
    ``drop_border=False``. A bound of None switches its rule off; bounds are inclusive (a nucleus of
    area exactly ``min_area`` is kept).

    Parameters
    ----------
    table
        The output of :func:`measure_nuclei`.

    Returns
    -------
    pandas.Series
        str, aligned with ``table``: ``""`` for a kept nucleus, else the first rule it fails, one of
        ``"area<{min_area}"``, ``"area>{max_area}"``, ``"bbox_area>{max_bbox_area}"``,
        ``"solidity<{min_solidity}"``, ``"aspect_ratio<{min_aspect_ratio}"``, ``"touches_border"``.
    """
    rules: list[tuple[str, pd.Series]] = []
    if min_area is not None:
        rules.append((f"area<{min_area:g}", table["area"] < min_area))
    if max_area is not None:
        rules.append((f"area>{max_area:g}", table["area"] > max_area))
    if max_bbox_area is not None:
        rules.append((f"bbox_area>{max_bbox_area:g}", table["bbox_area"] > max_bbox_area))
    if min_solidity is not None:
        rules.append((f"solidity<{min_solidity:g}", table["solidity"] < min_solidity))
    if min_aspect_ratio is not None:
        rules.append((f"aspect_ratio<{min_aspect_ratio:g}", table["aspect_ratio"] < min_aspect_ratio))
    if drop_border:
        rules.append(("touches_border", table["touches_border"]))
    reason = np.full(len(table), "", dtype=object)
    for name, fails in reversed(rules):  # later assignments win, so the first failing rule is kept
        reason[fails.to_numpy(bool)] = name
    return pd.Series(reason, index=table.index, name="drop_reason", dtype=object)


def crop_nuclei(image: np.ndarray, labels: np.ndarray, table: pd.DataFrame, *,
                size: int = 64, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut each nucleus out of its field into a centred, zero-padded ``size``×``size`` uint8 crop.

    Only the nucleus's own pixels are kept: background and other nuclei inside its bounding box are 0.
    The box is placed at offset ``(size − height) // 2``, ``(size − width) // 2`` (centred; an odd
    box in an even canvas sits half a pixel up-left). As in the reference, the masked box (zeros
    outside the nucleus) is min–max scaled, so its minimum is the background 0 and intensities become
    ``round(255 · x / max)`` with ``max`` the nucleus's brightest pixel; nucleus pixels are kept ≥ 1
    so that 0 always means "not this nucleus". Intensity ratios inside the nucleus (rim vs centre,
    foci vs nucleoplasm) survive; absolute brightness lives on in the table's intensity columns.

    With ``scale`` every nucleus is scaled by that one value instead (``round(255 · x / scale)``,
    clipped to [1, 255]): a plate's intensity percentile (:func:`image2reg.images.pipeline.plate_intensity_scales`)
    keeps each nucleus's brightness, i.e. its DNA content, in the crop.

    Parameters
    ----------
    image
        The field (illumination-corrected or raw).
    labels
        Its label image.
    table
        Rows of :func:`measure_nuclei` (``label`` and the ``bbox_*`` columns) for the nuclei to crop.
    size
        Side of the crop; nuclei whose box is larger in either dimension are not cropped (the
        reference dropped them and counted them).
    scale
        The intensity mapped to 255 for every nucleus; None: each nucleus's brightest pixel (the reference).

    Returns
    -------
    crops
        uint8, N × size × size, in the order of ``table``; rows of nuclei that do not fit are all 0.
    fits
        bool, N: whether the nucleus fitted into the crop.
    """
    if image.shape != labels.shape:
        raise ValueError(f"the image has shape {image.shape} but the labels {labels.shape}")
    if scale is not None and not scale > 0:
        raise ValueError(f"the crop intensity scale must be positive, got {scale}")
    boxes = table[["bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]].to_numpy(np.int64)
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    fits = (heights <= size) & (widths <= size)
    crops = np.zeros((len(table), size, size), np.uint8)
    for row in np.flatnonzero(fits):
        y0, x0, y1, x1 = boxes[row]
        inside = labels[y0:y1, x0:x1] == table["label"].iat[row]
        values = image[y0:y1, x0:x1].astype(np.float64)
        high = values[inside].max() if scale is None else scale
        scaled = 255.0 if high <= 0 else np.clip(np.round(255.0 * values / high), 1, 255)
        top, left = (size - heights[row]) // 2, (size - widths[row]) // 2
        crops[row, top:top + heights[row], left:left + widths[row]] = np.where(inside, scaled, 0)
    if not fits.all():
        logger.debug("%d of %d nuclei are larger than %d px and were not cropped", (~fits).sum(), len(fits), size)
    return crops, fits
