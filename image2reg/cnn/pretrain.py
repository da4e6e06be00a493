"""Self-supervised (SimCLR-style) pretraining of the nucleus encoder on the screen's own nuclei.

Two augmented views of every nucleus of a batch go through one ResNet18 trunk and a small projection
head; the NT-Xent loss (:func:`nt_xent`) asks each view to pick its partner out of the other
``2N − 2`` views. The trunk is the nucleus branch of :class:`~image2reg.cnn.ensemble.ImageEnsemble`
(same architecture, same parameter names, ``fc`` included), so its weights initialise the stages'
models (:func:`encoder_state`, :func:`write_encoder`).

The views (:func:`augment_views`) differ by a random crop-and-resize, one of the square's eight
symmetries and a little Gaussian pixel noise. Brightness, contrast and gamma are never jittered and
nothing is blurred: a nucleus' DNA content (its integrated intensity) and its chromatin texture are
what the phenotypes of a perturbation screen are made of, so the encoder must not be taught to ignore
them. :func:`probe_features` checks what it learnt: how much of each classical feature (shape,
intensity, texture, radial distribution) a linear read-out of the embeddings recovers.

:func:`pretrain_nuclei` is resumable as :func:`image2reg.cnn.train.train_model` is: a checkpoint after
every epoch holds the model, the optimiser, the learning-rate schedule, the history and the states of
the two random generators (batch order, views), so a run that is interrupted and started again ends
with the weights of an uninterrupted one (bit for bit on the CPU with the same number of threads).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from image2reg.cnn import train
from image2reg.cnn.augment import random_flips, standardize, to_unit_interval
from image2reg.cnn.datasets import load_crops
from image2reg.cnn.resnet import ResNet, resnet18
from image2reg.config import PretrainStageParams
from image2reg.devices import resolve_device
from image2reg.execute import torch_threads
from image2reg.layout import TaskFiles, artifact_name, atomic_path, write_text_atomic

logger = logging.getLogger("image2reg")

CHECKPOINT, HISTORY, DONE = TaskFiles.CHECKPOINT, TaskFiles.HISTORY, TaskFiles.DONE
#: The final weights of the whole :class:`ContrastiveModel` (trunk and projector), written before ``DONE``.
FINAL_MODEL = TaskFiles.BEST_MODEL
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "lr", "seconds")
#: Aspect ratios (width / height) of the random crops, drawn log-uniformly.
ASPECT_RATIO = (3 / 4, 4 / 3)
#: Smallest batch the contrastive loss is run on (each view then has at least 6 negatives).
MIN_BATCH = 4
#: Params that may change between a run and its resumption: they do not change what is learnt.
RUNTIME_PARAMS = ("device", "torch_threads")
QC_PASS = "QC_pass"


# --- views and loss ------------------------------------------------------------------------------------

def augment_views(images: Tensor, generator: torch.Generator, *, input_size: int, crop_scale: tuple[float, float],
                  noise_sd: float, max_shift: float = 0.0) -> Tensor:
    """One random view of each crop: crop-and-resize, one of 8 symmetries, pixel noise; standardised.

    Per image, a crop with an area fraction drawn uniformly from ``crop_scale`` and an aspect ratio
    drawn log-uniformly from :data:`ASPECT_RATIO` is placed uniformly at random *inside* the image
    (a side that would exceed the image is set to the full side and the other one shortened to keep
    the area), and resampled bilinearly to ``input_size`` (``F.affine_grid`` / ``F.grid_sample``, all
    images at once). Then one of the square's 8 symmetries (:func:`~image2reg.cnn.augment.random_flips`
    with ``rotate90``) and Gaussian noise of SD ``noise_sd`` (in [0, 1] units, i.e. ``noise_sd × 255``
    grey levels) on *every* pixel, not clipped, so that it leaves each view's mean intensity unbiased.
    Intensities are otherwise left as they are: no brightness, contrast or gamma jitter, no blur.

    With ``max_shift`` the crop is then moved by up to that fraction of the image's side in each direction
    (uniformly), the uncovered part filled with 0 (the crops' background): the nucleus moves in its view
    without changing its size, which a crop-and-resize would (``crop_scale`` below 1 zooms by up to
    ``1 / sqrt(low)``, so nuclear size is then no longer what tells two views of one nucleus apart).

    With ``crop_scale == (1, 1)``, ``max_shift == 0`` and ``input_size`` equal to the crops' side, the crop
    step is the identity (up to float rounding of the sampling grid).

    Parameters
    ----------
    images
        uint8, N × 1 × S × S crops, on any device.
    generator
        Source of every random draw (crops, symmetries, noise), on the CPU or the images' device; the
        same generator state gives the same views.
    input_size
        Side of the views.
    crop_scale
        ``(low, high)`` area fraction of the crops, ``0 < low <= high <= 1``.
    noise_sd
        SD of the additive noise before standardisation, in [0, 1] units; 0: none.
    max_shift
        Largest translation, as a fraction of the side, ``[0, 0.5)``; 0: none.

    Returns
    -------
    Tensor
        float32, N × 1 × ``input_size`` × ``input_size``, standardised with
        :func:`~image2reg.cnn.augment.standardize`, on the images' device.
    """
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(crop_scale)}")
    if not 0 <= max_shift < 0.5:
        raise ValueError(f"max_shift must lie in [0, 0.5), got {max_shift}")
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected N × C × S × S images, got shape {tuple(images.shape)}")
    n, device = len(images), images.device
    unit = to_unit_interval(images)
    draws = torch.rand((6, n), generator=generator, device=generator.device, dtype=torch.float64).to(device)
    area = low + (high - low) * draws[0]
    log_low, log_high = math.log(ASPECT_RATIO[0]), math.log(ASPECT_RATIO[1])
    ratio = torch.exp(log_low + (log_high - log_low) * draws[1])
    width, height = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    too_wide, too_high = width > 1, height > 1
    width, height = torch.where(too_wide, 1.0, width), torch.where(too_wide, area, height)
    height, width = torch.where(too_high, 1.0, height), torch.where(too_high, area, width)
    # In affine_grid's [-1, 1] coordinates the crop spans centre ± side: the centre stays within ±(1 − side).
    centre_x, centre_y = (1 - width) * (2 * draws[2] - 1), (1 - height) * (2 * draws[3] - 1)
    # a shift of s of the side is 2 s in these coordinates; the view's content moves the other way
    centre_x, centre_y = centre_x + 2 * max_shift * (2 * draws[4] - 1), centre_y + 2 * max_shift * (2 * draws[5] - 1)
    theta = torch.zeros((n, 2, 3), dtype=torch.float64, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = width, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta.float(), [n, unit.shape[1], input_size, input_size], align_corners=False)
    views = F.grid_sample(unit, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    views = random_flips(views, generator, rotate90=True)
    if noise_sd > 0:
        noise = torch.randn(views.shape, generator=generator, device=generator.device).to(device)
        views = views + noise_sd * noise
    return standardize(views)


def _contrastive_logits(z1: Tensor, z2: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Cosine similarities / temperature of the 2N views (self-similarity −inf) and each view's partner."""
    if z1.shape != z2.shape or z1.dim() != 2 or len(z1) < 2:
        raise ValueError(f"z1 and z2 must be two N × d tensors of the same shape with N >= 2, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return logits, partners


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Normalised-temperature cross-entropy (SimCLR's NT-Xent) of N pairs of projections.

    Each of the 2N views is an anchor whose positive is its partner (row ``i`` of ``z1`` with row
    ``i`` of ``z2``) and whose negatives are the other ``2N − 2`` views; the logits are cosine
    similarities divided by ``temperature``, the anchor itself left out.

    Parameters
    ----------
    z1, z2
        N × d projections of the first and the second views, N >= 2.
    temperature
        Softmax temperature (> 0).

    Returns
    -------
    Tensor
        Scalar float32: the mean over the 2N anchors. Its minimum (well-separated pairs) approaches 0,
        and ``log(2N − 1)`` is its value when every similarity is equal.
    """
    logits, partners = _contrastive_logits(z1, z2, temperature)
    return F.cross_entropy(logits, partners)


def pair_accuracy(z1: Tensor, z2: Tensor) -> Tensor:
    """Fraction of the 2N views whose most similar other view (cosine) is their partner; scalar tensor."""
    logits, partners = _contrastive_logits(z1.detach(), z2.detach(), 1.0)
    return (logits.argmax(dim=1) == partners).float().mean()


class ContrastiveModel(nn.Module):
    """A nucleus trunk and the projection head the contrastive loss sees.

    Parameters
    ----------
    width
        Channels of the trunk's first ResNet stage (as the stages' models).
    branch_dim
        Outputs of the trunk's ``fc`` (the ensemble's ``branch_dim``).
    projection_dim
        Outputs of the projection head.

    Attributes
    ----------
    trunk
        ``resnet18(in_channels=1, num_classes=branch_dim, width=width)``: the encoder to keep.
    projector
        Linear(branch_dim, branch_dim) → BatchNorm1d → ReLU → Linear(branch_dim, projection_dim),
        dropped after pretraining.
    """

    def __init__(self, *, width: int, branch_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.trunk = resnet18(in_channels=1, num_classes=branch_dim, width=width)
        self.projector = nn.Sequential(nn.Linear(branch_dim, branch_dim), nn.BatchNorm1d(branch_dim),
                                       nn.ReLU(inplace=True), nn.Linear(branch_dim, projection_dim))

    @classmethod
    def from_params(cls, params: PretrainStageParams) -> ContrastiveModel:
        """The model of ``params`` (``width``, ``branch_dim``, ``projection_dim``), from torch's global RNG."""
        return cls(width=params.width, branch_dim=params.branch_dim, projection_dim=params.projection_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The trunk's outputs ``h`` (N × branch_dim) and their projections ``z`` (N × projection_dim)."""
        h = self.trunk(x)
        return h, self.projector(h)


# --- pretraining ---------------------------------------------------------------------------------------

@dataclass
class PretrainResult:
    """What :func:`pretrain_nuclei` did.

    Attributes
    ----------
    model
        The :class:`ContrastiveModel` with the final weights, on the CPU, in eval mode.
    history
        One row per epoch: ``epoch``, ``loss`` (mean NT-Xent), ``accuracy`` (mean fraction of views
        whose nearest other view is their partner), ``lr`` (of the epoch's last step), ``seconds``.
    n_nuclei
        Nuclei drawn for pretraining.
    resumed_from
        The last finished epoch found in a checkpoint, or None.
    reused
        Whether a finished pretraining was loaded instead of run.
    seconds
        Wall time of this call.
    """

    model: ContrastiveModel
    history: pd.DataFrame
    n_nuclei: int
    resumed_from: int | None
    reused: bool
    seconds: float


def _runtime(device: str | torch.device) -> train._Runtime:
    """The device and, on CUDA with bfloat16 support, bfloat16 autocast; the CPU computes in float32."""
    device = resolve_device(device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return train._Runtime(device, torch.bfloat16 if bf16 else None)


def batch_plan(n_nuclei: int, batch_size: int) -> tuple[int, int]:
    """``(batch, steps)`` of an epoch: the batch clamped to the nuclei, the last incomplete batch dropped.

    Raises
    ------
    ValueError
        With fewer than :data:`MIN_BATCH` nuclei.
    """
    if n_nuclei < MIN_BATCH:
        raise ValueError(f"contrastive pretraining needs at least {MIN_BATCH} nuclei for one batch, got {n_nuclei}")
    batch = min(batch_size, n_nuclei)
    return batch, n_nuclei // batch


def pretrain_nuclei(images_dir: str | Path, folder: str | Path, params: PretrainStageParams, *,
                    progress_bar: bool = True) -> PretrainResult:
    """Contrastive pretraining of a nucleus trunk on the crops of a stage-01 folder; resumable.

    ``min(max_nuclei, n)`` of the ``n`` QC-passing nuclei (all nuclei when the table has no
    ``QC_pass``) are drawn with ``np.random.default_rng(params.seed)``, their crop rows saved (sorted)
    in ``folder`` so that a resumed run uses the same ones, and their crops read into memory once.
    Every epoch shuffles them (a ``torch.Generator`` seeded with ``params.seed``) into batches of
    ``min(batch_size, n_nuclei)`` nuclei, the last incomplete batch dropped; each batch gives two views
    per nucleus (:func:`augment_views`, from a second generator seeded with ``params.seed + 1``), one
    forward pass over the 2 × batch views and an AdamW step on :func:`nt_xent`. The learning rate
    decays to 0 on a cosine over all steps of the ``epochs`` epochs (per step). The model is
    initialised from ``params.seed`` (torch's global RNG, restored afterwards).

    Files in ``folder``: ``TaskFiles.PRETRAIN_NUCLEI`` (the drawn crop rows, ``np.save``),
    ``TaskFiles.CHECKPOINT`` (after every epoch; removed at the end), ``TaskFiles.HISTORY`` (csv, after
    every epoch), and at the end ``TaskFiles.BEST_MODEL`` (the final state dict of the whole
    :class:`ContrastiveModel`; the name is the training folders' shared one, there is no model
    selection) and ``TaskFiles.DONE`` (json: epochs, final loss and accuracy, nuclei, params). Every
    file is written atomically. With the checkpoint present training continues after its epoch; with
    ``DONE`` present the final model is loaded and nothing is trained.

    Runs on the CPU are bitwise deterministic for ``params.seed`` and a number of threads, also when
    interrupted and resumed. Torch uses ``params.torch_threads`` threads inside this call (None: as
    set by the caller); the device and the threads may differ between a run and its resumption,
    every other param must not.

    Parameters
    ----------
    images_dir
        A stage-01 folder (its nucleus table with ``crop_index`` and its crop store).
    folder
        This pretraining's folder (created).
    params
        Model, views, optimisation, seed, device and threads.
    progress_bar
        Show a tqdm bar over epochs.

    Returns
    -------
    PretrainResult

    Raises
    ------
    ValueError
        Fewer than 4 nuclei to draw from; or a checkpoint or ``DONE`` in ``folder`` written with other
        params (the message names them).
    """
    started = time.perf_counter()
    images_dir, folder = Path(images_dir), Path(folder)
    runtime = _runtime(params.device)
    if (folder / DONE).exists():
        return _load_finished(folder, params, started)

    with torch_threads(params.torch_threads):
        rows = _drawn_rows(images_dir, folder, params)
        batch, steps = batch_plan(len(rows), params.batch_size)
        if batch < params.batch_size:
            logger.warning("only %d nuclei: batches of %d instead of %d", len(rows), batch, params.batch_size)
        crops = load_crops(images_dir, rows, progress_bar=progress_bar)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            model = ContrastiveModel.from_params(params)
        model.to(runtime.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs * steps)
        order = torch.Generator().manual_seed(params.seed)
        views = torch.Generator().manual_seed(params.seed + 1)
        epoch, history = 0, {column: [] for column in HISTORY_COLUMNS}
        if (folder / CHECKPOINT).exists():
            epoch, history = _load_checkpoint(folder / CHECKPOINT, model, optimizer, scheduler, order, views, params)
            logger.info("resuming pretraining in %s after epoch %d", folder, epoch)
        resumed_from = epoch or None

        with train._deterministic(runtime.device), tqdm(total=params.epochs, initial=epoch, desc="pretraining",
                                                  unit="epoch", disable=not progress_bar) as bar:
            while epoch < params.epochs:
                start = time.perf_counter()
                loss, accuracy, last_lr = _train_epoch(model, crops, batch, steps, optimizer, scheduler, order, views,
                                                       params, runtime)
                epoch += 1
                row = {"epoch": epoch, "loss": loss, "accuracy": accuracy,
                       "lr": last_lr,
                       "seconds": time.perf_counter() - start}
                for column in HISTORY_COLUMNS:
                    history[column].append(row[column])
                _save_checkpoint(folder / CHECKPOINT, model, optimizer, scheduler, order, views, epoch, history,
                                 params)
                _write_history(folder / HISTORY, history)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}")
                bar.update()

    model.to("cpu").eval()
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    _finish(folder, model, frame, len(rows), params)
    return PretrainResult(model=model, history=frame, n_nuclei=len(rows), resumed_from=resumed_from, reused=False,
                          seconds=time.perf_counter() - started)


def _train_epoch(model: ContrastiveModel, crops: Tensor, batch: int, steps: int, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, order: torch.Generator, views: torch.Generator,
                 params: PretrainStageParams, runtime: train._Runtime) -> tuple[float, float, float]:
    """One shuffled pass over ``crops`` (uint8, on the CPU) in ``steps`` batches.

    Returns the mean loss, the mean pair accuracy and the learning rate of the last step.
    """
    model.train()
    permutation = torch.randperm(len(crops), generator=order)
    loss_sum = accuracy_sum = torch.zeros((), device=runtime.device)
    last_lr = scheduler.get_last_lr()[0]
    for step in range(steps):
        images = crops[permutation[step * batch:(step + 1) * batch]].to(runtime.device, non_blocking=True)
        options = dict(input_size=params.input_size, crop_scale=params.crop_scale, noise_sd=params.noise_sd,
                       max_shift=params.max_shift)
        first = augment_views(images, views, **options)
        second = augment_views(images, views, **options)
        with runtime.autocast():
            _, z = model(torch.cat([first, second]))
        z = z.float()
        loss = nt_xent(z[:batch], z[batch:], params.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last_lr = scheduler.get_last_lr()[0]
        scheduler.step()
        loss_sum = loss_sum + loss.detach()
        accuracy_sum = accuracy_sum + pair_accuracy(z[:batch], z[batch:])
    return (loss_sum / steps).item(), (accuracy_sum / steps).item(), last_lr


def _drawn_rows(images_dir: Path, folder: Path, params: PretrainStageParams) -> np.ndarray:
    """The crop rows of this pretraining: read from ``folder`` when drawn before, else drawn and saved."""
    path = folder / TaskFiles.PRETRAIN_NUCLEI
    if path.exists():
        return np.load(path)
    nuclei = pd.read_parquet(images_dir / artifact_name("images", "nuclei"))
    if QC_PASS in nuclei:
        nuclei = nuclei[nuclei[QC_PASS].astype(bool)]
    available = nuclei["crop_index"].to_numpy(np.int64)
    count = len(available) if params.max_nuclei is None else min(params.max_nuclei, len(available))
    batch_plan(count, params.batch_size)  # refuse too few nuclei before writing anything
    picked = np.sort(np.random.default_rng(params.seed).choice(len(available), size=count, replace=False))
    rows = available[picked]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, rows)
    return rows


def _stored_params(params: PretrainStageParams) -> dict[str, Any]:
    return params.model_dump(mode="json")


def _check_params(stored: dict[str, Any], params: PretrainStageParams, path: Path) -> None:
    """Refuse to continue or reuse a pretraining written with other params (device and threads may change)."""
    train._check_params(stored, _stored_params(params), path, ignore=RUNTIME_PARAMS, what="pretraining")


def _save_checkpoint(path: Path, model: ContrastiveModel, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, order: torch.Generator,
                     views: torch.Generator, epoch: int, history: dict[str, list], params: PretrainStageParams) -> None:
    """Everything the next epoch depends on, as tensors, dicts, lists and numbers (``weights_only``)."""
    state = {"epoch": epoch, "history": history, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "order_rng": order.get_state(), "views_rng": views.get_state(),
             "params": _stored_params(params)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, model: ContrastiveModel, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, order: torch.Generator, views: torch.Generator,
                     params: PretrainStageParams) -> tuple[int, dict[str, list]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    _check_params(state["params"], params, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    order.set_state(state["order_rng"])
    views.set_state(state["views_rng"])
    return state["epoch"], state["history"]


def _write_history(path: Path, history: dict[str, list]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(tmp, index=False)


def _finish(folder: Path, model: ContrastiveModel, history: pd.DataFrame, n_nuclei: int,
            params: PretrainStageParams) -> None:
    """Write the final weights, then the ``DONE`` marker; drop the checkpoint."""
    with atomic_path(folder / FINAL_MODEL) as tmp:
        torch.save(model.state_dict(), tmp)
    last = history.iloc[-1]
    summary = {"epochs": len(history), "final_loss": float(last["loss"]), "final_accuracy": float(last["accuracy"]),
               "n_nuclei": n_nuclei, "params": _stored_params(params)}
    write_text_atomic(folder / DONE, json.dumps(summary, indent=2) + "\n")
    (folder / CHECKPOINT).unlink(missing_ok=True)


def _load_finished(folder: Path, params: PretrainStageParams, started: float) -> PretrainResult:
    summary = json.loads((folder / DONE).read_text())
    _check_params(summary["params"], params, folder / DONE)
    model = ContrastiveModel.from_params(params)
    model.load_state_dict(torch.load(folder / FINAL_MODEL, map_location="cpu", weights_only=True))
    model.eval()
    logger.info("pretraining in %s already finished (%d epochs); loaded its weights", folder, summary["epochs"])
    return PretrainResult(model=model, history=pd.read_csv(folder / HISTORY), n_nuclei=summary["n_nuclei"],
                          resumed_from=None, reused=True, seconds=time.perf_counter() - started)


# --- the encoder and what it sees ----------------------------------------------------------------------

def encoder_state(model: ContrastiveModel, branch: str = "nucleus") -> dict[str, Tensor]:
    """The trunk's state dict under ``trunks.<branch>.``: the key names of that trunk in an ``ImageEnsemble``.

    Load it with ``ensemble.load_state_dict(state, strict=False)``: exactly the trunk's tensors are
    replaced (``fc`` included, which needs the ensemble's ``branch_dim`` to be the pretraining's).

    Returns
    -------
    dict
        Detached CPU copies of the tensors.
    """
    return {f"trunks.{branch}.{key}": value.detach().to("cpu", copy=True)
            for key, value in model.trunk.state_dict().items()}


def write_encoder(model: ContrastiveModel, path: str | Path, *, branch: str = "nucleus") -> Path:
    """Save :func:`encoder_state` with ``torch.save``, atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        torch.save(encoder_state(model, branch), tmp)
    return Path(path)


def embed_crops(trunk: ResNet, crops: Tensor, *, input_size: int, batch_size: int = 512,
                device: str | torch.device = "cpu") -> np.ndarray:
    """Pooled features (before ``fc``) of crops, without augmentation, in eval mode.

    The crops are scaled to [0, 1], standardised and resized bilinearly to ``input_size`` (as
    :meth:`~image2reg.cnn.ensemble.ImageEnsemble.resize`). ``trunk`` is moved to ``device`` and left in
    eval mode there.

    Parameters
    ----------
    trunk
        A ResNet (e.g. ``ContrastiveModel.trunk``).
    crops
        uint8, N × 1 × S × S.
    input_size
        Side the trunk sees.
    batch_size
        Crops per forward pass.
    device
        ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.

    Returns
    -------
    numpy.ndarray
        float32, N × ``trunk.num_features``.
    """
    device = resolve_device(device)
    trunk.to(device).eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            images = standardize(to_unit_interval(crops[start:start + batch_size].to(device)))
            if images.shape[-2:] != (input_size, input_size):
                images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False,
                                       antialias=False)
            parts.append(trunk.features(images).float().cpu())
    if not parts:
        return np.zeros((0, trunk.num_features), np.float32)
    return torch.cat(parts).numpy()


def probe_features(embeddings: np.ndarray, profiles: pd.DataFrame, *, groups: Sequence | np.ndarray | None = None,
                   seed: int = 0, n_splits: int = 5) -> pd.DataFrame:
    """Cross-validated R² of a linear read-out (ridge) of each classical feature from the embeddings.

    Per fold, the embeddings are standardised on the training rows and a ``RidgeCV`` (alphas
    10⁻³…10⁴, chosen per feature by efficient leave-one-out on the training rows) is fitted to all
    features at once; the R² of a feature is computed once over all out-of-fold predictions
    (``1 − SS_res / SS_tot``), so it is near 0 (slightly below) for a feature the embeddings know
    nothing about and near 1 for one they hold linearly. Folds: ``KFold`` (shuffled with ``seed``),
    or ``GroupKFold`` when ``groups`` is given (e.g. the fields, so that no field is in both parts).

    Parameters
    ----------
    embeddings
        N × d.
    profiles
        N rows of classical features (``shape_*``, ``intensity_*``, ``texture_*``, ``radial_*``), in
        the embeddings' order. Non-numeric columns are ignored, NaN replaced by the column's median,
        constant columns (and all-NaN ones) skipped.
    groups
        N group labels for ``GroupKFold``; None: ``KFold``.
    seed
        Shuffling of ``KFold``.
    n_splits
        Folds.

    Returns
    -------
    pandas.DataFrame
        One row per probed feature, in the columns' order: ``feature``, ``group`` (the name's prefix
        before the first ``_``), ``r2``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) != len(profiles):
        raise ValueError(f"embeddings must be N × d with one row per profile, got {embeddings.shape} and "
                         f"{len(profiles)} profiles")
    numeric = profiles.select_dtypes(include="number")
    targets = numeric.fillna(numeric.median()).astype(np.float64)
    spread = targets.std()
    kept = [column for column in targets.columns if spread[column] > 0]
    columns = ["feature", "group", "r2"]
    if not kept:
        return pd.DataFrame(columns=columns)
    y = targets[kept].to_numpy()
    # Standardised targets: one scale for every feature, so that one alpha grid suits them all.
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    if groups is None:
        folds, fold_groups = KFold(n_splits, shuffle=True, random_state=seed), None
    else:
        folds, fold_groups = GroupKFold(n_splits), np.asarray(groups)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15), alpha_per_target=True))
    predicted = cross_val_predict(model, embeddings, y, cv=folds, groups=fold_groups)
    predicted = predicted.reshape(y.shape)
    r2 = 1 - ((y - predicted) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return pd.DataFrame({"feature": kept, "group": [name.split("_", 1)[0] for name in kept], "r2": r2},
                        columns=columns)
