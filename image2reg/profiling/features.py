"""Classical per-nucleus features: what the CNN's embeddings are judged against (method §4.6).

:func:`nucleus_profiles` describes every nucleus of stage 01 by interpretable features; the linear
baseline on them is :func:`image2reg.profiling.baseline.baseline_classifier`.

The features (all float32) come in four groups, named by prefix:

- ``shape_*``: the table's shape measures ``area``, ``bbox_area``, ``solidity``, ``aspect_ratio``,
  ``eccentricity`` and ``log_area`` (natural logarithm of the area);
- ``intensity_*``: the table's ``mean_intensity`` and ``integrated_intensity`` (absolute
  brightness in the corrected field), and from the crop, inside its foreground mask, ``crop_mean``,
  ``crop_std``, ``crop_p10``, ``crop_p50``, ``crop_p90`` (in units of the nucleus's brightest
  pixel, as crops are scaled by it) and ``foreground_fraction`` (mask pixels / crop pixels);
- ``texture_*``: gray-level co-occurrence properties ``contrast``, ``homogeneity``, ``energy``,
  ``correlation``, ``dissimilarity`` at distances 1 and 3 (suffix ``_d1``, ``_d3``), averaged
  over the angles 0, π/4, π/2, 3π/4, of the mask's pixels quantised to 32 levels; and the
  normalised histogram ``lbp_0`` … ``lbp_9`` of the mask's rotation-invariant uniform local binary
  patterns (8 neighbours at radius 1);
- ``radial_*``: ``ring0`` … ``ring3``, the mean intensity of the mask's pixels in four concentric
  rings around the crop centre, over the mean of all mask pixels. The rings are scaled to the
  nucleus: ring ``k`` holds distances from the centre in [k, k + 1) · r/4, with ``r`` the radius
  of the disc of the mask's area, and the last ring everything beyond 3r/4; so a uniform nucleus
  gives about 1 everywhere and a nucleus brighter at its centre decreasing values.

The foreground mask of a crop is the pixels above its Otsu threshold
(:func:`skimage.filters.threshold_otsu`). Stage 01's crops are 0 outside the nucleus, so the mask is
usually the whole nucleus; a nucleus with a dim part may lose it. A constant crop has no Otsu
threshold: its mask is every pixel if it is non-zero, none if it is all 0. Crop features of a crop
with an empty mask are NaN (``foreground_fraction`` is 0), as are the texture features of a
distance at which some angle has no pair of mask pixels and a ring holding no mask pixel.

The features are computed for a block of crops at once, from the list of their mask pixels. The
co-occurrence matrices are counted from the pairs of mask pixels: they are
:func:`skimage.feature.graycomatrix` (symmetric) of each crop with the pairs that leave the mask
dropped, and the properties are those of :func:`skimage.feature.graycoprops`. The local binary
patterns repeat the float64 arithmetic of :func:`skimage.feature.local_binary_pattern` at the mask
pixels, so they equal its output there (the tests check both against scikit-image). The 14,613
crops of the demo take about 4 s on one core.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu
from tqdm import tqdm

from image2reg.cnn.datasets import load_crops
from image2reg.layout import artifact_name

logger = logging.getLogger("image2reg")

#: Table columns copied as shape features (``shape_<name>``); ``shape_log_area`` is added.
SHAPE_COLUMNS = ("area", "bbox_area", "solidity", "aspect_ratio", "eccentricity")
#: Table columns copied as intensity features (``intensity_<name>``).
INTENSITY_COLUMNS = ("mean_intensity", "integrated_intensity")
#: The table column giving each nucleus's row of the crop array.
CROP_INDEX = "crop_index"

PERCENTILES = (10, 50, 90)
GLCM_LEVELS = 32
GLCM_DISTANCES = (1, 3)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPERTIES = ("contrast", "homogeneity", "energy", "correlation", "dissimilarity")
LBP_POINTS, LBP_RADIUS = 8, 1
LBP_BINS = LBP_POINTS + 2  # "uniform" patterns take the values 0 … P + 1
N_RINGS = 4

_BLOCK = 512  # crops processed together: bounds the float64 temporaries to a few tens of MB
_PAD = max(max(GLCM_DISTANCES), int(np.ceil(LBP_RADIUS)))  # zero border around each crop


class _Pixels(NamedTuple):
    """The foreground pixels of a block of crops, in (crop, row, column) order."""

    ids: np.ndarray  # crop of each pixel
    rows: np.ndarray
    cols: np.ndarray
    flat: np.ndarray  # index into ``padded`` / ``padded_mask``
    values: np.ndarray  # uint8 intensity
    counts: np.ndarray  # pixels per crop
    padded: np.ndarray  # the crops with a border of _PAD zeros, flattened (uint8)
    padded_mask: np.ndarray  # their masks, likewise (bool)
    width: int  # side of a padded crop


def _feature_names() -> list[str]:
    """The columns of :func:`nucleus_profiles`, in order."""
    names = [f"shape_{name}" for name in SHAPE_COLUMNS] + ["shape_log_area"]
    names += [f"intensity_{name}" for name in INTENSITY_COLUMNS]
    names += ["intensity_crop_mean", "intensity_crop_std"]
    names += [f"intensity_crop_p{q}" for q in PERCENTILES] + ["intensity_foreground_fraction"]
    names += [f"texture_{prop}_d{d}" for d in GLCM_DISTANCES for prop in GLCM_PROPERTIES]
    names += [f"texture_lbp_{k}" for k in range(LBP_BINS)]
    names += [f"radial_ring{k}" for k in range(N_RINGS)]
    return names


def nucleus_profiles(
    images_dir: str | Path,
    nuclei: pd.DataFrame | None = None,
    *,
    progress_bar: bool = False,
    chunk: int = 4096,
) -> pd.DataFrame:
    """Classical features of every nucleus: shape, intensity, texture and radial distribution.

    The features (their groups, names and foreground mask) are described in the module docstring.
    Crops are read ``chunk`` nuclei at a time, in the table's order. The result depends on nothing
    but the inputs (not on ``chunk``).

    Parameters
    ----------
    images_dir
        Stage 01's output folder, holding ``nuclei.zarr`` (and ``nuclei.parquet``).
    nuclei
        Rows of the nucleus table to describe (any subset, any index); by default all of
        ``images_dir / "nuclei.parquet"``. It needs the columns ``crop_index``,
        :data:`SHAPE_COLUMNS` and :data:`INTENSITY_COLUMNS`.
    progress_bar
        Show a tqdm bar over the chunks.
    chunk
        Number of nuclei read and processed together.

    Returns
    -------
    pandas.DataFrame
        One float32 row per nucleus, indexed like ``nuclei``, with the 38 feature columns
        (``shape_*``, ``intensity_*``, ``texture_*``, ``radial_*``, in this order).

    Raises
    ------
    ValueError
        If the table lacks columns (named in the message) or ``chunk`` is not positive.
    """
    images_dir = Path(images_dir)
    if nuclei is None:
        nuclei = pd.read_parquet(images_dir / artifact_name("images", "nuclei"))
    missing = [c for c in (CROP_INDEX, *SHAPE_COLUMNS, *INTENSITY_COLUMNS) if c not in nuclei.columns]
    if missing:
        raise ValueError(f"the nucleus table lacks the columns {missing} needed for the profiles")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")

    table = pd.DataFrame(index=nuclei.index)
    for name in SHAPE_COLUMNS:
        table[f"shape_{name}"] = nuclei[name].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["shape_log_area"] = np.log(nuclei["area"].to_numpy(np.float64))
    for name in INTENSITY_COLUMNS:
        table[f"intensity_{name}"] = nuclei[name].to_numpy(np.float64)

    crop_indices = nuclei[CROP_INDEX].to_numpy(np.int64)
    parts = []
    starts = range(0, len(crop_indices), chunk)
    for start in tqdm(starts, desc="nucleus profiles", unit="chunk", disable=not progress_bar):
        crops = load_crops(images_dir, crop_indices[start:start + chunk]).numpy()[:, 0]
        parts.append(_crop_features(crops))
    crop_table = pd.concat(parts, ignore_index=True) if parts else _crop_features(np.zeros((0, 1, 1), np.uint8))
    crop_table.index = nuclei.index
    profiles = pd.concat([table, crop_table], axis=1)[_feature_names()].astype(np.float32)
    logger.info("profiles of %d nuclei: %d features", len(profiles), profiles.shape[1])
    return profiles


def _crop_features(crops: np.ndarray) -> pd.DataFrame:
    """The crop-based features (``intensity_crop_*``, ``texture_*``, ``radial_*``) of uint8 crops.

    Parameters
    ----------
    crops
        uint8, N × size × size, as stored by stage 01.

    Returns
    -------
    pandas.DataFrame
        float64, one row per crop (a RangeIndex), the crop-based columns of :func:`_feature_names`.
    """
    crops = np.asarray(crops)
    if crops.ndim != 3 or crops.dtype != np.uint8:
        raise ValueError(f"crops must be a uint8 array N × size × size, got {crops.dtype} {crops.shape}")
    blocks = [_block_features(crops[start:start + _BLOCK]) for start in range(0, len(crops), _BLOCK)]
    if not blocks:
        blocks = [_block_features(crops)]
    return pd.DataFrame({name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]})


def _foreground_masks(crops: np.ndarray) -> np.ndarray:
    """The pixels of each crop above its Otsu threshold; for a constant crop, all if non-zero, else none.

    Parameters
    ----------
    crops
        uint8, N × size × size.

    Returns
    -------
    numpy.ndarray
        bool, N × size × size.
    """
    masks = np.empty(crops.shape, dtype=bool)
    for k, crop in enumerate(crops):
        low, high = crop.min(), crop.max()
        if low == high:
            masks[k] = high > 0
        else:
            masks[k] = crop > threshold_otsu(crop)
    return masks


def _block_features(crops: np.ndarray) -> dict[str, np.ndarray]:
    """All crop features of a block of crops."""
    n, size = len(crops), crops.shape[-1]
    masks = _foreground_masks(crops)
    ids, rows, cols = np.nonzero(masks)
    values = crops[ids, rows, cols]
    counts = np.bincount(ids, minlength=n)
    # The crops and masks with a border of _PAD zeros, flattened: a neighbour of a mask pixel at a
    # (row, column) offset is then at a fixed offset of its flat index, inside the array.
    width = size + 2 * _PAD
    padded = np.zeros((n, width, width), dtype=np.uint8)
    padded[:, _PAD:-_PAD, _PAD:-_PAD] = crops
    padded_mask = np.zeros((n, width, width), dtype=bool)
    padded_mask[:, _PAD:-_PAD, _PAD:-_PAD] = masks
    flat = (ids * width + rows + _PAD) * width + cols + _PAD
    pixels = _Pixels(ids, rows, cols, flat, values, counts, padded.ravel(), padded_mask.ravel(), width)
    out: dict[str, np.ndarray] = {}
    out.update(_intensity_features(pixels))
    out["intensity_foreground_fraction"] = counts / float(size * size)
    out.update(_glcm_features(pixels))
    out.update(_lbp_features(pixels))
    out.update(_radial_features(pixels, size))
    return out


def _intensity_features(pixels: _Pixels) -> dict[str, np.ndarray]:
    """Mean, standard deviation and percentiles of the mask's pixels, from per-crop histograms.

    The percentiles are those of :func:`numpy.percentile` (linear interpolation between the
    sorted values), read off the cumulative histogram.
    """
    n, counts = len(pixels.counts), pixels.counts
    hist = np.bincount(pixels.ids * 256 + pixels.values, minlength=n * 256).reshape(n, 256)
    levels = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = hist @ levels / counts
        std = np.sqrt(np.einsum("nk,nk->n", hist, (levels[None] - mean[:, None]) ** 2) / counts)
    out = {"intensity_crop_mean": mean / 255.0, "intensity_crop_std": std / 255.0}
    cumulative = np.cumsum(hist, axis=1)
    last = np.maximum(counts - 1, 0)
    for q in PERCENTILES:
        position = last * (q / 100.0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, last)
        low = (cumulative <= below[:, None]).sum(axis=1)  # the value of sorted element ``below``
        high = (cumulative <= above[:, None]).sum(axis=1)
        value = low + (position - below) * (high - low)
        out[f"intensity_crop_p{q}"] = np.where(counts > 0, value / 255.0, np.nan)
    return out


def _glcm_offsets() -> list[tuple[int, int]]:
    """(row, column) offsets of every (distance, angle), distance-major, as ``graycomatrix`` rounds them."""
    return [(int(np.round(np.sin(a) * d)), int(np.round(np.cos(a) * d))) for d in GLCM_DISTANCES for a in GLCM_ANGLES]


def _glcm_features(pixels: _Pixels) -> dict[str, np.ndarray]:
    """Co-occurrence properties of the mask's pixels (32 levels), per distance, averaged over the angles.

    Equal to ``graycoprops(graycomatrix(q, distances, angles, levels, symmetric=True))`` on each
    crop with the pixel pairs that leave the mask dropped (``q`` = crop // 8). A distance at which
    some angle has no pair of mask pixels gives NaN.
    """
    n = len(pixels.counts)
    step = 256 // GLCM_LEVELS
    first_level = pixels.values.astype(np.int64) // step
    i, j = np.ogrid[:GLCM_LEVELS, :GLCM_LEVELS]
    diff = (i - j).astype(np.float64)
    weights = {"contrast": diff**2, "dissimilarity": np.abs(diff), "homogeneity": 1.0 / (1.0 + diff**2)}
    grid = np.arange(GLCM_LEVELS, dtype=np.float64)
    sums = {(prop, d): np.zeros(n) for prop in GLCM_PROPERTIES for d in GLCM_DISTANCES}
    empty = {d: np.zeros(n, dtype=bool) for d in GLCM_DISTANCES}
    for index, (dr, dc) in enumerate(_glcm_offsets()):
        d = GLCM_DISTANCES[index // len(GLCM_ANGLES)]
        neighbour = pixels.flat + dr * pixels.width + dc
        both = pixels.padded_mask[neighbour]
        second = pixels.padded[neighbour[both]].astype(np.int64) // step
        slots = (pixels.ids[both] * GLCM_LEVELS + first_level[both]) * GLCM_LEVELS + second
        glcm = np.bincount(slots, minlength=n * GLCM_LEVELS**2).reshape(n, GLCM_LEVELS, GLCM_LEVELS)
        glcm = glcm + glcm.transpose(0, 2, 1)  # symmetric
        total = glcm.sum(axis=(1, 2))
        empty[d] |= total == 0
        glcm = glcm / np.where(total == 0, 1, total)[:, None, None]
        for prop, weight in weights.items():
            sums[prop, d] += np.einsum("nij,ij->n", glcm, weight)
        sums["energy", d] += np.sqrt(np.einsum("nij,nij->n", glcm, glcm))
        marginal = glcm.sum(axis=2)  # = glcm.sum(axis=1): the matrix is symmetric
        mean = marginal @ grid
        centred = grid[None] - mean[:, None]
        std = np.sqrt(np.einsum("ni,ni->n", marginal, centred**2))
        cov = np.einsum("nij,ni,nj->n", glcm, centred, centred)
        flat = std < 1e-15
        sums["correlation", d] += np.where(flat, 1.0, cov / np.where(flat, 1.0, std * std))
    out = {}
    for d in GLCM_DISTANCES:
        for prop in GLCM_PROPERTIES:
            out[f"texture_{prop}_d{d}"] = np.where(empty[d], np.nan, sums[prop, d] / len(GLCM_ANGLES))
    return out


def _lbp_features(pixels: _Pixels) -> dict[str, np.ndarray]:
    """Normalised histogram of the uniform local binary patterns of the mask's pixels.

    The patterns are those of ``local_binary_pattern(crop, 8, 1, "uniform")``, computed at the
    mask's pixels only, with its arithmetic: the neighbours at radius 1 are bilinearly interpolated
    in float64 in the same order of operations (pixels outside the crop count as 0), and the
    "uniform" count of 0–1 changes runs over the open chain of neighbours, as scikit-image does.
    """
    n = len(pixels.counts)
    centre = pixels.values.astype(np.float64)
    rows, cols = pixels.rows.astype(np.float64), pixels.cols.astype(np.float64)
    angles = 2 * np.pi * np.arange(LBP_POINTS, dtype=np.float64) / LBP_POINTS
    row_offsets = np.round(-LBP_RADIUS * np.sin(angles), 5)
    col_offsets = np.round(LBP_RADIUS * np.cos(angles), 5)
    signs = np.empty((LBP_POINTS, len(centre)), dtype=np.int8)

    def at(row_step: int, col_step: int) -> np.ndarray:
        return pixels.padded[pixels.flat + row_step * pixels.width + col_step].astype(np.float64)

    for point, (row_offset, col_offset) in enumerate(zip(row_offsets, col_offsets)):
        r, c = rows + row_offset, cols + col_offset
        dr, dc = r - np.floor(r), c - np.floor(c)
        # the corners are at the same integer offsets from every pixel (the offsets have 5 decimals)
        low_r, high_r = int(np.floor(row_offset)), int(np.ceil(row_offset))
        low_c, high_c = int(np.floor(col_offset)), int(np.ceil(col_offset))
        if low_r == high_r and low_c == high_c:  # on the grid: dr = dc = 0, the interpolation is exact
            value = at(low_r, low_c)
        else:
            top = (1 - dc) * at(low_r, low_c) + dc * at(low_r, high_c)
            bottom = (1 - dc) * at(high_r, low_c) + dc * at(high_r, high_c)
            value = (1 - dr) * top + dr * bottom
        signs[point] = value - centre >= 0
    changes = (signs[:-1] != signs[1:]).sum(axis=0)
    codes = np.where(changes <= 2, signs.sum(axis=0, dtype=np.int64), LBP_POINTS + 1)
    hist = np.bincount(pixels.ids * LBP_BINS + codes, minlength=n * LBP_BINS).reshape(n, LBP_BINS)
    with np.errstate(divide="ignore", invalid="ignore"):
        hist = hist / pixels.counts[:, None]
    return {f"texture_lbp_{k}": hist[:, k] for k in range(LBP_BINS)}


def _radial_features(pixels: _Pixels, size: int) -> dict[str, np.ndarray]:
    """Mean intensity of the mask's pixels per ring around the crop centre, over the mask's mean."""
    ids, rows, cols, values, counts = pixels.ids, pixels.rows, pixels.cols, pixels.values, pixels.counts
    n = len(counts)
    centre = (size - 1) / 2.0
    distance = np.hypot(rows - centre, cols - centre)
    radius = np.sqrt(counts / np.pi)  # of the disc with the mask's area
    with np.errstate(divide="ignore", invalid="ignore"):
        ring = np.minimum(np.floor(N_RINGS * distance / radius[ids]), N_RINGS - 1).astype(np.int64)
        slots = ids * N_RINGS + ring
        ring_sum = np.bincount(slots, weights=values, minlength=n * N_RINGS).reshape(n, N_RINGS)
        ring_count = np.bincount(slots, minlength=n * N_RINGS).reshape(n, N_RINGS)
        overall = ring_sum.sum(axis=1) / counts
        profile = ring_sum / ring_count / overall[:, None]
    return {f"radial_ring{k}": profile[:, k] for k in range(N_RINGS)}
