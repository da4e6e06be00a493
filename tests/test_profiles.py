"""Classical nucleus profiles and their linear baseline classifier (method §4.6 analogue)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

from image2reg.cnn.splits import loto_splits, multiclass_splits, screen_splits
from image2reg.images import store
from image2reg.profiling import features as profiles
from image2reg.profiling.baseline import C_GRID, baseline_classifier
from image2reg.profiling.features import nucleus_profiles

SIZE = 64
PREFIXES = ("shape_", "intensity_", "texture_", "radial_")


@pytest.fixture(scope="module")
def stage01(smoke_stage01) -> Path:
    return smoke_stage01


@pytest.fixture(scope="module")
def nuclei(stage01) -> pd.DataFrame:
    return pd.read_parquet(stage01 / "nuclei.parquet")


@pytest.fixture(scope="module")
def stage01_profiles(stage01) -> pd.DataFrame:
    return nucleus_profiles(stage01)


def write_images_dir(folder: Path, crops: np.ndarray) -> Path:
    """A minimal stage-01 folder: the crops in ``nuclei.zarr`` and a table with dummy measures."""
    folder.mkdir(parents=True, exist_ok=True)
    array = zarr.create_array(store=str(folder / store.CROPS), shape=crops.shape, dtype="uint8",
                              chunks=(3, *crops.shape[1:]))
    array[:] = crops
    n = len(crops)
    table = pd.DataFrame({"area": np.full(n, 100), "bbox_area": 144, "solidity": 0.9, "aspect_ratio": 1.0,
                          "eccentricity": 0.1, "mean_intensity": 0.5, "integrated_intensity": 50.0,
                          "crop_index": np.arange(n)})
    table.to_parquet(folder / "nuclei.parquet", index=False)
    return folder


def distance_to_centre() -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return np.hypot(rows - (SIZE - 1) / 2, cols - (SIZE - 1) / 2)


def test_profiles_of_stage01_one_finite_float32_row_per_nucleus(stage01, nuclei, stage01_profiles):
    result = stage01_profiles
    assert result.index.equals(nuclei.index)
    assert len(result.columns) == 38 and result.columns.is_unique
    assert all(column.startswith(PREFIXES) for column in result.columns)
    assert all(dtype == np.float32 for dtype in result.dtypes)
    assert np.isfinite(result.to_numpy()).all()
    assert np.array_equal(result["shape_area"], nuclei["area"].astype(np.float32))
    assert np.allclose(result["shape_log_area"], np.log(nuclei["area"]), rtol=1e-6)
    assert np.allclose(result["intensity_integrated_intensity"], nuclei["integrated_intensity"], rtol=1e-6)
    lbp = result[[f"texture_lbp_{k}" for k in range(10)]].sum(axis=1)
    assert np.allclose(lbp, 1, atol=1e-5)
    # stage 01's crops are 0 outside the nucleus: the Otsu mask never reaches beyond it
    crops = store.open_crops(stage01)[:]
    nucleus_fraction = (crops[nuclei["crop_index"]] > 0).mean(axis=(1, 2))
    assert (result["intensity_foreground_fraction"] <= nucleus_fraction + 1e-6).all()
    assert (result["intensity_foreground_fraction"] > 0.8 * nucleus_fraction).mean() > 0.9


def test_profiles_are_deterministic_and_follow_the_given_rows(stage01, nuclei, stage01_profiles):
    again = nucleus_profiles(stage01, nuclei, chunk=7)  # other chunks, same numbers
    pd.testing.assert_frame_equal(again, stage01_profiles)
    subset = nuclei.iloc[::-3].set_axis([f"n{k}" for k in range(len(nuclei.iloc[::-3]))])
    part = nucleus_profiles(stage01, subset, chunk=5)
    assert list(part.index) == list(subset.index)
    assert np.array_equal(part.to_numpy(), stage01_profiles.iloc[::-3].to_numpy())


def test_texture_and_intensities_equal_scikit_image_and_numpy(stage01):
    rng = np.random.default_rng(3)
    crops = np.concatenate([store.open_crops(stage01)[:24], rng.integers(0, 4, (4, SIZE, SIZE), dtype=np.uint8),
                            (rng.integers(1, 3, (4, SIZE, SIZE)) * 100).astype(np.uint8)])
    features = profiles._crop_features(crops)
    masks = profiles._foreground_masks(crops)
    for k, (crop, mask) in enumerate(zip(crops, masks)):
        levels = np.where(mask, crop // 8 + 1, 0).astype(np.uint8)  # level 0: outside the mask, dropped
        glcm = graycomatrix(levels, [1, 3], profiles.GLCM_ANGLES, levels=33, symmetric=True)[1:, 1:]
        for prop in profiles.GLCM_PROPERTIES:
            expected = graycoprops(glcm, prop).mean(axis=1)
            got = features.loc[k, [f"texture_{prop}_d1", f"texture_{prop}_d3"]].to_numpy(float)
            assert np.allclose(got, expected, rtol=1e-9, atol=1e-12), (k, prop)
        patterns = local_binary_pattern(crop, 8, 1, "uniform")[mask].astype(int)
        lbp = features.loc[k, [f"texture_lbp_{b}" for b in range(10)]].to_numpy(float)
        assert np.array_equal(lbp, np.bincount(patterns, minlength=10) / mask.sum())
        values = crop[mask].astype(float)
        assert np.allclose(features.loc[k, ["intensity_crop_p10", "intensity_crop_p50", "intensity_crop_p90"]],
                           np.percentile(values, [10, 50, 90]) / 255, rtol=0, atol=1e-12)
        assert math.isclose(features.loc[k, "intensity_crop_mean"], values.mean() / 255)
        assert math.isclose(features.loc[k, "intensity_crop_std"], values.std() / 255, abs_tol=1e-12)


def test_known_answers_on_hand_built_crops(tmp_path):
    distance = distance_to_centre()
    radius = 10
    disc = np.where(distance <= radius, 200, 0).astype(np.uint8)
    blob = np.where(distance <= 14, np.round(255 * np.exp(-distance**2 / (2 * 8.0**2))), 0).astype(np.uint8)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    checker = np.where(distance <= 12, np.where((rows + cols) % 2, 250, 150), 0).astype(np.uint8)
    constant = np.where(distance <= 12, 180, 0).astype(np.uint8)
    empty = np.zeros((SIZE, SIZE), np.uint8)
    folder = write_images_dir(tmp_path / "images", np.stack([disc, blob, checker, constant, empty]))
    result = nucleus_profiles(folder)
    disc_row, blob_row, checker_row, constant_row, empty_row = (result.iloc[k] for k in range(5))

    # a uniform disc: its area, one intensity, a flat radial profile, no texture
    assert disc_row["intensity_foreground_fraction"] == pytest.approx(math.pi * radius**2 / SIZE**2, rel=0.03)
    assert disc_row["intensity_crop_mean"] == pytest.approx(200 / 255)
    assert disc_row["intensity_crop_std"] == pytest.approx(0, abs=1e-6)
    for q in (10, 50, 90):
        assert disc_row[f"intensity_crop_p{q}"] == pytest.approx(200 / 255)
    assert np.allclose(disc_row[[f"radial_ring{k}" for k in range(4)]], 1)
    # a centred blob: brightest in the middle ring, dimmest in the outer one
    rings = blob_row[[f"radial_ring{k}" for k in range(4)]].to_numpy()
    assert np.all(np.diff(rings) < 0) and rings[0] > 1 > rings[3]
    # co-occurrence: a checkerboard differs along rows and columns (13 levels), not along diagonals
    assert checker_row["intensity_foreground_fraction"] == pytest.approx(constant_row["intensity_foreground_fraction"])
    for d in (1, 3):
        assert checker_row[f"texture_contrast_d{d}"] == pytest.approx(13**2 / 2)
        assert checker_row[f"texture_dissimilarity_d{d}"] == pytest.approx(13 / 2)
        assert constant_row[f"texture_contrast_d{d}"] == 0 and constant_row[f"texture_dissimilarity_d{d}"] == 0
        assert constant_row[f"texture_homogeneity_d{d}"] == 1 and constant_row[f"texture_energy_d{d}"] == 1
        assert checker_row[f"texture_homogeneity_d{d}"] < 1
    assert checker_row["texture_correlation_d1"] == pytest.approx(0, abs=1e-6)  # (+1 on diagonals, -1 on axes)
    # an all-zero crop has no foreground: crop features are missing, the table's are not
    assert empty_row["intensity_foreground_fraction"] == 0
    crop_based = [c for c in result.columns if c.startswith(("texture_", "radial_", "intensity_crop_"))]
    assert empty_row[crop_based].isna().all()
    assert empty_row[["shape_area", "intensity_mean_intensity"]].notna().all()


def test_profiles_name_the_missing_columns(stage01, nuclei):
    with pytest.raises(ValueError, match=r"\['crop_index', 'solidity'\]"):
        nucleus_profiles(stage01, nuclei.drop(columns=["solidity", "crop_index"]))


# --------------------------------------------------------------------------- baseline classifier


def synthetic_table(n_genes: int, *, fields: int = 8, per_field: int = 20, shift: float = 0.0,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A nucleus table (conditions EMPTY, G1 …, whole fields each) and profiles: 8 noise features,
    the first two moved by ``shift`` · (gene number) standard deviations."""
    rng = np.random.default_rng(seed)
    conditions = ["EMPTY", *[f"G{k}" for k in range(1, n_genes + 1)]]
    rows = [(condition, f"{condition}_f{f}")
            for condition in conditions for f in range(fields) for _ in range(per_field)]
    nuclei = pd.DataFrame(rows, columns=["Metadata_Gene", "image_path"]).assign(QC_pass=True)
    code = nuclei["Metadata_Gene"].map({c: k for k, c in enumerate(conditions)}).to_numpy()
    features = rng.normal(size=(len(nuclei), 8))
    features[:, :2] += shift * code[:, None]
    return nuclei, pd.DataFrame(features, index=nuclei.index, columns=[f"f{k}" for k in range(8)]).astype(np.float32)


