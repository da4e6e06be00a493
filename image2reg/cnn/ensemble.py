"""The reference's image encoder: ResNet18 branches on the nucleus and its region, a latent, a head.

Each branch is a ResNet18 whose ``fc`` maps its pooled features to ``branch_dim`` outputs (the
reference's ``CustomResNet`` with ``n_output_nodes: 512``). The branch outputs are concatenated and
mapped linearly to the latent, the image embedding; the classification head is
BatchNorm1d → PReLU → Linear on the latent (method §4.2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from image2reg.cnn.resnet import fit_weights, read_weights, resnet18

logger = logging.getLogger("image2reg")

Branch = Literal["nucleus", "region"]
BRANCHES: tuple[Branch, ...] = ("nucleus", "region")


class ImageEnsemble(nn.Module):
    """ResNet18 branches on grey images → concatenation → latent → classification head.

    Parameters
    ----------
    num_classes
        Outputs of the head (2 for the specificity screen, the number of conditions otherwise).
    branches
        Which inputs to encode, in order: ``"nucleus"`` (the crop), ``"region"`` (the field patch
        centred on the nucleus) or both, as in the reference.
    latent_dim
        Size of the image embedding: 512 for the screen, 1024 for multi-class and LOTO models.
    input_size
        Side the inputs are resized to inside the model (224 in the reference).
    width
        Channels of the first ResNet stage (64 is ResNet18; smaller for a fast demo).
    branch_dim
        Outputs of each branch's ``fc`` (512 in the reference).
    """

    def __init__(self, num_classes: int, *, branches: Sequence[Branch] = BRANCHES, latent_dim: int = 1024,
                 input_size: int = 224, width: int = 64, branch_dim: int = 512) -> None:
        super().__init__()
        if not branches or len(set(branches)) != len(branches) or not set(branches) <= set(BRANCHES):
            raise ValueError(f"branches must be distinct names out of {BRANCHES}, got {list(branches)}")
        self.branches = tuple(branches)
        self.input_size = input_size
        self.trunks = nn.ModuleDict({name: resnet18(in_channels=1, num_classes=branch_dim, width=width)
                                     for name in self.branches})
        self.latent = nn.Linear(branch_dim * len(self.branches), latent_dim)
        self.head = nn.Sequential(nn.BatchNorm1d(latent_dim), nn.PReLU(), nn.Linear(latent_dim, num_classes))

    def resize(self, images: Tensor) -> Tensor:
        """Bilinear resize to ``input_size``; 448 → 224 is an exact 2×2 mean, 64 → 224 an upsampling."""
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        return F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=False, antialias=False)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits (N × ``num_classes``) and latents (N × ``latent_dim``) of a batch.

        ``batch`` holds one normalised N × 1 × H × W float tensor per branch, under its name.
        """
        outputs = [self.trunks[name](self.resize(batch[name])) for name in self.branches]
        latent = self.latent(torch.cat(outputs, dim=1))
        return self.head(latent), latent

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Load pretrained trunk weights from a local file.

        Two kinds of file, read once: ImageNet ResNet18 weights (torchvision's keys), loaded into every
        branch (see :func:`~image2reg.cnn.resnet.load_pretrained`), or the self-supervised pretraining stage's
        encoder, whose keys are this model's own (``trunks.<branch>.…``;
        :func:`image2reg.cnn.pretrain.encoder_state`), loaded into the branches it has. A branch the file
        lacks keeps its random initialisation, with a warning.

        Raises
        ------
        ValueError
            A pretraining file that fits none of the branches or another trunk shape (keys named).
        """
        state = read_weights(path)
        if not any(key.startswith("trunks.") for key in state):
            for trunk in self.trunks.values():
                fit_weights(trunk, state, path)
            return
        loaded = []
        for name, trunk in self.trunks.items():
            prefix = f"trunks.{name}."
            own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            if not own:
                continue
            expected = trunk.state_dict()
            mismatched = sorted(key for key in expected.keys() | own.keys()
                                if key not in own or key not in expected or own[key].shape != expected[key].shape)
            if mismatched:
                raise ValueError(f"{os.fspath(path)} does not fit the {name} branch (another width or fc size?): "
                                 f"keys {mismatched[:6]}{' …' if len(mismatched) > 6 else ''}")
            trunk.load_state_dict(own)
            loaded.append(name)
        if not loaded:
            raise ValueError(f"{os.fspath(path)} holds pretrained trunks of no branch of this model {self.branches}")
        missing = [name for name in self.branches if name not in loaded]
        if missing:
            logger.warning("%s has no pretrained %s trunk: it starts from random weights", os.fspath(path),
                           " or ".join(missing))
