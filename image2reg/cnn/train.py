"""Training of the image encoder: class-weighted cross-entropy, Adam, early stopping, resumable.

The setup follows the reference (method §4.2): Adam, cross-entropy weighted by inverse class
frequency of the training split, model selection on the validation balanced accuracy after every
epoch, early stopping, and the best weights restored at the end. Five quirks of the reference are
fixed (method §11):

- no ``ReduceLROnPlateau``: the reference re-created it in every batch, so it never acted (quirk 2);
- every validation and prediction sample counts: no ``drop_last`` outside training (quirk 3);
- :func:`class_weights` is indexed by class code, not by ``np.unique`` order, so a class missing from
  the training split cannot shift the weights of the others (quirk 5);
- :func:`predict` never augments, also on the training split (quirk 6);
- ``patience`` is the number of epochs without improvement after which training stops; the
  reference's ``>`` test stopped one epoch later (quirk 7). ``patience=6`` reproduces its
  ``early_stopping: 5``.

A loader is any iterable of batches, dicts of tensors: ``"nucleus"`` (uint8, N × 1 × 64 × 64),
optionally ``"region"`` (uint8, N × 1 × S × S), ``"label"`` (int64, N) and ``"index"`` (int64, N,
row ids of the nucleus table). The images are moved to the device, scaled with
:func:`~image2reg.cnn.augment.to_unit_interval`, flipped at random when training (from a generator of
their own) and standardised with :func:`~image2reg.cnn.augment.standardize`.

:func:`train_model` writes a checkpoint after every epoch and continues from it when run again, ending
in the same state as an uninterrupted run: the checkpoint holds the model, the optimiser, the early
stopping state and the random states (torch's global generator, from which a shuffling
``DataLoader`` draws, and the flip generator). A finished training leaves ``best_model.pt`` and
``done.json`` and is loaded instead of repeated.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor, nn
from tqdm import tqdm

from image2reg.cnn.augment import random_flips, standardize, to_unit_interval
from image2reg.cnn.ensemble import BRANCHES
from image2reg.config import TrainingParams
from image2reg.devices import resolve_device
from image2reg.layout import TaskFiles, atomic_path, write_text_atomic

logger = logging.getLogger("image2reg")

Batch = Mapping[str, Tensor]

CHECKPOINT, HISTORY, BEST_MODEL, DONE = TaskFiles.CHECKPOINT, TaskFiles.HISTORY, TaskFiles.BEST_MODEL, TaskFiles.DONE
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy")


@dataclass
class TrainingResult:
    """What :func:`train_model` did; the model passed to it holds the best weights.

    Attributes
    ----------
    best_epoch
        Epoch (from 1) of the best validation balanced accuracy, whose weights the model holds.
    best_balanced_accuracy
        That validation balanced accuracy.
    history
        One row per epoch: ``epoch``, ``train_loss``, ``train_accuracy`` (on augmented batches),
        ``val_loss``, ``val_accuracy``, ``val_balanced_accuracy``.
    stopped_early
        Whether early stopping ended training before ``params.epochs``.
    resumed_from
        The last finished epoch found in a checkpoint, or None for a training from scratch.
    reused
        Whether a finished training was loaded from ``checkpoint_dir`` instead of run.
    """

    best_epoch: int
    best_balanced_accuracy: float
    history: pd.DataFrame
    stopped_early: bool
    resumed_from: int | None = None
    reused: bool = False


def class_weights(labels: np.ndarray, n_classes: int) -> Tensor:
    """Inverse-frequency weights of the training labels, indexed by class code and summing to 1.

    As the reference's ``N / n_c`` normalised to sum 1, but position ``c`` always holds class ``c``.
    A class without training samples gets weight 0 (and a warning): it cannot be learnt, and its
    validation samples then do not count in the loss.

    Parameters
    ----------
    labels
        Integer class codes of the training samples, in ``[0, n_classes)``.
    n_classes
        Number of classes of the model.

    Returns
    -------
    Tensor
        float32, shape ``(n_classes,)``.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("no training labels")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be integer class codes in [0, {n_classes}), "
                         f"got {labels.dtype} in [{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=n_classes)
    absent = np.flatnonzero(counts == 0)
    if absent.size:
        logger.warning("classes %s have no training samples; their loss weight is 0", absent.tolist())
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = labels.size / counts[present]
    return torch.as_tensor(weights / weights.sum(), dtype=torch.float32)