def test_baseline_separates_shifted_classes_on_the_cnn_splits():
    nuclei, table = synthetic_table(1, shift=4.0)
    splits = screen_splits(nuclei, "G1", seed=0)
    result = baseline_classifier(table, splits, fold=1)
    assert result["test_balanced_accuracy"] > 0.95 and result["val_balanced_accuracy"] > 0.95
    assert result["test_accuracy"] > 0.95 and result["C"] in C_GRID
    assert set(result["val_scores"]) == set(C_GRID)
    test_part = splits[(splits["fold"] == 1) & (splits["split"] == "test")]
    predictions = result["test_predictions"]
    assert predictions.index.equals(test_part.index) and list(predictions.columns) == ["label", "predicted"]
    assert np.array_equal(predictions["label"], test_part["label"])
    assert result["held_out_decision"] is None
    again = baseline_classifier(table, splits, fold=1)
    pd.testing.assert_frame_equal(again["test_predictions"], predictions)


def test_baseline_is_at_chance_on_noise():
    nuclei, table = synthetic_table(1, shift=0.0, seed=1)
    splits = screen_splits(nuclei, "G1", seed=0)
    scores = [baseline_classifier(table, splits, fold=fold)["test_balanced_accuracy"] for fold in range(2)]
    assert all(0.3 < score < 0.7 for score in scores), scores


