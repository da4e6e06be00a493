"""Training loop: learning, early stopping, determinism, resuming, reuse, class weights, prediction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from image2reg.cnn.augment import standardize, to_unit_interval
from image2reg.cnn.ensemble import ImageEnsemble
from image2reg.cnn.train import TrainingParams, class_weights, predict, train_model

N_CLASSES = 3
BATCH = 12


def make_model(seed: int = 0) -> ImageEnsemble:
    torch.manual_seed(seed)
    return ImageEnsemble(N_CLASSES, branches=("nucleus",), latent_dim=16, input_size=32, width=4)


def make_params(**changes) -> TrainingParams:
    settings = dict(epochs=4, learning_rate=3e-3, weight_decay=0.0, patience=10, batch_size=BATCH, seed=0,
                    device="cpu")
    return TrainingParams(**(settings | changes))


def toy_batches(n_per_class: int, seed: int, *, constant: bool = False, batch_size: int = BATCH) -> list[dict]:
    """Nuclei whose brightness gives their class (flip-invariant, so separable under augmentation).

    With ``constant`` every image is the same, whatever its label: no model can tell them apart.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(N_CLASSES), n_per_class))
    if constant:
        images = np.full((len(labels), 1, 64, 64), 100, dtype=np.uint8)
    else:
        noise = rng.normal(0, 15, size=(len(labels), 1, 64, 64))
        images = np.clip(40 + 80 * labels[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return [{"nucleus": torch.from_numpy(images[start:start + batch_size]),
             "label": torch.from_numpy(labels[start:start + batch_size]).long(),
             "index": torch.arange(start, min(start + batch_size, len(labels)))}
            for start in range(0, len(labels), batch_size)]


def labels_of(batches: list[dict]) -> np.ndarray:
    return torch.cat([batch["label"] for batch in batches]).numpy()


class Shuffled:
    """A loader that reorders its batches every epoch from torch's global generator, as DataLoader does."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[dict]:
        return iter([self.batches[i] for i in torch.randperm(len(self.batches)).tolist()])


class FailsAtEpoch(Shuffled):
    """Raises when epoch ``fail_at`` (from 1) asks for its first batch: a training killed mid-run."""

    def __init__(self, batches: list[dict], fail_at: int) -> None:
        super().__init__(batches)
        self.fail_at, self.epochs = fail_at, 0

    def __iter__(self) -> Iterator[dict]:
        self.epochs += 1
        if self.epochs == self.fail_at:
            raise KeyboardInterrupt("killed")
        return super().__iter__()


class Snapshots:
    """A validation loader that keeps a copy of the model's state each time it is read (after every epoch)."""

    def __init__(self, batches: list[dict], model: torch.nn.Module) -> None:
        self.batches, self.model, self.states = batches, model, []

    def __iter__(self) -> Iterator[dict]:
        self.states.append({key: value.clone() for key, value in self.model.state_dict().items()})
        return iter(self.batches)


class Recorder(torch.nn.Module):
    """Wraps a model and keeps the nucleus inputs it gets, by mode (``True``: training)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = make_model()
        self.branches = self.model.branches
        self.seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen[self.training].append(batch["nucleus"].clone())
        return self.model(batch)


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    return {"train": toy_batches(16, seed=1), "val": toy_batches(8, seed=2)}


@pytest.mark.slow  # trains a CNN to convergence
def test_learns_separable_classes_and_reuses_finished_training(data, tmp_path):
    model = make_model()
    params = make_params(epochs=12, patience=3)
    result = train_model(model, data["train"], data["val"], params, checkpoint_dir=tmp_path, n_classes=N_CLASSES,
                         train_labels=labels_of(data["train"]), progress_bar=False)

    assert result.best_balanced_accuracy >= 0.9
    assert result.history["val_balanced_accuracy"].max() == result.best_balanced_accuracy
    assert result.history.loc[result.best_epoch - 1, "val_balanced_accuracy"] == result.best_balanced_accuracy
    assert list(result.history["epoch"]) == list(range(1, len(result.history) + 1))
    assert result.stopped_early and len(result.history) == result.best_epoch + params.patience
    assert result.resumed_from is None and not result.reused
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best_model.pt", "done.json", "history.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "history.csv"), result.history)
    best = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert same_weights(best, model.state_dict())
    assert json.loads((tmp_path / "done.json").read_text())["best_epoch"] == result.best_epoch

    # A finished training is loaded, not repeated: the loader would fail if it were read.
    again = make_model(seed=5)
    reused = train_model(again, FailsAtEpoch(data["train"], fail_at=1), data["val"], params, checkpoint_dir=tmp_path,
                         n_classes=N_CLASSES, train_labels=labels_of(data["train"]), progress_bar=False)
    assert reused.reused and reused.best_epoch == result.best_epoch
    assert reused.best_balanced_accuracy == result.best_balanced_accuracy
    pd.testing.assert_frame_equal(reused.history, result.history)
    assert same_weights(again.state_dict(), best)

    with pytest.raises(ValueError, match="learning_rate"):
        train_model(make_model(), data["train"], data["val"], make_params(epochs=12, patience=3, learning_rate=1e-3),
                    checkpoint_dir=tmp_path, n_classes=N_CLASSES, train_labels=labels_of(data["train"]),
                    progress_bar=False)


def test_early_stopping_waits_patience_epochs_and_restores_best_weights(data, tmp_path):
    # Identical validation images get one prediction, so the balanced accuracy is 1/3 in every epoch:
    # epoch 1 stays the best, and training must stop exactly `patience` epochs later.
    model = make_model()
    val = Snapshots(toy_batches(4, seed=3, constant=True), model)
    result = train_model(model, data["train"], val, make_params(epochs=10, patience=2), checkpoint_dir=tmp_path,
                         n_classes=N_CLASSES, train_labels=labels_of(data["train"]), progress_bar=False)

    assert result.history["val_balanced_accuracy"].tolist() == pytest.approx([1 / 3] * 3)
    assert result.best_epoch == 1 and len(result.history) == 3 and result.stopped_early
    assert same_weights(model.state_dict(), val.states[0])
    assert not same_weights(model.state_dict(), val.states[-1])


def test_same_seed_same_run_other_seed_other_run(data, tmp_path):
    runs = []
    for run, seed in enumerate([0, 0, 1]):
        model = make_model()
        result = train_model(model, Shuffled(data["train"]), data["val"], make_params(epochs=2, seed=seed),
                             checkpoint_dir=tmp_path / str(run), n_classes=N_CLASSES,
                             train_labels=labels_of(data["train"]), progress_bar=False)
        runs.append((result.history, model.state_dict()))

    pd.testing.assert_frame_equal(runs[0][0], runs[1][0], check_exact=True)
    assert same_weights(runs[0][1], runs[1][1])
    assert not same_weights(runs[0][1], runs[2][1])
    assert not torch.are_deterministic_algorithms_enabled()


def test_resumed_training_ends_as_an_uninterrupted_one(data, tmp_path):
    params = make_params(epochs=4)
    arguments = dict(n_classes=N_CLASSES, train_labels=labels_of(data["train"]), progress_bar=False)
    whole = make_model()
    expected = train_model(whole, Shuffled(data["train"]), data["val"], params, checkpoint_dir=tmp_path / "whole",
                           **arguments)

    with pytest.raises(KeyboardInterrupt):
        train_model(make_model(), FailsAtEpoch(data["train"], fail_at=3), data["val"], params,
                    checkpoint_dir=tmp_path / "killed", **arguments)
    checkpoint = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]["epoch"]) == 2
    assert len(pd.read_csv(tmp_path / "killed" / "history.csv")) == 2

    # Other initial weights and another global random state: everything must come from the checkpoint.
    resumed = make_model(seed=7)
    torch.manual_seed(99)
    result = train_model(resumed, Shuffled(data["train"]), data["val"], params, checkpoint_dir=tmp_path / "killed",
                         **arguments)
    assert result.resumed_from == 2
    pd.testing.assert_frame_equal(result.history, expected.history, check_exact=True)
    assert result.best_epoch == expected.best_epoch
    assert same_weights(resumed.state_dict(), whole.state_dict())
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()


def test_training_batches_are_flipped_validation_batches_not(tmp_path):
    batches = toy_batches(4, seed=5)
    recorder = Recorder()
    train_model(recorder, batches, batches, make_params(epochs=1), checkpoint_dir=tmp_path, n_classes=N_CLASSES,
                train_labels=labels_of(batches), progress_bar=False)

    plain = [standardize(to_unit_interval(batch["nucleus"])) for batch in batches]
    assert all(torch.equal(seen, images) for seen, images in zip(recorder.seen[False], plain, strict=True))
    trained = torch.cat(recorder.seen[True])
    plain = torch.cat(plain)
    assert not torch.equal(trained, plain)
    symmetries = [plain, plain.flip(-1), plain.flip(-2), plain.flip(-1).flip(-2)]
    assert all(any(torch.equal(image, variant[i]) for variant in symmetries) for i, image in enumerate(trained))


def test_class_weights_are_indexed_by_class_code(caplog):
    assert class_weights(np.array([0, 0, 0, 1]), 2).tolist() == pytest.approx([0.25, 0.75])
    with caplog.at_level(logging.WARNING, logger="image2reg"):
        weights = class_weights(np.array([2, 2, 2, 2, 0, 0]), 3)
    # N / n_c = [3, –, 1.5], normalised; np.unique order would have put 1.5 second.
    assert weights.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3])
    assert "[1]" in caplog.text and "no training samples" in caplog.text
    with pytest.raises(ValueError, match="class codes"):
        class_weights(np.array([0, 3]), 3)


def test_predict_covers_every_sample_without_augmentation():
    model = make_model()
    batches = toy_batches(9, seed=4, batch_size=10)  # 27 nuclei: batches of 10, 10 and 7
    first, second = predict(model, batches), predict(model, batches)

    assert not model.training
    assert first["indices"].tolist() == list(range(27))
    assert first["labels"].tolist() == labels_of(batches).tolist()
    assert first["logits"].shape == (27, N_CLASSES) and first["latents"].shape == (27, 16)
    assert first["predicted"].tolist() == first["logits"].argmax(axis=1).tolist()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    unlabelled = predict(model, [{key: batch[key] for key in ("nucleus", "index")} for batch in batches])
    assert "labels" not in unlabelled
    np.testing.assert_array_equal(unlabelled["latents"], first["latents"])


def test_loaders_with_set_epoch_are_told_the_epoch_even_after_a_resume(data, tmp_path):
    """A per-epoch shuffling loader (NucleusBatches) learns the epoch from the loop, also after a resume."""

    class EpochLoader(list):
        def __init__(self, batches, fail_at=None):
            super().__init__(batches)
            self.epochs, self.fail_at = [], fail_at

        def set_epoch(self, epoch):
            if epoch == self.fail_at:
                raise KeyboardInterrupt
            self.epochs.append(epoch)

    arguments = dict(n_classes=N_CLASSES, train_labels=labels_of(data["train"]), progress_bar=False)
    killed = EpochLoader(data["train"], fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        train_model(make_model(), killed, data["val"], make_params(epochs=4), checkpoint_dir=tmp_path, **arguments)
    resumed = EpochLoader(data["train"])
    train_model(make_model(), resumed, data["val"], make_params(epochs=4), checkpoint_dir=tmp_path, **arguments)
    assert killed.epochs == [0, 1] and resumed.epochs == [2, 3]
