"""Illumination correction: estimate a plate's illumination function, apply it, read published ones.

Microscope fields are brighter in the middle than at the edges (vignetting) and the pattern is the same
for every field a plate's acquisition produced. The reference took Rohban's corrected images as
published and divided JUMP images by the published CellProfiler functions (``uint16(img / illum)``);
here the functions can also be estimated in the manner of CellProfiler's CorrectIlluminationCalculate
(one function per plate from all its fields, heavily smoothed), for data that comes without them, like
the demo world.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from scipy import ndimage
from skimage.transform import resize

logger = logging.getLogger("image2reg")

#: The quantile of the estimated function that is scaled to 1 (a robust maximum).
NORMALISATION_QUANTILE = 0.99


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor``×``factor`` blocks; edges are padded by repetition to a whole block."""
    height, width = image.shape
    pad = (-height % factor, -width % factor)
    if any(pad):
        image = np.pad(image, ((0, pad[0]), (0, pad[1])), mode="edge")
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image.astype(np.float32).reshape(h, factor, w, factor).mean(axis=(1, 3), dtype=np.float32)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that keeps gradients at the edges.

    A plain Gaussian with mirrored edges flattens a vignetting slope near the border by about
    slope × sigma; an odd (point-symmetric) reflection continues a linear trend instead.
    """
    pad = int(np.ceil(4 * sigma))
    pad_y, pad_x = min(pad, image.shape[0] - 1), min(pad, image.shape[1] - 1)
    padded = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x)), mode="reflect", reflect_type="odd")
    smoothed = ndimage.gaussian_filter(padded, sigma, mode="nearest")
    return smoothed[pad_y:pad_y + image.shape[0], pad_x:pad_x + image.shape[1]]


def estimate_illumination(
    images: Iterable[np.ndarray],
    *,
    smoothing_sigma: float | None = None,
    downsample: int = 4,
    statistic: Literal["median", "mean"] = "median",
) -> np.ndarray:
    """Estimate one plate's illumination function from its fields of view.

    The fields are reduced to ``downsample``-fold block means and divided by their own median (so an
    over-exposed field weighs no more than a normal one: only the shape matters), projected pixel-wise
    over all fields (median or mean), smoothed with a wide Gaussian, upsampled back to full size and
    scaled so that the 99th percentile is 1 (correction then keeps intensities where the field is
    brightest). CellProfiler's Cell Painting pipelines average the fields and smooth with a median
    filter; the median projection here is the robust counterpart and needs no filter size.

    Nothing is masked. Nuclei sit at random places, so any one pixel lies in a nucleus in only a
    minority of fields (the confluence, typically 10–30 %): the pixel-wise median over many fields is
    then the background there, lit by the local illumination, and the smoothing removes what is left
    of single nuclei. The mean is pulled up by nuclei, evenly across the field when fields are many,
    so its shape is right for large, clean plates; unlike the median it needs constant memory.

    Parameters
    ----------
    images
        The plate's fields (2-D, all the same shape), raw counts; any iterable, read once.
    smoothing_sigma
        Gaussian sigma in full-resolution pixels. Default: 1/20 of the field's shorter side (54 px on
        a 1080 px field, several nucleus diameters).
    downsample
        Block size of the reduction. The median holds every reduced field in memory:
        n_fields × (side / downsample)² × 4 bytes (about 1 GB for 3,500 fields of 1080² at 4).
    statistic
        ``"median"`` (robust) or ``"mean"`` (streaming).

    Returns
    -------
    numpy.ndarray
        float32, the fields' shape, positive, 99th percentile = 1.
    """
    if downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample}")
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    shape = None
    reduced: list[np.ndarray] = []
    total: np.ndarray | None = None
    n_fields = 0
    for image in images:
        if image.ndim != 2:
            raise ValueError(f"fields must be 2-D images, got shape {image.shape}")
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise ValueError(f"all fields of a plate must have one shape: {image.shape} after {shape}")
        small = _block_mean(image, downsample)
        level = np.median(small)
        if level > 0:
            small /= level
        if statistic == "median":
            reduced.append(small)
        else:
            total = small.astype(np.float64) if total is None else total + small
        n_fields += 1
    if shape is None:
        raise ValueError("no fields to estimate the illumination from")

    projection = np.median(np.stack(reduced), axis=0) if statistic == "median" else total / n_fields
    sigma = (min(shape) / 20.0 if smoothing_sigma is None else smoothing_sigma) / downsample
    smooth = _smooth(projection.astype(np.float32), sigma)
    padded_shape = (smooth.shape[0] * downsample, smooth.shape[1] * downsample)
    full = resize(smooth, padded_shape, order=1, mode="edge", anti_aliasing=False)[: shape[0], : shape[1]]
    scale = np.quantile(full, NORMALISATION_QUANTILE)
    if not scale > 0:
        raise ValueError("the fields are dark everywhere: no illumination function can be estimated")
    # a floor, so that fields that are dark in a corner do not divide by ~0 there
    illumination = np.clip(full / scale, 1e-3, None).astype(np.float32)
    logger.info("illumination estimated from %d fields (%s): min %.3f of its 99th percentile",
                n_fields, statistic, float(illumination.min()))
    return illumination


def correct_illumination(image: np.ndarray, illumination: np.ndarray) -> np.ndarray:
    """Divide a field by its plate's illumination function.

    Parameters
    ----------
    image
        One field (2-D).
    illumination
        The illumination function, same shape, positive everywhere.

    Returns
    -------
    numpy.ndarray
        float32 ``image / illumination``. Not cast back to the input dtype: the reference's
        ``uint16(img / illum)`` wraps around where the quotient exceeds 65535.
    """
    if image.shape != illumination.shape:
        raise ValueError(f"the image has shape {image.shape} but the illumination function {illumination.shape}")
    if not np.all(illumination > 0):
        raise ValueError("the illumination function must be positive everywhere "
                         f"(minimum {np.nanmin(illumination):g}, or NaN): dividing by it would give inf")
    return np.divide(image, illumination, dtype=np.float32)


def read_illumination_function(path: str | Path) -> np.ndarray:
    """Read a published illumination function: ``.npy`` (CellProfiler/JUMP) or TIFF.

    Parameters
    ----------
    path
        The file; ``.npy`` files are read without unpickling (a pickled object array is an error).

    Returns
    -------
    numpy.ndarray
        float32, 2-D.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise ValueError(f"{path}: unknown illumination function format {suffix!r} (expected .npy, .tif or .tiff)")
    if not path.is_file():
        raise FileNotFoundError(f"illumination function {path} does not exist")
    try:
        function = np.load(path, allow_pickle=False) if suffix == ".npy" else tifffile.imread(path)
    except (OSError, ValueError) as error:  # numpy refuses pickled object arrays with a ValueError
        raise ValueError(f"cannot read the illumination function {path}: {error}") from error
    function = np.squeeze(function)
    if function.ndim != 2 or not np.issubdtype(function.dtype, np.number):
        raise ValueError(f"{path}: an illumination function must be a 2-D numeric array, "
                         f"got {function.dtype} of shape {function.shape}")
    return function.astype(np.float32)
