"""Reading fields of view: the one image reader of the package.

Screens store their DNA channel as single-plane TIFFs, but in several flavours: the Cell Painting
Gallery's JUMP fields are LZW-compressed 16-bit TIFFs (Phenix ``-ch5``), the Rohban fields are
uncompressed 16-bit TIFFs holding 12-bit values, other screens write 8-bit PackBits or zlib TIFFs.
tifffile decodes them all, with ``imagecodecs`` for the compressed ones. :func:`read_field` reads any
of them into one 2-D array and turns each way a file can fail (missing, truncated, not an image, a
codec missing, a shape other than its plate's) into an :class:`ImageReadError` that names the file.

Bad files follow one policy in every stage that reads fields (see
:func:`image2reg.images.pipeline.preprocess_images`): each is named once in the log, recorded in the
image table's ``error`` column and skipped; :func:`check_bad_fields` stops the stage, listing the files,
when more than a configured share of the fields is bad.

:func:`bit_depth` tells the depth the camera wrote (12 for 12-bit values stored in 16-bit files), which
the saturation QC needs: a dtype's maximum is never reached by a 12-bit camera.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tifffile

#: Camera bit depths :func:`bit_depth` chooses among.
BIT_DEPTHS = (8, 10, 12, 14, 16)

#: At most this many bad files are listed in the message of :class:`TooManyBadFieldsError`.
LISTED_BAD_FIELDS = 20


class ImageReadError(OSError):
    """A field of view that cannot be read; the message names the file and the reason."""


class TooManyBadFieldsError(ValueError):
    """More fields of view are bad than a stage allows; the message names them (:func:`check_bad_fields`)."""


def read_tiff(path: str | Path, what: str = "image") -> np.ndarray:
    """Read a TIFF's pixels with singleton axes squeezed; every way the read can fail names the file.

    Parameters
    ----------
    path
        The file.
    what
        What the file is, for the messages (``"image"``, ``"mask"``).

    Returns
    -------
    numpy.ndarray
        The pixels as stored, singleton axes dropped.

    Raises
    ------
    ImageReadError
        The file is missing, truncated, not a TIFF, corrupt, or needs a codec that is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{what} {path} does not exist")
    try:
        pixels = tifffile.imread(path)
    except ValueError as error:
        if "imagecodecs" in str(error):
            raise ImageReadError(f"cannot decode {path}: {error} (install it with `pip install imagecodecs`; "
                                 "Cell Painting Gallery TIFFs are LZW-compressed)") from error
        raise ImageReadError(f"cannot read {what} {path}: {error}") from error
    except Exception as error:  # noqa: BLE001 - a corrupt file fails in many ways; each must name the file
        raise ImageReadError(f"cannot read {what} {path}: {type(error).__name__}: {error}") from error
    return np.squeeze(pixels)


def read_field(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one field of view (a single-channel TIFF) as a 2-D array of its stored dtype.

    Parameters
    ----------
    path
        A ``.tif``/``.tiff`` file of one plane (singleton axes are squeezed), any bit depth,
        uncompressed or compressed (LZW, zlib, PackBits, ...).
    shape
        The shape the field must have (its plate's, :func:`image2reg.images.pipeline.plate_field_shapes`);
        None: any 2-D shape.

    Returns
    -------
    numpy.ndarray
        The pixels, 2-D, unchanged (uint16 camera counts stay uint16).

    Raises
    ------
    ImageReadError
        When the file is missing, truncated, not a TIFF, holds more than one plane, has another shape
        than ``shape``, or needs a codec that is not installed; the message names the file.
    """
    image = read_tiff(path)
    if image.ndim != 2:
        raise ImageReadError(f"{path} is not a single-channel field of view: it holds an array of shape "
                             f"{image.shape} (one 2-D plane per file is expected)")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ImageReadError(f"{path} holds {image.dtype} pixels, not numbers")
    if shape is not None and image.shape != tuple(shape):
        raise ImageReadError(f"{path} is a field of shape {image.shape}, not {tuple(shape)} like the other fields "
                             "of its plate")
    return image


def field_shape(path: str | Path) -> tuple[int, ...]:
    """The shape of a field from its TIFF header alone (no pixels are decoded), singleton axes dropped.

    Parameters
    ----------
    path
        The TIFF.

    Returns
    -------
    tuple of int
        The shape :func:`read_field` would find, for a file that is not truncated.

    Raises
    ------
    ImageReadError
        The file is missing or its header cannot be read; the message names the file.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
    except Exception as error:  # noqa: BLE001 - as read_tiff: every failure names the file
        raise ImageReadError(f"cannot read the header of image {path}: {type(error).__name__}: {error}") from error
    return tuple(int(n) for n in shape if n != 1)


def check_bad_fields(errors: Mapping[str, str], n_fields: int, max_fraction: float, table: str | Path) -> None:
    """Stop when more than ``max_fraction`` of ``n_fields`` fields are bad, naming the bad files.

    Parameters
    ----------
    errors
        Bad field (its path) -> why (a message that names the file), in the order to list them.
    n_fields
        The fields the stage read (the denominator of the share).
    max_fraction
        The share of bad fields allowed (``max_bad_fraction`` of the images stage): 0 stops at the
        first bad file, 1 never stops.
    table
        The image table that lists every bad field with its error, named in the message.

    Raises
    ------
    TooManyBadFieldsError
        Bad fields exceed the allowed share; the message lists the first :data:`LISTED_BAD_FIELDS`.
    """
    if not errors or len(errors) / max(n_fields, 1) <= max_fraction:
        return
    listed = [f"  {why}" for why in list(errors.values())[:LISTED_BAD_FIELDS]]
    if len(errors) > LISTED_BAD_FIELDS:
        listed.append(f"  ... and {len(errors) - LISTED_BAD_FIELDS} more")
    raise TooManyBadFieldsError(
        f"{len(errors)} of {n_fields} fields of view ({len(errors) / max(n_fields, 1):.1%}) are unreadable, "
        f"truncated, of the wrong shape or failed, more than max_bad_fraction = {max_fraction:g} of the images "
        "stage allows:\n" + "\n".join(listed) + f"\nEvery one is in the error column of {table}. Replace or "
        "remove the bad files, or raise stages.images.max_bad_fraction to skip them.")


def bit_depth(image: np.ndarray) -> int | None:
    """The smallest camera bit depth (8, 10, 12, 14 or 16) whose range holds every pixel of an integer image.

    A 12-bit camera writes values up to 4095 into 16-bit files, so its saturated pixels sit at 4095, not
    at the dtype's 65535. The depth is read off the pixels, field by field: a field whose maximum is
    below 4096 is taken as 12-bit. A 16-bit field that happens to stay below 4096 is then given a lower
    saturation value, which it does not reach either, so the saturation QC is unaffected. ``None`` for
    float images (no fixed range) and integer images above 16 bits.
    """
    if not np.issubdtype(image.dtype, np.integer):
        return None
    top = int(image.max()) if image.size else 0
    return next((bits for bits in BIT_DEPTHS if bits <= np.iinfo(image.dtype).bits and top < 2 ** bits), None)
