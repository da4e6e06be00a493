"""Self-supervised pretraining: the loss, the views, the resumable training loop, the encoder and the probe."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from image2reg.cnn import pretrain
from image2reg.cnn.augment import standardize, to_unit_interval
from image2reg.cnn.datasets import load_crops
from image2reg.cnn.ensemble import ImageEnsemble
from image2reg.cnn.pretrain import (
    ContrastiveModel,
    augment_views,
    embed_crops,
    encoder_state,
    nt_xent,
    pair_accuracy,
    pretrain_nuclei,
    probe_features,
    write_encoder,
)
from image2reg.config import PretrainStageParams
from image2reg.layout import TaskFiles, artifact_name

TINY = dict(input_size=32, width=2, branch_dim=8, projection_dim=4, epochs=2, batch_size=32, max_nuclei=200,
            seed=0, device="cpu", torch_threads=1)


def tiny_params(**changes) -> PretrainStageParams:
    return PretrainStageParams(**{**TINY, **changes})


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def without_seconds(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="seconds").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------

def test_nt_xent_known_answers():
    identity = torch.eye(2)
    # Each anchor: its partner at cosine 1, the two other views at cosine 0 → −log(e / (e + 2)).
    assert nt_xent(identity, identity, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    assert nt_xent(identity, identity, 0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    # Partners swapped: the partner at cosine 0, one negative at 1, one at 0 → −log(1 / (2 + e)).
    assert nt_xent(identity, identity.flip(0), 1.0).item() == pytest.approx(math.log(2 + math.e), rel=1e-6)
    # Cosine similarity: the projections' lengths do not matter.
    assert nt_xent(3 * identity, 0.5 * identity, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    # All similarities equal (orthogonal views): log(2N − 1).
    four = torch.eye(8)
    assert nt_xent(four[:4], four[4:], 1.0).item() == pytest.approx(math.log(7), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.eye(3), torch.eye(2), 1.0)


def test_nt_xent_is_lowest_for_aligned_separated_pairs():
    generator = torch.Generator().manual_seed(0)
    aligned = torch.eye(16)[:8]
    assert nt_xent(aligned, aligned, 0.1).item() < 1e-3
    noisy = aligned + 0.05 * torch.randn(aligned.shape, generator=generator)
    assert nt_xent(aligned, noisy, 0.1).item() < 0.01
    shuffled = aligned[torch.randperm(8, generator=generator)]
    assert nt_xent(aligned, shuffled, 0.1).item() > 5.0
    assert pair_accuracy(aligned, noisy).item() == 1.0
    assert pair_accuracy(aligned, aligned.roll(1, dims=0)).item() == 0.0


# --------------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------------

def nucleus_like(n: int = 6, size: int = 48, seed: int = 0) -> torch.Tensor:
    """uint8 discs of random brightness with textured interiors on a dark background (values < 128)."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).float()
    brightness = 40 + 60 * torch.rand((n, 1, 1, 1), generator=generator)
    texture = 20 * torch.rand((n, 1, size, size), generator=generator)
    return (disc * (brightness + texture)).round().to(torch.uint8)


def test_views_have_the_model_shape_and_repeat_with_the_generator_state():
    images = nucleus_like()
    options = dict(input_size=32, crop_scale=(0.35, 1.0), noise_sd=0.02)
    views = augment_views(images, torch.Generator().manual_seed(3), **options)
    assert views.shape == (6, 1, 32, 32) and views.dtype == torch.float32
    assert torch.equal(views, augment_views(images, torch.Generator().manual_seed(3), **options))
    generator = torch.Generator().manual_seed(3)
    first, second = augment_views(images, generator, **options), augment_views(images, generator, **options)
    assert torch.equal(first, views) and not torch.equal(first, second)
    with pytest.raises(ValueError, match="crop_scale"):
        augment_views(images, generator, input_size=32, crop_scale=(0.5, 1.2), noise_sd=0.0)


