"""Nucleus measures, filters and crops: hand-made masks with known answers, and the synthetic world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from image2reg.images.nuclei import SHAPE_COLUMNS, crop_nuclei, filter_nuclei, measure_nuclei


def shapes() -> np.ndarray:
    """A 200×200 label image of shapes with known measures (see the table in the first test)."""
    labels = np.zeros((200, 200), np.uint16)
    labels[10:30, 10:40] = 1  # rectangle 20×30
    yy, xx = np.indices(labels.shape)
    labels[(yy - 60) ** 2 + (xx - 30) ** 2 <= 15**2] = 2  # disc
    labels[10:50, 60:70] = 3  # L-shape: a 40×10 bar and a 10×30 foot
    labels[40:50, 70:100] = 3
    labels[90:95, 10:110] = 4  # thin bar 5×100
    labels[0:25, 175:200] = 5  # square in the top-right corner
    labels[110:115, 10:15] = 6  # speck
    labels[120:190, 10:80] = 7  # hollow frame 70×70, 3 px thick
    labels[123:187, 13:77] = 0
    labels[110:180, 110:180] = 8  # big square 70×70
    return labels


def test_measures_of_known_shapes():
    labels = shapes()
    table = measure_nuclei(labels, image=labels.astype(np.float32) * 10).set_index("label")
    assert list(table.index) == list(range(1, 9))
    expected_area = {1: 600, 2: int((labels == 2).sum()), 3: 700, 4: 500, 5: 625, 6: 25, 7: 804, 8: 4900}
    assert table["area"].to_dict() == expected_area
    assert table["bbox_area"].to_dict() == {1: 600, 2: 31 * 31, 3: 1600, 4: 500, 5: 625, 6: 25, 7: 4900, 8: 4900}
    assert table.loc[[1, 4, 5, 6, 8], "solidity"].tolist() == pytest.approx([1.0] * 5)
    assert table.loc[2, "solidity"] > 0.95 and table.loc[3, "solidity"] < 0.8 and table.loc[7, "solidity"] < 0.2
    assert table.loc[1, "aspect_ratio"] == pytest.approx(np.sqrt((20**2 - 1) / (30**2 - 1)), rel=1e-6)
    assert table.loc[2, "aspect_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc[4, "aspect_ratio"] < 0.1 and table.loc[4, "eccentricity"] > 0.99
    assert table["touches_border"].to_dict() == {k: k == 5 for k in range(1, 9)}
    assert table.loc[1, ["bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]].tolist() == [10, 10, 30, 40]
    assert table.loc[1, ["centroid_y", "centroid_x"]].tolist() == pytest.approx([19.5, 24.5])
    assert table["mean_intensity"].to_dict() == pytest.approx({k: 10.0 * k for k in range(1, 9)})
    assert table.loc[3, "integrated_intensity"] == pytest.approx(30 * 700)


def test_empty_label_image_gives_an_empty_table():
    empty = measure_nuclei(np.zeros((16, 16), np.uint16))
    assert empty.empty and list(empty.columns) == SHAPE_COLUMNS
    with_image = measure_nuclei(np.zeros((16, 16), np.int32), image=np.ones((16, 16)))
    assert list(with_image.columns) == SHAPE_COLUMNS + ["mean_intensity", "integrated_intensity"]
    assert filter_nuclei(empty).empty


def test_filters_give_the_first_failing_rule():
    table = measure_nuclei(shapes())
    reasons = filter_nuclei(table)
    assert reasons.tolist() == ["", "", "", "aspect_ratio<0.1", "touches_border", "area<400", "bbox_area>4000",
                                "area>4000"]
    assert (reasons.index == table.index).all()
    strict = filter_nuclei(table, min_solidity=0.9, drop_border=False)
    assert strict.tolist() == ["", "", "solidity<0.9", "aspect_ratio<0.1", "", "area<400", "bbox_area>4000",
                               "area>4000"]
    none = filter_nuclei(table, min_area=None, max_area=None, max_bbox_area=None, min_solidity=None,
                         min_aspect_ratio=None, drop_border=False)
    assert (none == "").all()


def crop_of(labels: np.ndarray, image: np.ndarray, size: int = 16) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    table = measure_nuclei(labels)
    crops, fits = crop_nuclei(image, labels, table, size=size)
    return crops, fits, table


@pytest.mark.parametrize("height, width", [(5, 7), (6, 8), (1, 16)])
def test_crops_are_centred_and_padded_with_zeros(height, width):
    labels = np.zeros((40, 40), np.uint16)
    labels[10:10 + height, 20:20 + width] = 1
    crops, fits, _ = crop_of(labels, np.full(labels.shape, 500, np.uint16))
    assert fits.tolist() == [True] and crops.shape == (1, 16, 16) and crops.dtype == np.uint8
    rows, cols = np.nonzero(crops[0])
    assert len(rows) == height * width  # every nucleus pixel is ≥ 1, everything else 0
    assert abs(rows.mean() - 7.5) <= 0.5 and abs(cols.mean() - 7.5) <= 0.5
    assert rows.min() == (16 - height) // 2 and cols.min() == (16 - width) // 2


def test_crops_keep_only_their_own_nucleus_and_scale_it_by_its_maximum():
    labels = np.zeros((40, 40), np.uint16)
    labels[5:20, 5:10] = 1  # an L whose bounding box holds part of nucleus 2
    labels[15:20, 10:20] = 1
    labels[5:12, 12:20] = 2
    image = np.zeros(labels.shape, np.float32)
    image[labels == 1] = np.linspace(100, 600, (labels == 1).sum())
    image[labels == 2] = 9999
    crops, fits, table = crop_of(labels, image)
    first = crops[0]
    assert fits.all()
    assert first.max() == 255 and first[first > 0].min() == round(255 * 100 / 600)  # ratios kept
    assert np.count_nonzero(first) == table.loc[0, "area"]
    top, left = (16 - 15) // 2, (16 - 15) // 2
    assert not first[top:top + 7, left + 7:left + 15].any()  # where nucleus 2 sits in the box
    second = crops[1]
    assert set(np.unique(second)) == {0, 255}  # constant intensity: the whole nucleus at 255
    assert np.count_nonzero(second) == table.loc[1, "area"]


def test_nuclei_larger_than_the_crop_are_flagged_not_cropped():
    labels = np.zeros((40, 40), np.uint16)
    labels[2:22, 2:8] = 1  # 20 high: too tall for 16
    labels[25:31, 10:36] = 2  # 26 wide
    labels[30:38, 0:8] = 3
    crops, fits, _ = crop_of(labels, np.arange(1600, dtype=np.uint16).reshape(40, 40))
    assert fits.tolist() == [False, False, True]
    assert not crops[:2].any() and crops[2].any()
    nothing = np.zeros((8, 8), np.uint16)
    empty, empty_fits = crop_nuclei(nothing, nothing, measure_nuclei(nothing))
    assert empty.shape == (0, 64, 64) and empty_fits.shape == (0,)


def test_measures_match_the_truth_of_the_synthetic_world(smoke_world):
    raw = smoke_world
    truth = pd.read_parquet(raw.truth / "nuclei.parquet")
    metadata = pd.read_csv(raw.image_metadata)
    for plate, name in zip(metadata["Image_Metadata_Plate"], metadata["Image_FileName_OrigHoechst"]):
        labels = tifffile.imread(raw.masks / str(plate) / name)
        image = tifffile.imread(raw.images / str(plate) / name)
        table = measure_nuclei(labels, image)
        expected = truth[truth["file_name"] == name].set_index("label")
        assert table["label"].tolist() == expected.index.tolist()
        np.testing.assert_array_equal(table["area"], expected["area"])
        np.testing.assert_allclose(table[["centroid_y", "centroid_x"]], expected[["centroid_y", "centroid_x"]],
                                   atol=1e-6)
        np.testing.assert_array_equal(table["touches_border"], expected["border"])
        crops, fits = crop_nuclei(image, labels, table)
        assert fits.all()
        np.testing.assert_array_equal(np.count_nonzero(crops, axis=(1, 2)), table["area"])


def test_a_common_scale_keeps_each_nucleus_brightness():
    labels = np.zeros((40, 40), np.uint16)
    labels[5:10, 5:10] = 1
    labels[20:25, 20:25] = 2
    image = np.where(labels == 1, 300.0, np.where(labels == 2, 600.0, 0.0)).astype(np.float32)
    image[7, 7] = 1200.0  # a focus brighter than the scale saturates
    table = measure_nuclei(labels)
    own, _ = crop_nuclei(image, labels, table, size=16)
    common, _ = crop_nuclei(image, labels, table, size=16, scale=1000.0)
    assert own[1].max() == 255 and own[0][own[0] > 0].min() == round(255 * 300 / 1200)  # each to its own max
    assert common[0][common[0] > 0].min() == round(255 * 0.3) and common[0].max() == 255  # 300 → 76, focus clipped
    assert set(np.unique(common[1])) == {0, round(255 * 0.6)}  # the brighter nucleus stays twice as bright
    with pytest.raises(ValueError, match="must be positive"):
        crop_nuclei(image, labels, table, size=16, scale=0.0)
