"""Illumination functions: estimation recovers a known field, correction flattens it, published files load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from image2reg.data import synthetic
from image2reg.images.illumination import correct_illumination, estimate_illumination, read_illumination_function

BACKGROUND = 1000.0


def known_field(size: int = 256) -> np.ndarray:
    return synthetic.illumination_field(size, 0.4, np.random.default_rng(7))


def fields_under(field: np.ndarray, n: int, rng: np.random.Generator, blobs: int = 12) -> list[np.ndarray]:
    """Flat background plus random bright discs ("nuclei"), times the illumination, plus noise."""
    yy, xx = np.indices(field.shape)
    fields = []
    for _ in range(n):
        scene = np.full(field.shape, BACKGROUND, np.float32)
        for y, x, radius, level in zip(rng.integers(0, field.shape[0], blobs), rng.integers(0, field.shape[1], blobs),
                                       rng.uniform(8, 14, blobs), rng.uniform(2000, 6000, blobs)):
            scene[(yy - y) ** 2 + (xx - x) ** 2 < radius**2] += level
        fields.append(scene * field + rng.normal(0, 20, field.shape).astype(np.float32))
    return fields


def test_median_estimate_recovers_a_known_field_and_correction_flattens_it():
    field = known_field()
    estimate = estimate_illumination(fields_under(field, 30, np.random.default_rng(0)))
    assert estimate.dtype == np.float32 and estimate.shape == field.shape
    assert np.quantile(estimate, 0.99) == pytest.approx(1.0, abs=1e-3)
    relative = (estimate / estimate.mean()) / (field / field.mean()) - 1
    assert np.abs(relative).max() < 0.05

    background = np.full(field.shape, BACKGROUND, np.float32) * field
    corrected = correct_illumination(background, estimate)
    assert corrected.dtype == np.float32
    assert background.std() / background.mean() > 0.1
    assert corrected.std() / corrected.mean() < 0.01


def test_mean_estimate_streams_fields_of_any_shape():
    field = known_field(250)[:, :203]  # sides that the downsampling factor does not divide
    rng = np.random.default_rng(1)
    stream = (BACKGROUND * field + rng.normal(0, 20, field.shape) for _ in range(10))
    estimate = estimate_illumination(stream, statistic="mean", downsample=4)
    assert estimate.shape == field.shape
    relative = (estimate / estimate.mean()) / (field / field.mean()) - 1
    assert np.abs(relative).max() < 0.05


def test_per_plate_estimate_matches_the_synthetic_ground_truth(smoke_world):
    raw = smoke_world
    metadata = pd.read_csv(raw.image_metadata)
    for plate, group in metadata.groupby("Image_Metadata_Plate"):
        images = (tifffile.imread(raw.images / str(plate) / name) for name in group["Image_FileName_OrigHoechst"])
        estimate = estimate_illumination(images)
        truth = tifffile.imread(raw.truth / "illumination" / f"{plate}.tif")
        # the camera offset is not lit, so the estimate matches the truth up to an affine map
        correlation = np.corrcoef((estimate / estimate.mean()).ravel(), (truth / truth.mean()).ravel())[0, 1]
        assert correlation > 0.95, plate


def test_published_functions_round_trip(tmp_path):
    function = known_field(64)
    np.save(tmp_path / "illum.npy", function.astype(np.float64))
    tifffile.imwrite(tmp_path / "illum.tif", function)
    for name in ("illum.npy", "illum.tif"):
        loaded = read_illumination_function(tmp_path / name)
        assert loaded.dtype == np.float32
        np.testing.assert_allclose(loaded, function, rtol=1e-6)


def test_unreadable_functions_are_clear_errors(tmp_path):
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"not": "an image"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled.npy"):
        read_illumination_function(pickled)
    np.save(tmp_path / "stack.npy", np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="stack.npy.*2-D"):
        read_illumination_function(tmp_path / "stack.npy")
    with pytest.raises(ValueError, match="illum.mat"):
        read_illumination_function(tmp_path / "illum.mat")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        read_illumination_function(tmp_path / "missing.npy")


def test_correction_refuses_mismatched_or_non_positive_functions():
    image = np.ones((8, 8), np.uint16)
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        correct_illumination(image, np.ones((8, 9), np.float32))
    zero = np.ones((8, 8), np.float32)
    zero[3, 3] = 0
    with pytest.raises(ValueError, match="positive"):
        correct_illumination(image, zero)
    with pytest.raises(ValueError, match="no fields"):
        estimate_illumination([])
    with pytest.raises(ValueError, match="one shape"):
        estimate_illumination([np.ones((8, 8)), np.ones((8, 9))])