def test_full_crops_without_noise_only_move_pixels():
    images = nucleus_like()
    generator = torch.Generator().manual_seed(1)
    views = augment_views(images, generator, input_size=48, crop_scale=(1.0, 1.0), noise_sd=0.0)
    plain = standardize(to_unit_interval(images))
    # The same multiset of values per image: no brightness, contrast or gamma change, no blur.
    np.testing.assert_allclose(views.flatten(1).sort(dim=1).values, plain.flatten(1).sort(dim=1).values, atol=1e-4)
    symmetries = [plain, plain.flip(-1), plain.flip(-2), plain.flip(-1).flip(-2)]
    symmetries += [image.transpose(-1, -2) for image in symmetries]
    assert all(any(torch.allclose(view, variant[i], atol=1e-4) for variant in symmetries)
               for i, view in enumerate(views))
    assert not torch.allclose(views, plain, atol=1e-4)  # some symmetry other than the identity was drawn


def test_shifted_views_move_the_nucleus_without_resizing_it():
    images = torch.zeros((64, 1, 64, 64), dtype=torch.uint8)
    images[:, :, 24:40, 26:38] = 200  # a 16 × 12 nucleus in the middle, well inside any shift of 1/8
    views = augment_views(images, torch.Generator().manual_seed(3), input_size=64, crop_scale=(1.0, 1.0),
                          noise_sd=0.0, max_shift=0.125)
    unit = views.squeeze(1) - views.squeeze(1).amin(dim=(1, 2), keepdim=True)  # background 0, nucleus > 0
    inside = unit > unit.amax(dim=(1, 2), keepdim=True) / 2
    areas = inside.sum(dim=(1, 2)).float()
    assert torch.allclose(areas, torch.full_like(areas, 16 * 12), atol=16)  # the same size in every view
    rows = torch.arange(64, dtype=torch.float32)
    centres = (inside.float().sum(dim=2) * rows).sum(dim=1) / areas
    assert centres.std() > 2 and (centres - 31.5).abs().max() <= 8.5  # moved, by at most 1/8 of the side
    with pytest.raises(ValueError, match="max_shift"):
        augment_views(images, torch.Generator(), input_size=64, crop_scale=(1.0, 1.0), noise_sd=0.0, max_shift=0.5)


def test_brighter_nuclei_give_brighter_views():
    images = nucleus_like(n=16, seed=2)
    options = dict(input_size=32, crop_scale=(0.35, 1.0), noise_sd=0.02)
    dim = augment_views(images, torch.Generator().manual_seed(5), **options)
    bright = augment_views(images * 2, torch.Generator().manual_seed(5), **options)
    assert (bright.mean(dim=(1, 2, 3)) > dim.mean(dim=(1, 2, 3))).all()
    # The noise is unbiased: the mean of a noisy view is the mean of the noiseless one.
    quiet = augment_views(images, torch.Generator().manual_seed(5), input_size=32, crop_scale=(0.35, 1.0),
                          noise_sd=0.0)
    assert (dim - quiet).std().item() > 0.05
    assert abs((dim - quiet).mean().item()) < 0.01


def test_contrastive_model_projects_the_trunks_outputs():
    torch.manual_seed(0)
    model = ContrastiveModel(width=2, branch_dim=8, projection_dim=4).eval()
    images = torch.randn(3, 1, 32, 32)
    h, z = model(images)
    assert h.shape == (3, 8) and z.shape == (3, 4)
    torch.testing.assert_close(h, model.trunk(images))
    torch.testing.assert_close(z, model.projector(h))


