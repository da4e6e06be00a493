"""Nuclear segmentation: a classical segmenter, supplied masks, cellpose, and the object-level metric.

Every segmenter maps a field of view (2-D, any intensity scale) to an int32 label image: 0 is
background and the nuclei are numbered 1..n. :func:`make_segmenter` picks one from params:

- ``"classical"``: :func:`segment_nuclei`, scikit-image and SciPy only;
- ``"masks"``: label masks made elsewhere (the reference implementation used a UNet), one TIFF per
  field named exactly like the image, under ``raw/masks/<plate>/<image file name>``, read with
  :func:`read_mask`;
- ``"cellpose"``: a cellpose model from a local weights file (:func:`cellpose_segmenter`; cellpose
  is an optional dependency and nothing is downloaded at run time).

:func:`match_labels` scores a segmentation against ground truth object by object (F1 at an IoU
threshold) and :func:`pool_matches` adds such scores up over fields: the numbers every report uses.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import linear_sum_assignment
from skimage import feature, filters, segmentation

from image2reg.images.io import read_tiff

logger = logging.getLogger("image2reg")

#: A segmenter: (field of view, its supplied mask file or None) -> int32 labels.
Segmenter = Callable[[np.ndarray, str | Path | None], np.ndarray]

# Intensities are scaled between these percentiles of the field, so that 16-bit fields of any
# exposure and illumination-corrected float fields look alike to every later step.
_PERCENTILES = (1.0, 99.8)
# The first, permissive foreground takes everything above this fraction of the way from the
# background level to Otsu's threshold: Otsu alone cuts dim nuclei when a few bright (mitotic,
# apoptotic) nuclei pull it up.
_LOW_FRACTION = 0.5
# Each nucleus is then cut where its intensity falls to half of its plateau above background: a
# blurred edge crosses half height at the true edge, and a bright nucleus loses its glow.
_EDGE_FRACTION = 0.5
_PLATEAU_QUANTILE = 0.9
# Splitting touching nuclei: the distance transform is smoothed by this fraction of the expected
# diameter (a ragged outline adds no maxima), and its maxima must lie this many diameters apart
# (one marker per nucleus, even an elongated one; two for touching nuclei, about a diameter apart).
_DISTANCE_SMOOTHING = 1 / 24
_MARKER_SPACING = 0.3
# A field whose Otsu threshold, or an object whose plateau, is within this many noise SDs of the
# background holds no nuclei: Otsu splits even pure noise in two.
_MIN_SNR = 3.0
_NOISE_SCALE = 4.0


# ---------------------------------------------------------------------------------------------
# The classical segmenter
# ---------------------------------------------------------------------------------------------
def segment_nuclei(
    image: np.ndarray,
    *,
    nucleus_diameter: float = 24.0,
    smoothing_sigma: float = 1.0,
    threshold: Literal["otsu", "local"] = "otsu",
    min_area: int | None = None,
    split_touching: bool = True,
) -> np.ndarray:
    """Segment the nuclei of a DNA-stained field of view (Hoechst, DAPI).

    1. Scale intensities between the field's 1st and 99.8th percentiles; smooth (Gaussian).
    2. A permissive foreground, halfway between the background level and Otsu's threshold, so that
       dim nuclei are found whole; holes filled, objects smaller than ``min_area`` removed.
    3. Split it into nuclei as in step 5, then cut each nucleus where its intensity falls to half of
       its own plateau (90th percentile) above background: dim nuclei keep their full outline,
       bright ones lose their out-of-focus glow, touching nuclei part along the dimmer seam.
    4. Fill holes, remove objects smaller than ``min_area``.
    5. Split touching nuclei: watershed of the smoothed distance transform from its maxima, which
       must lie at least 0.3 diameters apart.
    6. Drop objects whose plateau is within 3 noise SDs of the background. A field whose Otsu
       threshold is that close to the background (noise, an empty well) has no nuclei at all.

    The background level is the field's median, so nuclei must cover less than half of the field,
    as in screening images.

    Parameters
    ----------
    image
        2-D field of view, any numeric dtype and scale (uint16 camera counts, float after
        illumination correction). Nuclei are bright on a dark background.
    nucleus_diameter
        Typical nucleus diameter in pixels. Scales the smoothing of the distance transform, the
        minimum distance between markers and the default ``min_area``.
    smoothing_sigma
        SD (px) of the Gaussian applied before thresholding; 0 disables it.
    threshold
        ``"otsu"``: one threshold for the whole field (fields corrected for illumination).
        ``"local"``: first subtract a smooth background (a quadratic surface fitted to the
        background pixels), for fields with uneven illumination.
    min_area
        Smallest nucleus kept (px); default a tenth of a disc of ``nucleus_diameter``.
    split_touching
        Split touching nuclei; if False, each connected component is one nucleus.

    Returns
    -------
    numpy.ndarray
        int32 labels of the image's shape: 0 background, nuclei 1..n. All zeros for a field
        without nuclei (constant, or noise only).
    """
    if image.ndim != 2:
        raise ValueError(f"segment_nuclei expects a 2-D image, got shape {image.shape}")
    if nucleus_diameter <= 0:
        raise ValueError(f"nucleus_diameter must be positive, got {nucleus_diameter}")
    if threshold not in ("otsu", "local"):
        raise ValueError(f"threshold must be 'otsu' or 'local', got {threshold!r}")
    empty = np.zeros(image.shape, np.int32)
    scaled = _scale_intensity(image)
    if scaled is None:
        return empty
    signal = ndimage.gaussian_filter(scaled, smoothing_sigma) if smoothing_sigma > 0 else scaled
    if threshold == "local":
        signal = signal - _smooth_background(signal)
    if min_area is None:
        min_area = int(0.1 * np.pi * nucleus_diameter**2 / 4)

    background, noise = _background_level(signal)
    otsu = filters.threshold_otsu(signal)
    if otsu - background < _MIN_SNR * noise:
        logger.debug("no nuclei: Otsu's threshold is within %g noise SDs of the background", _MIN_SNR)
        return empty
    split = _split if split_touching else _components
    mask = _fill_and_sieve(signal > background + _LOW_FRACTION * (otsu - background), min_area)
    regions = split(mask, nucleus_diameter)
    edge = background + _EDGE_FRACTION * (_label_quantile(signal, regions, _PLATEAU_QUANTILE) - background)
    mask = _fill_and_sieve((regions > 0) & (signal > edge[regions]), min_area)
    labels = split(mask, nucleus_diameter)

    faint = _label_quantile(signal, labels, _PLATEAU_QUANTILE) - background < _MIN_SNR * noise
    small = np.bincount(labels.ravel(), minlength=faint.size) < min_area
    drop = faint | small
    drop[0] = False
    labels[drop[labels]] = 0
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int32, copy=False)


def _scale_intensity(image: np.ndarray) -> np.ndarray | None:
    """``image`` scaled so that its 1st / 99.8th percentiles become 0 / 1 (float32); None if flat."""
    values = np.asarray(image, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("the image has NaN or infinite pixels (an illumination function with zeros?)")
    low, high = np.percentile(values, _PERCENTILES)
    if not high > low:  # nuclei cover less than the top percentiles: scale by the maximum instead
        high = values.max()
        if not high > low:
            return None
    return (values - low) / (high - low)


def _smooth_background(signal: np.ndarray) -> np.ndarray:
    """A quadratic surface fitted to the background (pixels below Otsu's threshold of the residual).

    Illumination falls off smoothly (vignetting, a tilt); a global low-order fit follows it up to
    the field's border, where local filters (grey opening, rolling ball) are biased by a gradient.
    """
    height, width = signal.shape
    step = max(1, min(height, width) // 128)  # ~16k sample pixels are plenty for six coefficients
    sample = signal[::step, ::step]
    terms = _quadratic_terms(np.arange(0, height, step) / height - 0.5, np.arange(0, width, step) / width - 0.5)
    design = np.stack([np.broadcast_to(term, sample.shape).ravel() for term in terms], axis=1)
    values = sample.ravel()
    coefficients = np.zeros(len(terms))
    for _ in range(2):  # the second fit sees the background of a field already levelled once
        residual = values - design @ coefficients
        below = residual < filters.threshold_otsu(residual)
        if np.count_nonzero(below) < len(terms):
            break
        coefficients = np.linalg.lstsq(design[below], values[below], rcond=None)[0]
    terms = _quadratic_terms(np.arange(height) / height - 0.5, np.arange(width) / width - 0.5)
    return sum(c * term for c, term in zip(coefficients, terms)).astype(np.float32)


def _quadratic_terms(y: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """1, x, y, x², xy, y² on the grid of row coordinates ``y`` and column coordinates ``x`` (broadcastable)."""
    y, x = y[:, None], x[None, :]
    return [np.ones((1, 1)), x, y, x * x, x * y, y * y]


def _background_level(signal: np.ndarray) -> tuple[float, float]:
    """Level and noise SD of the background.

    The level is the median, a background pixel when nuclei cover less than half of the field. The
    noise is the robust SD (1.4826 MAD) of the detail finer than ``_NOISE_SCALE``: unlike the spread
    of the intensities, it is not inflated by an illumination gradient or by the nuclei.
    """
    detail = signal - ndimage.gaussian_filter(signal, _NOISE_SCALE)
    noise = 1.4826 * np.median(np.abs(detail - np.median(detail)))
    return float(np.median(signal)), float(max(noise, 1e-6))


def _fill_and_sieve(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` with holes filled and connected components smaller than ``min_area`` removed."""
    mask = ndimage.binary_fill_holes(mask)
    components, _ = ndimage.label(mask)
    return (np.bincount(components.ravel()) >= min_area)[components] & mask


def _components(mask: np.ndarray, diameter: float) -> np.ndarray:
    return ndimage.label(mask)[0]


def _split(mask: np.ndarray, diameter: float) -> np.ndarray:
    """Marker-controlled watershed of ``mask`` on its smoothed distance transform."""
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), max(_DISTANCE_SMOOTHING * diameter, 0.5))
    components = _components(mask, diameter)
    peaks = feature.peak_local_max(distance, min_distance=max(1, round(_MARKER_SPACING * diameter)),
                                   labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    orphans, _ = ndimage.label(mask & (labels == 0))
    # a component whose distance transform is flat has no peak; it is one nucleus
    return np.where(orphans > 0, orphans + labels.max(), labels)


def _label_quantile(values: np.ndarray, labels: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of ``values`` in each label (indexed by label; 0 where a label is absent)."""
    result = np.zeros(int(labels.max()) + 1, np.float64)
    inside = labels.ravel() > 0
    if not inside.any():
        return result
    owner, inner = labels.ravel()[inside], values.ravel()[inside]
    order = np.lexsort((inner, owner))
    owner, inner = owner[order], inner[order]
    present, start, count = np.unique(owner, return_index=True, return_counts=True)
    result[present] = inner[start + np.floor(q * (count - 1)).astype(np.int64)]
    return result


# ---------------------------------------------------------------------------------------------
# Object-level evaluation
# ---------------------------------------------------------------------------------------------
def match_labels(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """Match predicted to true objects one to one and score the segmentation.

    A pair can match when its intersection over union (IoU) is at least ``iou_threshold``. Above
    0.5 each object has at most one such partner, so the matching is unique; at 0.5 and below,
    conflicting candidates are resolved by the Hungarian algorithm (most matches, then the largest
    total IoU).

    Parameters
    ----------
    truth, pred
        Label images of one shape (0 = background; any non-negative integer labels, not
        necessarily consecutive).
    iou_threshold
        Minimum IoU of a match, in (0, 1].

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``tp`` (matches), ``fp`` (unmatched predictions), ``fn`` (unmatched
        true objects), ``precision`` = tp / n_pred, ``recall`` = tp / n_true, ``f1`` =
        2 tp / (n_true + n_pred), and ``mean_iou`` of the matches (NaN without matches). A ratio
        whose denominator is 0 is 1.0: nothing predicted and nothing to find is perfect.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in shape: {truth.shape} vs {pred.shape}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    t, p = _as_labels(truth, "truth").ravel(), _as_labels(pred, "prediction").ravel()
    true_area = np.bincount(t)
    pred_area = np.bincount(p)
    n_true, n_pred = int(np.count_nonzero(true_area[1:])), int(np.count_nonzero(pred_area[1:]))

    overlap = sparse.coo_matrix((np.ones(t.size, np.int64), (t, p)), shape=(true_area.size, pred_area.size))
    overlap = overlap.tocsr().tocoo()  # sums the pixel counts of each (true, pred) pair
    both = (overlap.row > 0) & (overlap.col > 0)
    rows, cols, shared = overlap.row[both], overlap.col[both], overlap.data[both]
    iou = shared / (true_area[rows] + pred_area[cols] - shared)
    candidate = iou >= iou_threshold
    rows, cols, iou = _one_to_one(rows[candidate], cols[candidate], iou[candidate])

    return _scores(n_true, n_pred, len(iou), float(iou.sum()))


def pool_matches(scores: Iterable[dict[str, float]]) -> dict[str, float]:
    """Scores of :func:`match_labels` over many fields added up: F1 over all objects, not a mean of F1s."""
    scores = list(scores)
    n_true, n_pred, tp = (sum(int(s[key]) for s in scores) for key in ("n_true", "n_pred", "tp"))
    return _scores(n_true, n_pred, tp, sum(s["mean_iou"] * s["tp"] for s in scores if s["tp"]))


def _scores(n_true: int, n_pred: int, tp: int, iou_sum: float) -> dict[str, float]:
    return {
        "n_true": n_true, "n_pred": n_pred, "tp": tp, "fp": n_pred - tp, "fn": n_true - tp,
        "precision": tp / n_pred if n_pred else 1.0,
        "recall": tp / n_true if n_true else 1.0,
        "f1": 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0,
        "mean_iou": iou_sum / tp if tp else float("nan"),
    }


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} is not an integer label image (dtype {labels.dtype})")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} has negative labels")
    return labels.astype(np.int64, copy=False)


