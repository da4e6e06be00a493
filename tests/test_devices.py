"""The one device resolver of the package (CNN training and prediction, the graph autoencoder)."""

from __future__ import annotations

import pytest
import torch

from image2reg.devices import resolve_device


def test_auto_picks_what_torch_sees_and_names_are_taken_as_given():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="'cuda' requested but no GPU is visible"):
        resolve_device("cuda")
