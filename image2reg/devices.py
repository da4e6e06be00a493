"""Which torch device a model trains and predicts on: the one resolver of the package."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; other names as given.

    Raises
    ------
    ValueError
        When ``cuda`` is asked for and torch sees no GPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no GPU is visible to torch")
    return device