def _one_to_one(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs reduced to a one-to-one matching."""
    if len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols):
        return rows, cols, iou
    row_ids, row_index = np.unique(rows, return_inverse=True)
    col_ids, col_index = np.unique(cols, return_inverse=True)
    # every match outweighs any sum of IoUs, so the most matches come first, then the best IoU
    weight = np.zeros((len(row_ids), len(col_ids)))
    weight[row_index, col_index] = len(iou) + iou
    chosen_rows, chosen_cols = linear_sum_assignment(weight, maximize=True)
    real = weight[chosen_rows, chosen_cols] > 0
    chosen_rows, chosen_cols = chosen_rows[real], chosen_cols[real]
    return row_ids[chosen_rows], col_ids[chosen_cols], weight[chosen_rows, chosen_cols] - len(iou)


# ---------------------------------------------------------------------------------------------
# Supplied masks and cellpose
# ---------------------------------------------------------------------------------------------
def read_mask(path: str | Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a label mask (TIFF) and number its objects 1..n.

    Parameters
    ----------
    path
        The mask file; for a screen, ``raw/masks/<plate>/<image file name>``.
    shape
        The shape of the field it belongs to; a different shape is an error.

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 = background, objects 1..n in the order of their original labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mask at {path} (supplied masks are named like their image: "
                                "raw/masks/<plate>/<image file name>)")
    labels = read_tiff(path, what="mask")  # a truncated or corrupt mask is an ImageReadError naming it
    if labels.ndim != 2:
        raise ValueError(f"{path} is not a 2-D label image (shape {labels.shape})")
    if labels.dtype == bool:
        raise ValueError(f"{path} is a binary mask, not a label image: touching nuclei cannot be told apart")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path} is not an integer label image (dtype {labels.dtype})")
    if shape is not None and labels.shape != tuple(shape):
        raise ValueError(f"{path}: mask shape {labels.shape} differs from the image's {tuple(shape)}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path} has negative labels")
    relabelled, _, _ = segmentation.relabel_sequential(labels)
    return relabelled.astype(np.int32, copy=False)


def cellpose_segmenter(model_path: str | Path, diameter: float | None = None,
                       gpu: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A cellpose model from a local weights file, as a function image -> int32 labels.

    Parameters
    ----------
    model_path
        The weights file (e.g. a ``nuclei`` or ``cpsam`` model downloaded beforehand on a machine
        with network access); nothing is downloaded here.
    diameter
        Nucleus diameter (px) passed to cellpose; None lets the model estimate it.
    gpu
        Run on a GPU (CUDA or MPS) when cellpose finds one.
    """
    try:
        from cellpose import models
    except ImportError as error:
        raise ImportError("segmentation method 'cellpose' needs the cellpose package, which is not installed: "
                          "pip install cellpose (or use method 'classical' or 'masks')") from error
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"cellpose weights not found at {model_path}: download a model once "
                                "(e.g. cellpose's 'nuclei' or 'cpsam' model) and give its file path as "
                                "segmentation.cellpose_model in the params file")
    model = models.CellposeModel(gpu=gpu, pretrained_model=str(model_path))
    logger.info("cellpose model %s loaded (gpu=%s)", model_path, gpu)

    def segment(image: np.ndarray) -> np.ndarray:
        labels = model.eval(image, diameter=diameter)[0]
        return segmentation.relabel_sequential(np.asarray(labels))[0].astype(np.int32, copy=False)

    return segment