# --------------------------------------------------------------------------------------------
# pretraining
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(smoke_stage01, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain") / "whole"
    return folder, pretrain_nuclei(smoke_stage01, folder, tiny_params(), progress_bar=False)


def test_pretraining_writes_its_files_and_is_reused(finished, smoke_stage01):
    folder, result = finished
    assert not result.reused and result.resumed_from is None
    assert result.history["epoch"].tolist() == [1, 2]
    assert np.isfinite(result.history[["loss", "accuracy", "lr", "seconds"]].to_numpy()).all()
    assert 0 <= result.history["accuracy"].min() and result.history["accuracy"].max() <= 1
    assert result.history["lr"].iloc[0] > result.history["lr"].iloc[1]  # cosine decay
    assert not result.model.training
    rows = np.load(folder / TaskFiles.PRETRAIN_NUCLEI)
    assert len(rows) == result.n_nuclei and np.all(np.diff(rows) > 0)
    assert (folder / TaskFiles.HISTORY).is_file() and (folder / TaskFiles.BEST_MODEL).is_file()
    assert not (folder / TaskFiles.CHECKPOINT).exists()
    done = json.loads((folder / TaskFiles.DONE).read_text())
    assert done["epochs"] == 2 and done["final_loss"] == pytest.approx(result.history["loss"].iloc[-1])
    assert done["params"]["seed"] == 0 and done["n_nuclei"] == result.n_nuclei

    # The threads and the device may change; the work is loaded, not repeated.
    again = pretrain_nuclei(smoke_stage01, folder, tiny_params(torch_threads=2), progress_bar=False)
    assert again.reused and again.n_nuclei == result.n_nuclei
    assert same_weights(again.model.state_dict(), result.model.state_dict())
    pd.testing.assert_frame_equal(again.history, result.history)
    with pytest.raises(ValueError, match=r"other pretraining params \(epochs, temperature\)"):
        pretrain_nuclei(smoke_stage01, folder, tiny_params(epochs=3, temperature=0.5), progress_bar=False)


def test_same_seed_same_weights_other_seed_other_weights(finished, smoke_stage01, tmp_path):
    _, whole = finished
    same = pretrain_nuclei(smoke_stage01, tmp_path / "same", tiny_params(), progress_bar=False)
    assert same_weights(same.model.state_dict(), whole.model.state_dict())
    pd.testing.assert_frame_equal(without_seconds(same.history), without_seconds(whole.history), check_exact=True)
    other = pretrain_nuclei(smoke_stage01, tmp_path / "other", tiny_params(seed=1, epochs=1), progress_bar=False)
    assert not same_weights(other.model.trunk.state_dict(), whole.model.trunk.state_dict())


def test_resumed_pretraining_ends_as_an_uninterrupted_one(finished, smoke_stage01, tmp_path, monkeypatch):
    _, whole = finished
    steps = pretrain.batch_plan(whole.n_nuclei, TINY["batch_size"])[1]
    calls = []
    loss = pretrain.nt_xent

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == steps + 2:  # inside the second epoch
            raise KeyboardInterrupt
        return loss(*args, **kwargs)

    monkeypatch.setattr(pretrain, "nt_xent", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain_nuclei(smoke_stage01, tmp_path, tiny_params(), progress_bar=False)
    monkeypatch.undo()
    checkpoint = torch.load(tmp_path / TaskFiles.CHECKPOINT, weights_only=True)
    assert checkpoint["epoch"] == 1 and len(pd.read_csv(tmp_path / TaskFiles.HISTORY)) == 1
    assert not (tmp_path / TaskFiles.DONE).exists()

    with pytest.raises(ValueError, match=r"checkpoint.pt was written with other pretraining params \(noise_sd\)"):
        pretrain_nuclei(smoke_stage01, tmp_path, tiny_params(noise_sd=0.1), progress_bar=False)
    torch.manual_seed(99)  # the global random state must not matter
    resumed = pretrain_nuclei(smoke_stage01, tmp_path, tiny_params(), progress_bar=False)
    assert resumed.resumed_from == 1 and not resumed.reused
    assert same_weights(resumed.model.state_dict(), whole.model.state_dict())
    pd.testing.assert_frame_equal(without_seconds(resumed.history), without_seconds(whole.history), check_exact=True)
    assert not (tmp_path / TaskFiles.CHECKPOINT).exists()


def test_too_few_nuclei_are_refused_before_anything_is_written(smoke_stage01, tmp_path):
    with pytest.raises(ValueError, match="at least 4 nuclei"):
        pretrain_nuclei(smoke_stage01, tmp_path / "few", tiny_params(max_nuclei=3), progress_bar=False)
    assert not (tmp_path / "few").exists()
    assert pretrain.batch_plan(10, 32) == (10, 1) and pretrain.batch_plan(100, 32) == (32, 3)


# --------------------------------------------------------------------------------------------
# the encoder and the probe
# --------------------------------------------------------------------------------------------

def test_encoder_state_loads_into_the_ensembles_nucleus_trunk(finished, tmp_path):
    _, result = finished
    params = tiny_params()
    ensemble = ImageEnsemble(num_classes=3, branches=("nucleus",), latent_dim=16, input_size=params.input_size,
                             width=params.width, branch_dim=params.branch_dim)
    state = encoder_state(result.model)
    trunk_keys = {key for key in ensemble.state_dict() if key.startswith("trunks.nucleus.")}
    assert set(state) == trunk_keys and "trunks.nucleus.fc.weight" in state
    assert all(value.device.type == "cpu" for value in state.values())
    loaded = ensemble.load_state_dict(state, strict=False)
    others = {key for key in ensemble.state_dict() if key not in trunk_keys}
    # (BatchNorm loads without num_batches_tracked, so torch does not list it as missing)
    assert not loaded.unexpected_keys and set(loaded.missing_keys) == {
        key for key in others if not key.endswith("num_batches_tracked")}
    assert same_weights(ensemble.trunks["nucleus"].state_dict(), result.model.trunk.state_dict())

    path = write_encoder(result.model, tmp_path / artifact_name("pretrain", "encoder"))
    assert same_weights(torch.load(path, weights_only=True), state)


def test_embed_crops_are_the_trunks_pooled_features(finished, smoke_stage01):
    _, result = finished
    crops = load_crops(smoke_stage01, np.load(finished[0] / TaskFiles.PRETRAIN_NUCLEI)[:10])
    embeddings = embed_crops(result.model.trunk, crops, input_size=32, batch_size=4)
    assert embeddings.shape == (10, result.model.trunk.num_features) and embeddings.dtype == np.float32
    images = torch.nn.functional.interpolate(standardize(to_unit_interval(crops)), size=(32, 32), mode="bilinear",
                                             align_corners=False)
    with torch.inference_mode():
        expected = result.model.trunk.eval().features(images).numpy()
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-5)


def test_probe_finds_a_linearly_held_feature_and_not_an_independent_one():
    rng = np.random.default_rng(0)
    n = 400
    profiles = pd.DataFrame({"intensity_integrated": rng.normal(size=n), "texture_contrast_d1": rng.normal(size=n),
                             "shape_constant": np.ones(n), "Metadata_Gene": ["A"] * n})
    profiles.loc[5, "intensity_integrated"] = np.nan
    noise = rng.normal(size=(n, 6))
    embeddings = np.column_stack([2 * profiles["intensity_integrated"].fillna(0) + 1, noise])
    probe = probe_features(embeddings, profiles, seed=0)
    assert probe["feature"].tolist() == ["intensity_integrated", "texture_contrast_d1"]
    assert probe["group"].tolist() == ["intensity", "texture"]
    r2 = probe.set_index("feature")["r2"]
    assert r2["intensity_integrated"] > 0.95  # all but the NaN (imputed with the median) row
    assert abs(r2["texture_contrast_d1"]) < 0.1
    grouped = probe_features(embeddings, profiles, groups=np.arange(n) % 8, n_splits=4)
    assert grouped.set_index("feature")["r2"]["intensity_integrated"] > 0.95
