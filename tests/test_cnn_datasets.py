"""Crops, region patches and batches for the CNN, on stage 01's outputs for the smoke world."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import zarr

from image2reg.cnn import datasets
from image2reg.cnn.datasets import NucleusBatches, RegionCutter, load_crops
from image2reg.images import pipeline, store
from image2reg.images.illumination import correct_illumination, read_illumination_function

SIZE = 64  # region side for the 160 px smoke fields: many nuclei lie within 32 px of a border


@pytest.fixture(scope="module")
def stage01(smoke_stage01) -> Path:
    return smoke_stage01


@pytest.fixture(scope="module")
def nuclei(stage01) -> pd.DataFrame:
    return pd.read_parquet(stage01 / "nuclei.parquet")


@pytest.fixture(scope="module")
def illumination(stage01, nuclei) -> dict[str, str]:
    return {plate: str(pipeline.illumination_path(stage01, plate)) for plate in nuclei["Metadata_Plate"].unique()}


def cutter(nuclei, illumination, cache_fields=64) -> RegionCutter:
    fields = dict(zip(nuclei["image_path"], nuclei["Metadata_Plate"]))
    return RegionCutter(fields, illumination, SIZE, cache_fields=cache_fields)


@pytest.fixture(scope="module")
def split_table(nuclei) -> pd.DataFrame:
    """Two folds of random field-grouped splits of the QC-passing nuclei, in table order."""
    usable = nuclei[nuclei["QC_pass"]]
    fields = np.array(sorted(usable["image_path"].unique()))
    classes = sorted(usable["Metadata_Gene"].unique())
    rng = np.random.default_rng(0)
    folds = []
    for fold in range(2):
        split_of_field = dict(zip(fields, rng.choice(["train", "train", "val", "test"], size=len(fields))))
        folds.append(pd.DataFrame({"fold": fold, "split": usable["image_path"].map(split_of_field),
                                   "label": pd.Index(classes).get_indexer(usable["Metadata_Gene"])},
                                  index=usable.index))
    return pd.concat(folds)


def expected_field(path: str, illumination_file: str) -> tuple[np.ndarray, float]:
    """The field corrected and scaled independently of the module, and its scaled 1st percentile."""
    corrected = correct_illumination(tifffile.imread(path), read_illumination_function(illumination_file))
    low, pad, high = np.percentile(corrected.astype(np.float64), [0.1, 1, 99.9])

    def scale(values):
        return np.round(np.clip((np.asarray(values, np.float64) - low) / (high - low), 0, 1) * 255)

    return scale(corrected), float(scale(pad))


def test_load_crops_returns_the_stored_crops_for_any_indices(stage01, tmp_path):
    stored = store.open_crops(stage01)[:]
    indices = np.array([5, 0, len(stored) - 1, 5, 17, 3, 0])
    crops = load_crops(stage01, indices)
    assert crops.dtype == torch.uint8 and crops.shape == (len(indices), 1, 64, 64)
    assert np.array_equal(crops[:, 0].numpy(), stored[indices])

    # a store of many chunks, read in random order with repeats
    many = np.random.default_rng(1).integers(0, 256, size=(50, 64, 64), dtype=np.uint8)
    array = zarr.create_array(store=str(tmp_path / store.CROPS), shape=many.shape, dtype="uint8", chunks=(7, 64, 64))
    array[:] = many
    indices = np.random.default_rng(2).integers(0, 50, size=80)
    assert np.array_equal(load_crops(tmp_path, indices)[:, 0].numpy(), many[indices])
    assert load_crops(tmp_path, []).shape == (0, 1, 64, 64)
    with pytest.raises(IndexError):
        load_crops(tmp_path, [0, 50])


def test_region_patches_are_centred_on_the_nuclei_and_padded_with_the_1st_percentile(nuclei, illumination):
    patches = cutter(nuclei, illumination).cut(nuclei)
    assert patches.dtype == torch.uint8 and patches.shape == (len(nuclei), 1, SIZE, SIZE)
    half = SIZE // 2
    near_border = 0
    for (path, plate), members in nuclei.groupby(["image_path", "Metadata_Plate"]).indices.items():
        field, fill = expected_field(path, illumination[plate])
        height, width = field.shape
        padded = np.pad(field, SIZE, constant_values=fill)
        for position in members:
            row, col = int(nuclei["centroid_y"].iat[position]), int(nuclei["centroid_x"].iat[position])
            patch = patches[position, 0].numpy().astype(np.float64)
            assert patch[half, half] == pytest.approx(field[row, col], abs=1)
            expected = padded[row + SIZE - half:row + SIZE - half + SIZE, col + SIZE - half:col + SIZE - half + SIZE]
            assert np.abs(patch - expected).max() <= 1  # rounding at exact halves may differ
            inside_rows = (np.arange(SIZE) + row - half >= 0) & (np.arange(SIZE) + row - half < height)
            inside_cols = (np.arange(SIZE) + col - half >= 0) & (np.arange(SIZE) + col - half < width)
            outside = ~np.outer(inside_rows, inside_cols)
            if outside.any():
                near_border += 1
                assert np.abs(patch[outside] - fill).max() <= 1 and len(np.unique(patch[outside])) == 1
    assert near_border > 0


def test_fields_are_scaled_by_their_robust_range_whatever_their_bit_depth(tmp_path):
    # a ramp 1000..2999: the reference's (x - p0.1) / p99.9 would put its middle at ~1/3 of the range
    ramp = (1000 + np.arange(2000, dtype=np.uint16)).reshape(40, 50)
    eight_bit = (10 + np.arange(2000) // 40).astype(np.uint8).reshape(40, 50)
    fields = {}
    for name, image in (("ramp", ramp), ("eight_bit", eight_bit)):
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
        fields[str(tmp_path / f"{name}.tif")] = "plate"
    regions = RegionCutter(fields, {"plate": None}, size=5)
    centre = pd.DataFrame({"image_path": list(fields), "centroid_y": [20.0, 20.0], "centroid_x": [25.3, 25.3]})
    for path in fields:
        scaled = regions.field(path)[2:-2, 2:-2]
        assert scaled.min() == 0 and scaled.max() == 255
        assert abs(int(np.median(scaled)) - 128) <= 2
    assert np.abs(regions.cut(centre)[:, 0, 2, 2].numpy().astype(int) - 128).max() <= 4


def test_the_cache_reads_each_field_once(nuclei, illumination, split_table, stage01, monkeypatch):
    reads = Counter()
    original = datasets.read_field

    def counting(path):
        reads[path] += 1
        return original(path)

    monkeypatch.setattr(datasets, "read_field", counting)
    first, second = nuclei["image_path"].unique()[:2]
    a, b = nuclei[nuclei["image_path"] == first].head(1), nuclei[nuclei["image_path"] == second].head(1)

    small = cutter(nuclei, illumination, cache_fields=1)
    small.cut(pd.concat([a, b, a, b]))  # one batch reads each of its fields once, even with a tiny cache
    assert reads == {first: 1, second: 1}
    for rows in (a, b, a):
        small.cut(rows)
    assert reads == {first: 3, second: 2}  # the cache of one field holds the last one used

    reads.clear()
    two = cutter(nuclei, illumination, cache_fields=2)
    for rows in (a, b, a, b):
        two.cut(rows)
    assert reads == {first: 1, second: 1} and two.cached == [first, second]

    for shuffle, cache_fields in ((True, 4), (False, 1)):
        reads.clear()
        batches = NucleusBatches(nuclei, split_table, "train", folder=stage01, batch_size=4, shuffle=shuffle, seed=0,
                                 regions=cutter(nuclei, illumination, cache_fields), fold=0, window_fields=2)
        for _ in batches:
            pass
        train = nuclei.loc[split_table[(split_table["fold"] == 0) & (split_table["split"] == "train")].index]
        assert reads == Counter({path: 1 for path in train["image_path"].unique()})


@pytest.mark.parametrize("with_regions", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_hold_every_nucleus_of_the_split_once(nuclei, illumination, split_table, stage01, with_regions,
                                                      shuffle):
    regions = cutter(nuclei, illumination) if with_regions else None
    batches = NucleusBatches(nuclei, split_table, "train", folder=stage01, batch_size=5, shuffle=shuffle, seed=3,
                             regions=regions, fold=1)
    split = split_table[(split_table["fold"] == 1) & (split_table["split"] == "train")]
    assert len(split) % 5  # the last batch is partial
    stored = store.open_crops(stage01)[:]
    for _ in range(2):
        seen = list(batches)
        assert len(seen) == len(batches) == math.ceil(len(split) / 5)
        assert [len(batch["index"]) for batch in seen] == [5] * (len(seen) - 1) + [len(split) % 5]
        for batch in seen:
            assert set(batch) == {"nucleus", "label", "index"} | ({"region"} if with_regions else set())
            assert batch["nucleus"].dtype == torch.uint8 and batch["nucleus"].shape[1:] == (1, 64, 64)
            assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
            index = batch["index"].numpy()
            assert np.array_equal(batch["label"].numpy(), split.loc[index, "label"].to_numpy())
            assert np.array_equal(batch["nucleus"][:, 0].numpy(), stored[nuclei.loc[index, "crop_index"]])
            if with_regions:
                assert batch["region"].dtype == torch.uint8 and batch["region"].shape[1:] == (1, SIZE, SIZE)
                assert torch.equal(batch["region"], regions.cut(nuclei.loc[index]))
        order = np.concatenate([batch["index"].numpy() for batch in seen])
        assert sorted(order) == sorted(split.index)
        if not shuffle:
            assert list(order) == list(split.index)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_lone_last_nucleus_joins_the_batch_before_it_in_training(nuclei, split_table, stage01, shuffle):
    # batch norm cannot train on a batch of one; evaluation keeps the plain batches
    split = split_table[(split_table["fold"] == 0) & (split_table["split"] == "train")]
    size = next(size for size in range(2, len(split)) if len(split) % size == 1)
    batches = NucleusBatches(nuclei, split_table, "train", folder=stage01, batch_size=size, shuffle=shuffle,
                             seed=0, regions=None, fold=0)
    sizes = [len(batch["index"]) for batch in batches]
    assert len(sizes) == len(batches) and sum(sizes) == len(split)
    expected = len(split) // size
    assert sizes == ([size] * (expected - 1) + [size + 1] if shuffle else [size] * expected + [1])


def test_without_shuffling_the_split_table_order_is_kept(nuclei, split_table, stage01):
    reordered = split_table.iloc[::-1]
    batches = NucleusBatches(nuclei, reordered, "val", folder=stage01, batch_size=3, shuffle=False, seed=0,
                             regions=None, fold=0)
    order = np.concatenate([batch["index"].numpy() for batch in batches])
    assert list(order) == list(reordered[(reordered["fold"] == 0) & (reordered["split"] == "val")].index)


@pytest.mark.parametrize("with_regions", [False, True])
def test_shuffling_is_deterministic_per_seed_and_epoch(nuclei, illumination, split_table, stage01, with_regions):
    def make(seed):
        regions = cutter(nuclei, illumination) if with_regions else None
        return NucleusBatches(nuclei, split_table, "train", folder=stage01, batch_size=4, shuffle=True, seed=seed,
                              regions=regions, fold=0, window_fields=3)

    def epoch(batches):
        return [int(i) for batch in batches for i in batch["index"]]

    run, rerun, resumed = make(7), make(7), make(7)
    first, second = epoch(run), epoch(run)
    assert first == epoch(rerun) and second == epoch(rerun)
    assert first != second and sorted(first) == sorted(second)
    resumed.set_epoch(1)
    assert epoch(resumed) == second
    assert epoch(make(8)) != first


def test_region_shuffling_keeps_each_field_within_a_window(nuclei, illumination, split_table, stage01):
    batches = NucleusBatches(nuclei, split_table, "train", folder=stage01, batch_size=4, shuffle=True, seed=0,
                             regions=cutter(nuclei, illumination), fold=0, window_fields=3)
    fields = batches.rows["image_path"].to_numpy()
    for epoch in range(3):
        ordered = fields[batches.order(epoch)]
        for field in np.unique(ordered):
            span = np.flatnonzero(ordered == field)
            assert len(np.unique(ordered[span[0]:span[-1] + 1])) <= 3


def test_bad_requests_are_refused(nuclei, split_table, stage01):
    with pytest.raises(ValueError, match="choose one with fold="):
        NucleusBatches(nuclei, split_table, "train", folder=stage01, batch_size=4, shuffle=False, seed=0, regions=None)
    with pytest.raises(ValueError, match="no nuclei in split 'valid'"):
        NucleusBatches(nuclei, split_table, "valid", folder=stage01, batch_size=4, shuffle=False, seed=0,
                       regions=None, fold=0)
    with pytest.raises(KeyError, match="no illumination entry"):
        RegionCutter({"a.tif": "p1"}, {}, size=8)


def test_windowed_order_reads_fields_in_windows_and_mixes_less_than_a_free_shuffle():
    from image2reg.cnn.datasets import batch_mixing, windowed_order

    field_codes = np.repeat(np.arange(40), 10)
    labels = np.repeat(np.arange(40) % 4, 10)
    order = windowed_order(field_codes, 4, np.random.default_rng(0))
    assert sorted(order) == list(range(400))  # a permutation
    windows = field_codes[order].reshape(10, 40)  # 10 windows of 4 fields x 10 nuclei
    assert all(len(np.unique(window)) == 4 for window in windows)
    assert len(np.unique(windows)) == 40 and len({frozenset(w) for w in windows}) == 10  # each field in one window
    windowed = batch_mixing(order, field_codes, labels, 20)
    free = batch_mixing(np.random.default_rng(0).permutation(400), field_codes, labels, 20)
    assert windowed["fields_per_batch"] <= 4 < free["fields_per_batch"]
    assert batch_mixing(np.arange(400), field_codes, labels, 20) == {"fields_per_batch": 2.0,
                                                                     "conditions_per_batch": 2.0}
    with pytest.raises(ValueError, match="no full batch"):
        batch_mixing(np.arange(5), field_codes[:5], labels[:5], 20)