# ---------------------------------------------------------------------------------------------
# Choosing a segmenter from params
# ---------------------------------------------------------------------------------------------
def make_segmenter(method: Literal["classical", "masks", "cellpose"], *, nucleus_diameter: float | None = None,
                   cellpose_model: str | Path | None = None, **options) -> Segmenter:
    """The segmenter named by ``method``, as a function (image, mask path or None) -> int32 labels.

    Parameters
    ----------
    method
        ``"classical"`` (:func:`segment_nuclei`), ``"masks"`` (read the supplied mask, whose path is
        the function's second argument: ``raw/masks/<plate>/<image file name>``) or ``"cellpose"``.
    nucleus_diameter
        Typical nucleus diameter (px), for ``classical`` and ``cellpose``; None keeps their default
        (cellpose then estimates it).
    cellpose_model
        Path of the cellpose weights file; required for ``cellpose``, ignored otherwise.
    **options
        Further keyword arguments of :func:`segment_nuclei` (``classical``) or ``gpu``
        (``cellpose``); checked here, so a typo fails before any field is read.
    """
    if method == "classical":
        if nucleus_diameter is not None:
            options["nucleus_diameter"] = nucleus_diameter
        _check_options(set(inspect.signature(segment_nuclei).parameters) - {"image"}, options, method)
        return functools.partial(_segment_classical, **options)
    if method == "masks":
        _check_options(set(), options, method)
        return _read_supplied_mask
    if method == "cellpose":
        if cellpose_model is None:
            raise ValueError("segmentation method 'cellpose' needs cellpose_model, the path of a weights file")
        _check_options({"gpu"}, options, method)
        return functools.partial(_segment_cellpose, cellpose_segmenter(cellpose_model, nucleus_diameter, **options))
    raise ValueError(f"unknown segmentation method {method!r}; choose 'classical', 'masks' or 'cellpose'")


