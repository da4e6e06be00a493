"""Reading fields of view: the one image reader of the package.

Screens store their DNA channel as single-plane TIFFs, but in several flavours: the Cell Painting
Gallery's JUMP fields are LZW-compressed 16-bit TIFFs (Phenix ``-ch5``), the Rohban fields are
uncompressed 16-bit TIFFs holding 12-bit values, other screens write 8-bit PackBits or zlib TIFFs.
tifffile decodes them all, with ``imagecodecs`` for the compressed ones. :func:`read_field` reads any
of them into one 2-D array and turns each way a file can fail (missing, truncated, not an image, a
codec missing) into an :class:`ImageReadError` that names the file.

:func:`bit_depth` tells the depth the camera wrote (12 for 12-bit values stored in 16-bit files), which
the saturation QC needs: a dtype's maximum is never reached by a 12-bit camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

#: Camera bit depths :func:`bit_depth` chooses among.
BIT_DEPTHS = (8, 10, 12, 14, 16)


class ImageReadError(OSError):
    """A field of view that cannot be read; the message names the file and the reason."""


def read_field(path: str | Path) -> np.ndarray:
    """Read one field of view (a single-channel TIFF) as a 2-D array of its stored dtype.

    Parameters
    ----------
    path
        A ``.tif``/``.tiff`` file of one plane (singleton axes are squeezed), any bit depth,
        uncompressed or compressed (LZW, zlib, PackBits, ...).

    Returns
    -------
    numpy.ndarray
        The pixels, 2-D, unchanged (uint16 camera counts stay uint16).

    Raises
    ------
    ImageReadError
        When the file is missing, truncated, not a TIFF, holds more than one plane, or needs a codec
        that is not installed; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {path} does not exist")
    try:
        image = tifffile.imread(path)
    except ValueError as error:
        if "imagecodecs" in str(error):
            raise ImageReadError(f"cannot decode {path}: {error} (install it with `pip install imagecodecs`; "
                                 "Cell Painting Gallery TIFFs are LZW-compressed)") from error
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    except (OSError, tifffile.TiffFileError, IndexError, KeyError, EOFError) as error:
        raise ImageReadError(f"cannot read image {path}: {type(error).__name__}: {error}") from error
    image = np.squeeze(image)
    if image.ndim != 2:
        raise ImageReadError(f"{path} is not a single-channel field of view: it holds an array of shape "
                             f"{image.shape} (one 2-D plane per file is expected)")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ImageReadError(f"{path} holds {image.dtype} pixels, not numbers")
    return image


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