def test_baseline_multiclass_imputes_missing_values():
    nuclei, table = synthetic_table(3, shift=4.0)
    table.iloc[::7, 0] = np.nan
    table.iloc[3::11, 1] = np.inf
    table["f7"] = np.nan  # no value at all: imputed with 0, then constant
    splits, classes = multiclass_splits(nuclei, ["G1", "G2", "G3"], seed=0)
    result = baseline_classifier(table, splits, fold=0)
    assert result["classes"] == [0, 1, 2, 3] and classes == ["EMPTY", "G1", "G2", "G3"]
    assert result["test_balanced_accuracy"] > 0.9
    assert np.isfinite(result["medians"]).all() and result["medians"]["f7"] == 0


def test_baseline_gives_decision_values_of_held_out_nuclei():
    nuclei, table = synthetic_table(2, fields=6, shift=4.0)
    splits, classes = loto_splits(nuclei, ["G1", "G2"], "G2", seed=0)
    result = baseline_classifier(table, splits)  # a single fold
    held = splits.index[splits["split"] == "held_out"]
    decision = result["held_out_decision"]
    assert decision.index.equals(held) and list(decision.columns) == [1]  # binary: the positive class
    assert classes == ["EMPTY", "G1"] and result["test_balanced_accuracy"] > 0.95
    # G2 lies beyond G1 along the shift: the model calls it G1
    assert (decision[1] > 0).mean() > 0.95


def test_baseline_errors_name_what_is_missing():
    nuclei, table = synthetic_table(1, shift=4.0)
    splits = screen_splits(nuclei, "G1", seed=0)
    with pytest.raises(ValueError, match="4 folds"):
        baseline_classifier(table, splits)
    with pytest.raises(ValueError, match="fold 9"):
        baseline_classifier(table, splits, fold=9)
    with pytest.raises(ValueError, match=r"\['label'\]"):
        baseline_classifier(table, splits.drop(columns="label"), fold=0)
    with pytest.raises(ValueError, match=r"no \['val'\]"):
        baseline_classifier(table, splits[splits["split"] != "val"], fold=0)
    with pytest.raises(ValueError, match="no profile"):
        baseline_classifier(table.iloc[10:], splits, fold=0)
    with pytest.raises(ValueError, match="single class"):
        baseline_classifier(table, splits.assign(label=0), fold=0)


def test_baseline_preprocessing_is_median_imputation_scaling_and_clipping():
    """The sklearn pipeline gives what the reference's steps give by hand (known answer)."""
    from image2reg.profiling.baseline import CLIP, preprocessing

    train = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 7.0], [np.nan, np.nan, 9.0], [100.0, np.nan, 7.0]])
    other = np.array([[np.nan, 2.0, 1e6]])
    fitted = preprocessing().fit(train)
    medians = np.array([3.0, 0.0, 7.0])  # a feature without any value is imputed with 0
    filled = np.where(np.isnan(train), medians, train)
    mean, std = filled.mean(axis=0), filled.std(axis=0)
    std[std == 0] = 1.0
    expected = np.clip((np.where(np.isnan(other), medians, other) - mean) / std, -CLIP, CLIP)
    np.testing.assert_allclose(fitted.transform(other), expected)
    np.testing.assert_allclose(fitted.named_steps["impute"].statistics_, medians)
    assert fitted.transform(other)[0, 2] == CLIP
