"""ResNet18 with torchvision's parameter names, so that torchvision's ImageNet weights load into it.

torchvision itself is not a dependency (its PyPI build does not import with the CPU torch pinned
here), but its weights file ``resnet18-f37072fd.pth`` is a plain state dict: a user who has it can
load it with :func:`load_pretrained`. ``width`` scales every channel count, so that a demo can train
a slim model with the same code; at ``width=64`` the model is torchvision's ``resnet18``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from torch import Tensor, nn

#: Blocks per stage of ResNet18.
LAYERS = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut; a 1×1 convolution on the shortcut when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(channels))
                           if stride != 1 or in_channels != channels else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet(nn.Module):
    """ResNet of :class:`BasicBlock` stages; see :func:`resnet18`."""

    def __init__(self, layers: tuple[int, ...] = LAYERS, in_channels: int = 3, num_classes: int | None = None,
                 width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        for stage, blocks in enumerate(layers):
            out_channels = width * 2**stage
            stride = 1 if stage == 0 else 2
            stage_blocks = [BasicBlock(channels, out_channels, stride)]
            stage_blocks += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*stage_blocks))
            channels = out_channels
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # Identity has no parameters, so a trunk's state dict simply lacks torchvision's fc entries.
        self.fc = nn.Identity() if num_classes is None else nn.Linear(channels, num_classes)
        # torchvision's initialisation; fc keeps PyTorch's default, as in torchvision.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> Tensor:
        """Globally average-pooled features, N × ``num_features`` (512 at ``width=64``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def resnet18(in_channels: int = 3, num_classes: int | None = None, width: int = 64) -> ResNet:
    """ResNet18 (BasicBlock, [2, 2, 2, 2]) with torchvision's parameter names.

    Parameters
    ----------
    in_channels
        Channels of the input images (3 for ImageNet, 1 for grey chromatin images).
    num_classes
        Outputs of the final linear layer ``fc``; ``None`` leaves it out (``forward`` then returns the
        pooled features, and the state dict has no ``fc.*`` entries). 1000 gives torchvision's model.
    width
        Channels of the first stage; the stages have ``width``, 2×, 4× and 8× that. 64 is ResNet18.

    Returns
    -------
    ResNet
        Initialised as torchvision does: Kaiming-normal (fan-out) convolutions, BatchNorm weight 1
        and bias 0.
    """
    return ResNet(LAYERS, in_channels=in_channels, num_classes=num_classes, width=width)


def load_pretrained(model: ResNet, path: str | os.PathLike) -> None:
    """Load a local weights file (e.g. torchvision's ``resnet18-f37072fd.pth``) into ``model``.

    The file is read with ``weights_only=True``, so a file that carries pickled objects other than
    tensors is refused instead of executed. Two differences from the file are bridged:

    - a 1-channel ``model`` gets the pretrained ``conv1`` summed over its RGB axis. A grey image then
      gives the response that the RGB filters give to that image replicated over the three channels,
      which is how the reference fed grey images to ImageNet weights (up to the per-channel
      normalisation, see :mod:`image2reg.cnn.augment`), at a third of the first layer's cost;
    - ``fc`` is kept as initialised when the model has none or a different number of classes
      (ImageNet's 1000 classes are not ours).

    ``num_batches_tracked`` may be absent: torchvision's files predate that buffer.

    Parameters
    ----------
    model
        The model to fill in place.
    path
        A state dict saved with ``torch.save``.

    Raises
    ------
    pickle.UnpicklingError
        When the file holds more than tensors and plain containers.
    ValueError
        When the file is not a state dict, or its keys or shapes do not fit ``model`` (the message
        names the file and the keys).
    """
    fit_weights(model, read_weights(path), path)


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """A local state dict file, read with ``weights_only=True`` (see :func:`load_pretrained` for the errors)."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{os.fspath(path)} holds objects other than weights; refusing to "
                                     f"unpickle them (torch.load with weights_only=True): {error}") from error
    if not isinstance(state, Mapping) or not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(f"{os.fspath(path)} is not a state dict of tensors")
    return dict(state)


def fit_weights(model: ResNet, state: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Load ImageNet weights read by :func:`read_weights` from ``path`` into ``model``, bridging the differences
    :func:`load_pretrained` describes; a ValueError names ``path`` and the keys that do not fit."""
    own = model.state_dict()
    state = dict(state)
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.shape[1] == 3 and own["conv1.weight"].shape[1] == 1:
        state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    fc_keys = [key for key in state.keys() | own.keys() if key.startswith("fc.")]
    if any(key not in own or key not in state or own[key].shape != state[key].shape for key in fc_keys):
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        state.update({key: own[key] for key in fc_keys if key in own})
    for key in own.keys() - state.keys():
        if key.endswith("num_batches_tracked"):
            state[key] = own[key]
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = {key: (tuple(state[key].shape), tuple(own[key].shape))
                  for key in sorted(own.keys() & state.keys()) if own[key].shape != state[key].shape}
    if missing or unexpected or mismatched:
        raise ValueError(f"{os.fspath(path)} does not fit this model: missing keys {missing}, unexpected keys "
                         f"{unexpected}, shapes (file, model) {mismatched}")
    model.load_state_dict(state)
