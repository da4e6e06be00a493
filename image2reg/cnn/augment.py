"""Batch intensity normalisation and random flips, in torch ops on the device of the input.

The reference's transforms (method §4.1), per image on the CPU with torchvision, were: ``ToTensor``
(uint8 → [0, 1]), random horizontal and vertical flips (training only), the grey channel repeated
three times, and ImageNet normalisation. Here the same runs on whole N × C × H × W batches:
:func:`to_unit_interval`, :func:`random_flips` and :func:`standardize`. The models take one grey
channel (see :func:`image2reg.cnn.resnet.load_pretrained`), so :func:`standardize` defaults to the
means of ImageNet's per-channel statistics.

16-bit fields were squeezed into uint8 by the reference as ``(x − p0.1) / p99.9``, and only when
``p99.9 > 255``. :func:`scale_percentiles` fixes that quirk: it divides by ``p99.9 − p0.1``, so the
result spans [0, 1] whatever the camera's range, and keeps floats instead of rounding to 256 levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: One-channel stand-ins for the ImageNet statistics (their means over RGB).
GREY_MEAN = sum(IMAGENET_MEAN) / 3
GREY_STD = sum(IMAGENET_STD) / 3


def to_unit_interval(images: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1] (``x / 255``, as torchvision's ``ToTensor``)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}; use scale_percentiles for other ranges")
    return images.float() / 255.0


def scale_percentiles(images: Tensor, low: float = 0.1, high: float = 99.9) -> Tensor:
    """Per-image ``(x − p_low) / (p_high − p_low)`` clipped to [0, 1], for fields of any bit depth.

    Percentiles are order statistics (numpy's ``method="lower"``) over each image's pixels, all
    channels together; a constant image maps to 0.

    Parameters
    ----------
    images
        N × … images of any real or integer dtype.
    low, high
        Percentiles mapped to 0 and 1.

    Returns
    -------
    Tensor
        float32, same shape as ``images``.
    """
    flat = images.reshape(len(images), -1).float()
    count = flat.shape[1]
    bounds = [flat.kthvalue(int(q / 100 * (count - 1)) + 1, dim=1).values for q in (low, high)]
    shape = (-1,) + (1,) * (images.dim() - 1)
    lower, upper = (bound.reshape(shape) for bound in bounds)
    span = (upper - lower).clamp_min(torch.finfo(torch.float32).tiny)
    return ((images.float() - lower) / span).clamp(0.0, 1.0)


def standardize(images: Tensor, mean: float | Sequence[float] = GREY_MEAN,
                std: float | Sequence[float] = GREY_STD) -> Tensor:
    """``(x − mean) / std`` per channel of N × C × H × W images (a scalar applies to every channel)."""
    shape = (1, -1, 1, 1)
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(shape)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(shape)
    return (images - mean) / std


def random_flips(images: Tensor, generator: torch.Generator | None = None, *, rotate90: bool = False) -> Tensor:
    """Flip each image of an N × C × H × W batch horizontally and vertically, each with probability ½.

    With ``rotate90`` each image is also transposed with probability ½. Transpose and the two flips
    generate all eight symmetries of the square, uniformly: the four 90° rotations, mirrored or not.
    The draws come from ``generator`` (on its own device, so a seed gives the same flips on CPU and
    GPU) or else from the global generator of the images' device.

    Parameters
    ----------
    images
        N × C × H × W; square when ``rotate90``.
    generator
        Source of the random draws, for reproducible batches.
    rotate90
        Add 90° rotations (the reference used flips only).

    Returns
    -------
    Tensor
        The transformed batch, a new tensor.
    """
    if rotate90 and images.shape[-1] != images.shape[-2]:
        raise ValueError(f"90° rotations need square images, got {tuple(images.shape[-2:])}")
    device = images.device if generator is None else generator.device
    draws = torch.rand((3, len(images)), generator=generator, device=device).to(images.device) < 0.5
    shape = (-1,) + (1,) * (images.dim() - 1)
    horizontal, vertical, transpose = (draw.reshape(shape) for draw in draws)
    if rotate90:
        images = torch.where(transpose, images.transpose(-1, -2), images)
    images = torch.where(horizontal, images.flip(-1), images)
    return torch.where(vertical, images.flip(-2), images)
