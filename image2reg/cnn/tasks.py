"""What every CNN task of stages 02-04 shares: train on a split table, predict, run once.

A *task* (one screen model, one fold of the multi-class model, one leave-one-target-out model) is
plain picklable data run by a function anywhere (this process, a pool, a Dask worker). These
helpers make each task:

- **idempotent**: :func:`image2reg.execute.run_once` runs it (a killed task continues from its
  training checkpoint);
- **the same everywhere**: :func:`fit_and_predict` builds the batches, the
  :class:`~image2reg.cnn.ensemble.ImageEnsemble` (seeded, optionally from ImageNet weights), trains
  it with :func:`~image2reg.cnn.train.train_model` and predicts the requested splits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from image2reg.cnn.datasets import NucleusBatches, RegionCutter
from image2reg.cnn.ensemble import ImageEnsemble
from image2reg.cnn.splits import FIELD, TEST, TRAIN, VAL
from image2reg.cnn.train import TrainingParams, TrainingResult, predict, train_model
from image2reg.devices import resolve_device
from image2reg.layout import TaskFiles

logger = logging.getLogger("image2reg")

PLATE = "Metadata_Plate"


@dataclass(frozen=True)
class EncoderSpec:
    """The image encoder of a task: :class:`~image2reg.cnn.ensemble.ImageEnsemble` arguments and its inputs.

    Attributes
    ----------
    branches, latent_dim, input_size, width
        The ensemble (see :class:`~image2reg.cnn.ensemble.ImageEnsemble`).
    region_size
        Side (px) of the field patches of the ``"region"`` branch.
    illumination
        ``(plate, illumination function file or None)`` pairs for the region patches.
    pretrained
        Local torchvision ResNet18 weights loaded into every branch, or None (random initialisation).
    """

    branches: tuple[str, ...] = ("nucleus",)
    latent_dim: int = 1024
    input_size: int = 224
    width: int = 64
    region_size: int = 448
    illumination: tuple[tuple[str, str | None], ...] = ()
    pretrained: str | None = None


def encoder_spec(model: Any, latent_dim: int, illumination: Mapping[str, str | Path | None] | None) -> EncoderSpec:
    """An :class:`EncoderSpec` from a stage's ``model`` params block, its latent size and the illumination files.

    Raises ValueError when the region branch is requested without ``illumination`` (plate → file
    or None).
    """
    if "region" in model.branches and illumination is None:
        raise ValueError("the region branch needs illumination: plate -> function file (or None for none)")
    return EncoderSpec(branches=tuple(model.branches), latent_dim=latent_dim, input_size=model.input_size,
                       width=model.width, region_size=model.region_size,
                       illumination=tuple((str(plate), None if path is None else str(path))
                                          for plate, path in sorted((illumination or {}).items())),
                       pretrained=model.pretrained)


def fit_and_predict(
    nuclei: pd.DataFrame,
    splits: pd.DataFrame,
    *,
    n_classes: int,
    images_dir: str | Path,
    folder: str | Path,
    encoder: EncoderSpec,
    training: TrainingParams,
    predict_splits: Sequence[str],
    fold: int | None = None,
    progress_bar: bool = False,
) -> tuple[TrainingResult, dict[str, int], dict[str, dict[str, np.ndarray]]]:
    """Train an ensemble on a split table's ``train`` part (model selection on ``val``) and predict other parts.

    Parameters
    ----------
    nuclei
        The stage-01 nucleus table.
    splits
        From :mod:`image2reg.cnn.splits` (``fold``, ``split``, ``label``).
    n_classes
        Outputs of the model.
    images_dir
        The stage-01 folder (crops).
    folder
        The task folder; training checkpoints go to ``<folder>/training`` (a killed training resumes).
    encoder, training
        The model and how it is trained.
    predict_splits
        Splits to predict with the best weights, without augmentation (e.g. ``"test"``, ``"held_out"``).
    fold
        The fold of ``splits`` to use (None when it has one).
    progress_bar
        Show the training's bar over epochs.

    Returns
    -------
    result : TrainingResult
        The training's history and best epoch.
    sizes : dict
        Nuclei per split (train, val and the predicted ones).
    outputs : dict
        Per predicted split, :func:`~image2reg.cnn.train.predict`'s arrays (logits, predicted,
        latents, indices and labels).
    """
    regions = None
    if "region" in encoder.branches:
        used = nuclei.loc[splits.index.unique()]
        regions = RegionCutter(dict(zip(used[FIELD], used[PLATE].astype(str))), dict(encoder.illumination),
                               encoder.region_size, cache_fields=2 * training.region_window_fields, base=images_dir)

    def batches(split: str, shuffle: bool) -> NucleusBatches:
        return NucleusBatches(nuclei, splits, split, folder=images_dir, batch_size=training.batch_size,
                              shuffle=shuffle, seed=training.seed, regions=regions, fold=fold,
                              window_fields=training.region_window_fields if regions is not None else None)

    train, val = batches(TRAIN, True), batches(VAL, False)
    torch.manual_seed(training.seed)  # the model's initialisation
    model = ImageEnsemble(n_classes, branches=encoder.branches, latent_dim=encoder.latent_dim,
                          input_size=encoder.input_size, width=encoder.width)
    if encoder.pretrained is not None:
        model.load_pretrained(encoder.pretrained)
    result = train_model(model, train, val, training, checkpoint_dir=Path(folder) / TaskFiles.TRAINING,
                         n_classes=n_classes, train_labels=train.labels.numpy(), progress_bar=progress_bar)
    device = resolve_device(training.device)
    outputs = {name: predict(model, batches(name, False), device) for name in predict_splits}
    sizes = {TRAIN: len(train.labels), VAL: len(val.labels),
             **{name: len(output["indices"]) for name, output in outputs.items()}}
    return result, sizes, outputs


def embed_nuclei(nuclei: pd.DataFrame, *, images_dir: str | Path, weights: str | Path, n_classes: int,
                 encoder: EncoderSpec, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """The latents (nuclei × latent_dim, in the table's order) of trained weights for any stage-01 nuclei.

    For nuclei no split table covers, e.g. conditions the model never trained on. ``weights`` is a
    ``state_dict`` file (loaded with ``weights_only=True``) of an ensemble built from ``encoder`` with
    ``n_classes`` outputs.
    """
    if nuclei.empty:
        raise ValueError("no nuclei to embed")
    splits = pd.DataFrame({"fold": 0, "split": TEST, "label": 0}, index=nuclei.index)
    regions = None
    if "region" in encoder.branches:
        regions = RegionCutter(dict(zip(nuclei[FIELD], nuclei[PLATE].astype(str))), dict(encoder.illumination),
                               encoder.region_size, base=images_dir)
    batches = NucleusBatches(nuclei, splits, TEST, folder=images_dir, batch_size=batch_size, shuffle=False, seed=0,
                             regions=regions)
    model = ImageEnsemble(n_classes, branches=encoder.branches, latent_dim=encoder.latent_dim,
                          input_size=encoder.input_size, width=encoder.width)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    output = predict(model, batches, resolve_device(device))
    order = pd.Series(np.arange(len(output["indices"])), index=output["indices"])
    return output["latents"][order.loc[nuclei.index].to_numpy()]


def best_epoch_metrics(result: TrainingResult) -> dict[str, Any]:
    """Best epoch, epochs run, early stop and the train/validation metrics of the best epoch."""
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    return {"best_epoch": int(result.best_epoch), "epochs": len(result.history),
            "stopped_early": bool(result.stopped_early),
            **{column: float(best[column]) for column in ("train_loss", "train_accuracy", "val_loss",
                                                           "val_accuracy", "val_balanced_accuracy")}}
