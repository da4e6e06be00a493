"""Nuclear segmentation: the object-level metric, the classical segmenter (synthetic and real nuclei),
supplied masks, the cellpose error paths and the segmenter factory."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from image2reg.config import load_params
from image2reg.images.segmentation import (
    cellpose_segmenter,
    make_segmenter,
    match_labels,
    pool_matches,
    read_mask,
    segment_nuclei,
)

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "fixtures" / "real_nuclei"


def render(ellipses: list[tuple[float, float, float, float, float]], shape: tuple[int, int] = (128, 128),
           level: float = 2000.0, background: float = 300.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 field of textured nuclei (ellipses ``(y, x, semi-major, semi-minor, angle)``) and its labels.

    Where nuclei overlap, a pixel belongs to the nucleus whose (scaled) centre is nearest.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    distances = []
    for y, x, a, b, angle in ellipses:
        u = ((cols - x) * math.cos(angle) + (rows - y) * math.sin(angle)) / a
        v = (-(cols - x) * math.sin(angle) + (rows - y) * math.cos(angle)) / b
        distances.append(np.hypot(u, v))
    distances = np.array(distances)
    labels = np.where(distances.min(axis=0) <= 1, distances.argmin(axis=0) + 1, 0).astype(np.int32)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    signal = level * (labels > 0) * np.clip(1 + 2 * texture, 0.3, None)
    expected = ndimage.gaussian_filter(signal, 1.0) + background
    image = rng.poisson(expected) + rng.normal(0, 5, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def disc(y: float, x: float, radius: float = 12.0) -> tuple[float, float, float, float, float]:
    return (y, x, radius, radius, 0.0)


def square_labels(shape: tuple[int, int], squares: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """Labels from ``{label: (row0, row1, col0, col1)}``."""
    labels = np.zeros(shape, np.int32)
    for label, (r0, r1, c0, c1) in squares.items():
        labels[r0:r1, c0:c1] = label
    return labels


# ---------------------------------------------------------------------------------------------
# match_labels
# ---------------------------------------------------------------------------------------------
def test_match_labels_counts_hits_misses_and_false_objects():
    truth = square_labels((40, 60), {1: (0, 10, 0, 10), 2: (20, 30, 0, 10), 3: (0, 10, 30, 40)})
    # 1 exact; 2 shifted by two rows (IoU 80/120); 3 missed; one object where there is none
    pred = square_labels((40, 60), {5: (0, 10, 0, 10), 9: (22, 32, 0, 10), 11: (30, 40, 50, 60)})
    scores = match_labels(truth, pred)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 1)
    assert (scores["n_true"], scores["n_pred"]) == (3, 3)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["mean_iou"] == pytest.approx((1 + 80 / 120) / 2)
    assert match_labels(truth, pred, iou_threshold=0.7)["tp"] == 1  # the shifted square no longer counts
    assert match_labels(truth, truth)["f1"] == 1.0 and match_labels(truth, truth)["mean_iou"] == 1.0


def test_a_split_nucleus_matches_at_most_once():
    truth = square_labels((20, 30), {1: (0, 10, 0, 20)})
    halves = square_labels((20, 30), {1: (0, 10, 0, 10), 2: (0, 10, 10, 20)})  # each half: IoU exactly 0.5
    scores = match_labels(truth, halves)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 0)
    assert scores["mean_iou"] == pytest.approx(0.5)
    assert (match_labels(truth, halves, iou_threshold=0.6)["tp"], match_labels(truth, halves, 0.6)["fp"]) == (0, 2)


def test_a_merge_matches_one_of_the_two_nuclei():
    truth = square_labels((20, 30), {1: (0, 10, 0, 10), 2: (0, 10, 10, 15)})
    merged = square_labels((20, 30), {4: (0, 10, 0, 15)})  # IoU 100/150 with the first, 50/150 with the second
    scores = match_labels(truth, merged)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 0, 1)
    assert scores["mean_iou"] == pytest.approx(2 / 3)


def test_low_thresholds_use_an_optimal_one_to_one_matching():
    # one row of pixels: truth A = [0, 10), B = [10, 20); P1 = [4, 14) overlaps both, P2 = [0, 4) only A.
    truth = np.repeat([1] * 10 + [2] * 10, 1)[None, :]
    pred = np.array([[2] * 4 + [1] * 10 + [0] * 6])
    # IoU: A–P1 6/14, B–P1 4/16, A–P2 4/10; taking the best pair first (A–P1) would leave one match
    scores = match_labels(truth, pred, iou_threshold=0.25)
    assert scores["tp"] == 2
    assert scores["mean_iou"] == pytest.approx((4 / 16 + 4 / 10) / 2)


def test_empty_images_score_as_agreed():
    empty = np.zeros((10, 10), np.uint16)
    two = square_labels((10, 10), {1: (0, 3, 0, 3), 7: (5, 9, 5, 9)})
    both_empty = match_labels(empty, empty)
    assert (both_empty["tp"], both_empty["fp"], both_empty["fn"], both_empty["f1"]) == (0, 0, 0, 1.0)
    assert math.isnan(both_empty["mean_iou"])
    missed = match_labels(two, empty)
    assert (missed["fn"], missed["recall"], missed["f1"]) == (2, 0.0, 0.0)
    invented = match_labels(empty, two)
    assert (invented["fp"], invented["precision"], invented["f1"]) == (2, 0.0, 0.0)


def test_match_labels_rejects_what_is_not_a_pair_of_label_images():
    with pytest.raises(ValueError, match="shape"):
        match_labels(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer"):
        match_labels(np.zeros((4, 4), int), np.zeros((4, 4), float))


def test_pool_matches_adds_objects_up_over_fields():
    truth = square_labels((40, 60), {1: (0, 10, 0, 10), 2: (20, 30, 0, 10)})
    first = match_labels(truth, truth)
    second = match_labels(truth, np.zeros_like(truth))
    pooled = pool_matches([first, second])
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (2, 0, 2)
    assert pooled["f1"] == pytest.approx(2 * 2 / (4 + 2))
    assert pooled["mean_iou"] == 1.0


# ---------------------------------------------------------------------------------------------
# The classical segmenter
# ---------------------------------------------------------------------------------------------
def test_separate_discs_are_found_one_by_one():
    centres = [(20, 20), (20, 70), (60, 40), (100, 100), (95, 25), (55, 105)]
    image, truth = render([disc(y, x, r) for (y, x), r in zip(centres, (12, 10, 14, 12, 9, 11))])
    labels = segment_nuclei(image)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert sorted(np.unique(labels)) == list(range(len(centres) + 1))  # background + 1..n, consecutive
    scores = match_labels(truth, labels)
    assert scores["f1"] == 1.0 and scores["mean_iou"] > 0.8


def test_two_touching_discs_are_split_in_two():
    image, truth = render([disc(64, 50), disc(64, 50 + 0.85 * 24)])  # centres 0.85 diameters apart
    labels = segment_nuclei(image)
    scores = match_labels(truth, labels)
    assert labels.max() == 2 and scores["tp"] == 2 and scores["mean_iou"] > 0.8
    merged = segment_nuclei(image, split_touching=False)
    assert merged.max() == 1


@pytest.mark.parametrize("aspect", [2.0, 3.0])
def test_an_elongated_nucleus_stays_whole(aspect):
    a, b = 12 * math.sqrt(aspect), 12 / math.sqrt(aspect)
    image, truth = render([(64, 64, a, b, 0.6)], seed=3)
    labels = segment_nuclei(image)
    assert labels.max() == 1 and match_labels(truth, labels)["mean_iou"] > 0.8


def test_bright_and_uneven_uint16_fields():
    centres = [(30, 30), (30, 130), (90, 80), (150, 30), (160, 150), (100, 170), (40, 180)]
    image, truth = render([disc(y, x) for y, x in centres], shape=(200, 200), level=600, background=200)
    rows, cols = np.mgrid[0:200, 0:200] / 200
    glow = 1500 * (cols + 0.5 * rows)  # background light rising across the field, above the dimmest nuclei
    vignetting = 0.3 + 0.7 * (1 - cols) * (1 - 0.5 * rows)  # from 1 down to 0.15
    uneven = np.round((image + glow) * vignetting * 40).astype(np.uint16)
    assert uneven.max() > 50000
    assert match_labels(truth, segment_nuclei(uneven, threshold="local"))["f1"] == 1.0
    # intensity scale and offset change nothing: the field is scaled by its own percentiles
    reference = segment_nuclei(image)
    assert match_labels(reference, segment_nuclei(image.astype(np.float32) / 1000 + 5.0))["mean_iou"] == 1.0


@pytest.mark.parametrize("field", [np.zeros((64, 64), np.uint16), np.full((64, 64), 700, np.uint16),
                                   np.full((64, 64), 0.25, np.float32)])
def test_a_field_without_contrast_has_no_nuclei(field):
    labels = segment_nuclei(field)
    assert labels.dtype == np.int32 and not labels.any()


@pytest.mark.parametrize("threshold", ["otsu", "local"])
def test_a_field_of_noise_has_no_nuclei(threshold):
    rng = np.random.default_rng(7)
    for _ in range(3):
        noise = rng.normal(500, 20, (256, 256)).astype(np.uint16)
        assert not segment_nuclei(noise, threshold=threshold).any()


def test_segment_nuclei_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        segment_nuclei(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        segment_nuclei(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="threshold"):
        segment_nuclei(np.zeros((8, 8)), threshold="triangle")


def test_fields_of_the_synthetic_world_are_segmented_like_the_truth(smoke_world):
    metadata = pd.read_csv(smoke_world.image_metadata)
    fine = metadata[(metadata["Image_Metadata_QCFlag_isBlurry"] == 0)
                    & (metadata["Image_Metadata_QCFlag_isSaturated"] == 0)]
    radius = load_params(ROOT / "params" / "smoke.yml").stage("data").synthetic.screen.nucleus_radius
    scores = []
    for row in fine.itertuples():
        plate, name = str(row.Image_Metadata_Plate), row.Image_FileName_OrigHoechst
        illumination = tifffile.imread(smoke_world.truth / "illumination" / f"{plate}.tif")
        image = tifffile.imread(smoke_world.images / plate / name) / illumination
        scores.append(match_labels(tifffile.imread(smoke_world.masks / plate / name),
                                   segment_nuclei(image, nucleus_diameter=2 * radius)))
    pooled = pool_matches(scores)
    assert pooled["n_true"] > 50
    assert pooled["f1"] >= 0.95 and pooled["mean_iou"] > 0.85


@pytest.fixture(scope="module")
def real_nuclei() -> tuple[np.ndarray, np.ndarray]:
    if not (REAL / "dsb2018_image.tif").is_file():
        pytest.skip("real-nuclei fixture absent")
    return tifffile.imread(REAL / "dsb2018_image.tif"), tifffile.imread(REAL / "dsb2018_labels.tif")


def test_real_nuclei_are_segmented_well(real_nuclei):
    """DSB2018 field, 125 nuclei: 0.92 / 0.89 measured (a plain Otsu + watershed baseline: 0.72)."""
    image, truth = real_nuclei
    assert match_labels(truth, segment_nuclei(image, nucleus_diameter=24))["f1"] >= 0.88
    assert match_labels(truth, segment_nuclei(image, nucleus_diameter=24, threshold="local"))["f1"] >= 0.85


# ---------------------------------------------------------------------------------------------
# Supplied masks, cellpose, the factory
# ---------------------------------------------------------------------------------------------
def test_read_mask_numbers_objects_consecutively(tmp_path):
    labels = square_labels((20, 20), {5: (0, 4, 0, 4), 900: (10, 14, 10, 14)}).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", labels)
    mask = read_mask(tmp_path / "a.tif", shape=(20, 20))
    assert mask.dtype == np.int32 and sorted(np.unique(mask)) == [0, 1, 2]
    assert match_labels(labels, mask)["mean_iou"] == 1.0


@pytest.mark.parametrize("content, message", [
    (np.zeros((20, 20), np.float32), "not an integer label image"),
    (np.zeros((20, 20), bool), "binary mask"),
    (np.zeros((3, 20, 20), np.uint16), "not a 2-D label image"),
    (np.zeros((20, 24), np.uint16), r"mask shape \(20, 24\) differs from the image's \(20, 20\)"),
])
def test_read_mask_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "field_a01_s1.tif"
    tifffile.imwrite(path, content, photometric="minisblack")
    with pytest.raises(ValueError, match=message) as error:
        read_mask(path, shape=(20, 20))
    assert str(path) in str(error.value)


def test_read_mask_of_a_missing_file_says_where_masks_belong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"raw/masks/<plate>/<image file name>"):
        read_mask(tmp_path / "missing.tif")


def test_cellpose_not_installed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cellpose", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install cellpose"):
        cellpose_segmenter(tmp_path / "weights", diameter=20)
    with pytest.raises(ImportError, match="pip install cellpose"):
        make_segmenter("cellpose", cellpose_model=tmp_path / "weights")


def test_cellpose_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    calls = []

    class FakeModel:
        def __init__(self, gpu: bool, pretrained_model: str):
            calls.append((gpu, pretrained_model))

        def eval(self, image: np.ndarray, diameter: float | None = None):
            return np.where(image > 0, 7, 0), None, None

    fake = types.ModuleType("cellpose")
    fake.models = types.SimpleNamespace(CellposeModel=FakeModel)
    monkeypatch.setitem(sys.modules, "cellpose", fake)
    with pytest.raises(FileNotFoundError, match="cellpose weights not found at .*segmentation.cellpose_model"):
        cellpose_segmenter(tmp_path / "nuclei_model", diameter=20)

    weights = tmp_path / "nuclei_model"
    weights.write_bytes(b"weights")
    segment = make_segmenter("cellpose", nucleus_diameter=20, cellpose_model=weights)
    labels = segment(np.eye(4), None)
    assert calls == [(False, str(weights))]
    assert labels.dtype == np.int32 and labels.max() == 1
    with pytest.raises(ValueError, match="cellpose_model"):
        make_segmenter("cellpose")


def test_make_segmenter_picks_and_checks_a_method(tmp_path):
    image, truth = render([disc(40, 40), disc(90, 90)])
    classical = make_segmenter("classical", nucleus_diameter=24, cellpose_model=None, threshold="local")
    np.testing.assert_array_equal(classical(image, None),
                                  segment_nuclei(image, nucleus_diameter=24, threshold="local"))

    tifffile.imwrite(tmp_path / "field.tif", truth.astype(np.uint16))
    supplied = make_segmenter("masks", nucleus_diameter=24)
    assert match_labels(truth, supplied(image, tmp_path / "field.tif"))["f1"] == 1.0
    with pytest.raises(ValueError, match="mask file"):
        supplied(image, None)
    with pytest.raises(ValueError, match="differs from the image's"):
        supplied(image[:100], str(tmp_path / "field.tif"))

    with pytest.raises(TypeError, match="no option smoothing"):
        make_segmenter("classical", smoothing=2.0)
    with pytest.raises(ValueError, match="unknown segmentation method 'unet'"):
        make_segmenter("unet")


def test_labels_from_outlines_gives_each_outlined_nucleus_its_inside_and_outline():
    from image2reg.images.segmentation import labels_from_outlines

    outlines = np.zeros((12, 12), dtype=np.uint8)
    outlines[1:6, 1] = outlines[1:6, 5] = outlines[1, 1:6] = outlines[5, 1:6] = 255  # a 5×5 square ring
    outlines[7:11, 7] = outlines[7:11, 10] = outlines[7, 7:11] = outlines[10, 7:11] = 255  # a 4×4 ring
    labels = labels_from_outlines(outlines)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    # the inside and the outline (reached from the inside by one pixel, so not the ring's corners)
    assert (labels[2:5, 1:6] == labels[3, 3]).all() and (labels[1:6, 2:5] == labels[3, 3]).all()
    assert (labels[8:10, 7:11] == labels[8, 8]).all() and labels[1, 1] == 0
    assert labels[3, 3] != labels[8, 8] and labels[0, 0] == 0 and labels[6, 6] == 0