def _check_options(allowed: set[str], options: dict, method: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"segmentation method {method!r} takes no option {', '.join(unknown)}"
                        + (f" (options: {', '.join(sorted(allowed))})" if allowed else ""))


def _segment_classical(image: np.ndarray, mask_path: str | Path | None = None, **options) -> np.ndarray:
    return segment_nuclei(image, **options)


def _read_supplied_mask(image: np.ndarray, mask_path: str | Path | None = None) -> np.ndarray:
    if mask_path is None:
        raise ValueError("segmentation method 'masks' needs the mask file of each field "
                         "(raw/masks/<plate>/<image file name>)")
    return read_mask(mask_path, shape=image.shape)


def _segment_cellpose(model: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                      mask_path: str | Path | None = None) -> np.ndarray:
    return model(image)


def labels_from_outlines(outlines: np.ndarray) -> np.ndarray:
    """CellProfiler's nucleus outline image (``SaveImages`` of ``OutlineObjects``) as a label image: one label per
    nucleus, its inside plus its outline; the one component around all nuclei is the background."""
    from skimage.segmentation import expand_labels, relabel_sequential

    on_outline = outlines > 0
    inside, _ = ndimage.label(~on_outline)
    sizes = np.bincount(inside.ravel())
    sizes[0] = 0
    inside[inside == np.argmax(sizes)] = 0
    inside, _, _ = relabel_sequential(inside)
    labels = expand_labels(inside, 1)
    labels[~(on_outline | (inside > 0))] = 0
    return labels