def train_model(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    params: TrainingParams,
    *,
    checkpoint_dir: str | Path,
    n_classes: int,
    train_labels: np.ndarray,
    progress_bar: bool = True,
) -> TrainingResult:
    """Train ``model`` with early stopping on the validation balanced accuracy; resumable.

    Every epoch trains on all batches of ``train_loader`` (flipped at random), then predicts
    ``val_loader`` without augmentation. The epoch with the best validation balanced accuracy is
    kept; training stops after ``params.patience`` epochs without a better one, or after
    ``params.epochs``, and the model gets the best weights back. Runs on the CPU are deterministic
    for ``params.seed``; the seed is applied here, so seed the model's initialisation before.

    Files in ``checkpoint_dir``: ``checkpoint.pt`` (after every epoch, atomically; removed when
    training ends), ``history.csv`` (after every epoch), and at the end ``best_model.pt`` (the best
    state dict) and ``done.json`` (the summary). With ``checkpoint.pt`` present, training continues
    after its epoch; with ``done.json`` present, the best weights are loaded and nothing is trained.
    The model's architecture and ``params`` (the device aside) must be those of the first run.

    Parameters
    ----------
    model
        Module mapping a dict of standardised images to ``(logits, latents)``, e.g.
        :class:`~image2reg.cnn.ensemble.ImageEnsemble`. Moved to the device.
    train_loader, val_loader
        Iterables of batches (see the module docstring), iterated once per epoch. A shuffling loader
        either has ``set_epoch(epoch)`` (called before each epoch, as
        :class:`~image2reg.cnn.datasets.NucleusBatches` has) or draws from torch's global generator
        (as ``DataLoader(shuffle=True)`` does), which is seeded and checkpointed here; either way a
        resumed training sees the same batches.
    params
        Optimiser, early stopping, seed and device.
    checkpoint_dir
        Folder of this training's files.
    n_classes
        Number of classes of the model's head.
    train_labels
        Class codes of all training samples, for :func:`class_weights`.
    progress_bar
        Show a tqdm bar over epochs.

    Returns
    -------
    TrainingResult
        Best epoch and score, per-epoch history, whether training stopped early or was resumed.
    """
    checkpoint_dir = Path(checkpoint_dir)
    runtime = _Runtime.for_training(params)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    if (checkpoint_dir / DONE).exists():
        return _load_finished(model, checkpoint_dir, params)

    weights = class_weights(train_labels, n_classes).to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay,
                                 foreach=True)  # one kernel per step over all tensors, also on CPU
    scaler = torch.amp.GradScaler("cuda") if runtime.amp_dtype == torch.float16 else None
    torch.manual_seed(params.seed)
    flips = torch.Generator().manual_seed(params.seed)
    progress = _Progress()
    if (checkpoint_dir / CHECKPOINT).exists():
        progress = _load_checkpoint(checkpoint_dir / CHECKPOINT, model, optimizer, scaler, flips, runtime, params)
        logger.info("resuming training in %s after epoch %d", checkpoint_dir, progress.epoch)

    resumed_from = progress.epoch or None
    with _deterministic(runtime.device), tqdm(total=params.epochs, initial=progress.epoch, desc="training",
                                              unit="epoch", disable=not progress_bar) as bar:
        while progress.epoch < params.epochs and progress.waited < params.patience:
            start = time.perf_counter()
            if hasattr(train_loader, "set_epoch"):  # loaders that shuffle per epoch (NucleusBatches)
                train_loader.set_epoch(progress.epoch)
            train_loss, train_accuracy = _train_epoch(model, train_loader, optimizer, scaler, weights, flips, runtime)
            val = _predict(model, val_loader, runtime)
            row = {"epoch": progress.epoch + 1, "train_loss": train_loss, "train_accuracy": train_accuracy,
                   **_validation_metrics(val, weights.cpu())}
            progress.record(row, model)
            _save_checkpoint(checkpoint_dir / CHECKPOINT, model, optimizer, scaler, flips, progress, runtime, params)
            _write_history(checkpoint_dir / HISTORY, progress.history)
            logger.debug("epoch %d (%.1f s): %s", progress.epoch, time.perf_counter() - start, row)
            bar.set_postfix(val_bacc=f"{row['val_balanced_accuracy']:.3f}", best=f"{progress.best_score:.3f}")
            bar.update()

    model.load_state_dict(progress.best_model)
    result = TrainingResult(best_epoch=progress.best_epoch, best_balanced_accuracy=progress.best_score,
                            history=progress.history_frame(), stopped_early=progress.epoch < params.epochs,
                            resumed_from=resumed_from)
    if result.stopped_early:
        logger.info("early stopping after epoch %d: no better validation balanced accuracy than %.4f (epoch %d) "
                    "for %d epochs", progress.epoch, progress.best_score, progress.best_epoch, params.patience)
    _finish(checkpoint_dir, progress.best_model, result, params)
    return result


def predict(model: nn.Module, loader: Iterable[Batch], device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Logits, predicted classes and latents of every sample of ``loader``, without augmentation.

    The model is put in eval mode (batch-norm running statistics, no flips), and all samples count:
    use it for the training split too, whose latents the reference extracted with flips.

    Parameters
    ----------
    model
        Module mapping a dict of standardised images to ``(logits, latents)``; moved to ``device``.
    loader
        Iterable of batches (see the module docstring); ``"label"`` is optional.
    device
        ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.

    Returns
    -------
    dict
        ``logits`` (N × classes, float32), ``predicted`` (N, int64), ``latents`` (N × latent_dim,
        float32), ``indices`` (N, int64) and, when every batch has labels, ``labels`` (N, int64), in
        the order of the loader.
    """
    runtime = _Runtime(resolve_device(device))
    model.to(runtime.device)
    return {key: value.numpy() for key, value in _predict(model, loader, runtime).items()}


@dataclass(frozen=True)
class _Runtime:
    """Device and the CUDA-only speed-ups; CPU runs use neither autocast nor channels-last."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def for_training(cls, params: TrainingParams) -> _Runtime:
        device = resolve_device(params.device)
        if device.type != "cuda":
            return cls(device)
        amp_dtype = None
        if params.mixed_precision:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, amp_dtype, params.channels_last)

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def inputs(self, model: nn.Module, batch: Batch, flips: torch.Generator | None = None) -> dict[str, Tensor]:
        """The model's images of ``batch`` on the device, in [0, 1], flipped when ``flips`` is given, standardised."""
        names = getattr(model, "branches", BRANCHES)
        inputs = {}
        for name in BRANCHES:
            if name not in names or name not in batch:
                continue
            images = to_unit_interval(batch[name].to(self.device, non_blocking=True))
            if flips is not None:
                images = random_flips(images, flips)
            images = standardize(images)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            inputs[name] = images
        return inputs


@dataclass
class _Progress:
    """Early-stopping state and history after ``epoch`` finished epochs."""

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -np.inf
    waited: int = 0
    best_model: dict[str, Tensor] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=lambda: {column: [] for column in HISTORY_COLUMNS})

    def record(self, row: dict[str, float], model: nn.Module) -> None:
        self.epoch = row["epoch"]
        for column in HISTORY_COLUMNS:
            self.history[column].append(row[column])
        if row["val_balanced_accuracy"] > self.best_score:
            self.best_epoch, self.best_score, self.waited = self.epoch, row["val_balanced_accuracy"], 0
            self.best_model = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
        else:
            self.waited += 1

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS))


def _train_epoch(model: nn.Module, loader: Iterable[Batch], optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, weights: Tensor, flips: torch.Generator,
                 runtime: _Runtime) -> tuple[float, float]:
    """One pass over ``loader``; returns the class-weighted mean loss and the accuracy."""
    model.train()
    # Sums stay on the device, so that no batch waits for a GPU → CPU copy.
    loss_sum = weight_sum = correct = torch.zeros((), device=runtime.device)
    count = 0
    for batch in loader:
        labels = batch["label"].to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits, _ = model(runtime.inputs(model, batch, flips))
        loss = F.cross_entropy(logits.float(), labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        batch_weight = weights[labels].sum()
        loss_sum = loss_sum + loss.detach() * batch_weight
        weight_sum = weight_sum + batch_weight
        correct = correct + (logits.detach().argmax(dim=1) == labels).sum()
        count += len(labels)
    if count == 0:
        raise ValueError("the training loader yielded no batches")
    return (loss_sum / weight_sum).item(), (correct / count).item()


def _predict(model: nn.Module, loader: Iterable[Batch], runtime: _Runtime) -> dict[str, Tensor]:
    """Eval-mode outputs of every batch of ``loader``, concatenated on the CPU."""
    model.eval()
    parts: dict[str, list[Tensor]] = {"logits": [], "latents": [], "indices": [], "labels": []}
    with torch.inference_mode():
        for batch in loader:
            with runtime.autocast():
                logits, latents = model(runtime.inputs(model, batch))
            parts["logits"].append(logits.float().cpu())
            parts["latents"].append(latents.float().cpu())
            parts["indices"].append(batch["index"].cpu())
            if "label" in batch:
                parts["labels"].append(batch["label"].cpu())
    if not parts["logits"]:
        raise ValueError("the loader yielded no batches")
    if len(parts["labels"]) != len(parts["logits"]):
        del parts["labels"]
    outputs = {key: torch.cat(values) for key, values in parts.items()}
    outputs["predicted"] = outputs["logits"].argmax(dim=1)
    return outputs


def _validation_metrics(outputs: dict[str, Tensor], weights: Tensor) -> dict[str, float]:
    if "labels" not in outputs:
        raise ValueError("the validation loader must yield labels")
    labels, predicted = outputs["labels"], outputs["predicted"]
    with warnings.catch_warnings():
        # Predicted classes that are absent from validation have no recall; sklearn skips them.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = balanced_accuracy_score(labels.numpy(), predicted.numpy())
    return {"val_loss": F.cross_entropy(outputs["logits"], labels, weight=weights).item(),
            "val_accuracy": (predicted == labels).double().mean().item(),
            "val_balanced_accuracy": float(balanced)}


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels inside the block; the caller's settings come back afterwards.

    On CUDA some kernels (e.g. the bilinear resize's backward) have no deterministic version, so
    they only warn there: GPU runs are close to, not bit-for-bit, reproducible.
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2:]


def _check_params(stored: dict[str, Any], current: dict[str, Any], path: Path, *, ignore: tuple[str, ...] = ("device",),
                  what: str = "training") -> None:
    """Refuse to continue or reuse a ``what`` written with other params than ``current`` (the ``ignore`` keys, which
    do not change what is learnt, may differ)."""
    current = {key: value for key, value in current.items() if key not in ignore}
    stored = {key: value for key, value in stored.items() if key not in ignore}
    if stored != current:
        changed = sorted(key for key in current.keys() | stored.keys() if stored.get(key) != current.get(key))
        raise ValueError(f"{path} was written with other {what} params ({', '.join(changed)}); "
                         f"delete {path.parent} to train again")


def _save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, flips: torch.Generator, progress: _Progress,
                     runtime: _Runtime, params: TrainingParams) -> None:
    """Everything the next epoch depends on, as tensors, dicts, lists and numbers (``weights_only``)."""
    state = {"epoch": progress.epoch, "best_epoch": progress.best_epoch, "best_score": progress.best_score,
             "waited": progress.waited, "history": progress.history, "best_model": progress.best_model,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "flip_rng": flips.get_state(), "params": params.model_dump()}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if runtime.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(runtime.device)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, flips: torch.Generator, runtime: _Runtime,
                     params: TrainingParams) -> _Progress:
    """Restore model, optimiser and random states from ``path``; returns the early-stopping state."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    _check_params(state["params"], params.model_dump(), path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    flips.set_state(state["flip_rng"])
    if runtime.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], runtime.device)
    return _Progress(epoch=state["epoch"], best_epoch=state["best_epoch"], best_score=state["best_score"],
                     waited=state["waited"], best_model=state["best_model"], history=state["history"])


def _write_history(path: Path, history: dict[str, list]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(tmp, index=False)


def _finish(checkpoint_dir: Path, best_model: dict[str, Tensor], result: TrainingResult,
            params: TrainingParams) -> None:
    """Write the best weights, then the ``done.json`` marker; drop the checkpoint."""
    with atomic_path(checkpoint_dir / BEST_MODEL) as tmp:
        torch.save(best_model, tmp)
    summary = {"best_epoch": result.best_epoch, "best_balanced_accuracy": result.best_balanced_accuracy,
               "stopped_early": result.stopped_early, "epochs": len(result.history),
               "params": params.model_dump()}
    write_text_atomic(checkpoint_dir / DONE, json.dumps(summary, indent=2) + "\n")
    (checkpoint_dir / CHECKPOINT).unlink(missing_ok=True)


def _load_finished(model: nn.Module, checkpoint_dir: Path, params: TrainingParams) -> TrainingResult:
    summary = json.loads((checkpoint_dir / DONE).read_text())
    _check_params(summary["params"], params.model_dump(), checkpoint_dir / DONE)
    model.load_state_dict(torch.load(checkpoint_dir / BEST_MODEL, map_location="cpu", weights_only=True))
    logger.info("training in %s already finished (best epoch %d); loaded its best weights",
                checkpoint_dir, summary["best_epoch"])
    return TrainingResult(best_epoch=summary["best_epoch"], best_balanced_accuracy=summary["best_balanced_accuracy"],
                          history=pd.read_csv(checkpoint_dir / HISTORY), stopped_early=summary["stopped_early"],
                          reused=True)
