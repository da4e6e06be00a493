"""The crop store: shards resume, consolidation keeps order, crops read back exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image2reg.images import store


def make_shard(folder, shard_id: str, n: int, offset: int) -> np.ndarray:
    crops = (np.arange(n)[:, None, None] + offset + np.zeros((1, 8, 8))).astype(np.uint8)
    nuclei = pd.DataFrame({"Metadata_Plate": shard_id, "label": np.arange(1, n + 1), "value": offset + np.arange(n)})
    fields = pd.DataFrame({"Metadata_Plate": [shard_id], "n_nuclei": [n]})
    store.write_shard(folder, shard_id, crops, {"nuclei": nuclei, "images": fields})
    return crops


def test_consolidated_store_keeps_shard_order_and_crop_rows(tmp_path):
    expected = [make_shard(tmp_path, "b", 5, 100), make_shard(tmp_path, "a", 0, 0), make_shard(tmp_path, "c", 7, 10)]
    assert store.shard_done(tmp_path, "b") and not store.shard_done(tmp_path, "zzz")
    assert store.consolidate(tmp_path, ["b", "a", "c"], crop_size=8, tables=["nuclei", "images"], chunk=4) == 12

    nuclei = pd.read_parquet(tmp_path / "nuclei.parquet")
    crops = store.open_crops(tmp_path)
    assert crops.shape == (12, 8, 8) and crops.chunks == (4, 8, 8)
    np.testing.assert_array_equal(crops[:], np.concatenate(expected))
    assert list(nuclei["crop_index"]) == list(range(12))
    np.testing.assert_array_equal(crops[:][:, 0, 0], nuclei["value"].to_numpy())  # crop i is row i
    picks = np.array([11, 0, 6, 6, 3])
    np.testing.assert_array_equal(store.read_crops(crops, picks), np.concatenate(expected)[picks])
    assert list(pd.read_parquet(tmp_path / "images.parquet")["n_nuclei"]) == [5, 0, 7]


def test_unfinished_shard_blocks_consolidation_and_mismatch_is_refused(tmp_path):
    make_shard(tmp_path, "a", 3, 0)
    with pytest.raises(FileNotFoundError, match="not finished"):
        store.consolidate(tmp_path, ["a", "b"], crop_size=8, tables=["nuclei"])
    with pytest.raises(ValueError, match="2 crops for 3 nuclei"):
        store.write_shard(tmp_path, "x", np.zeros((2, 8, 8), np.uint8), {"nuclei": pd.DataFrame({"a": [1, 2, 3]})})
    assert not store.shard_done(tmp_path, "x")


def test_a_new_crop_array_replaces_the_old_one_atomically_under_a_unique_name(tmp_path):
    from image2reg.outputs import exchange
    from image2reg.outputs import replace_folder as _replace

    old, new = tmp_path / "nuclei.zarr", tmp_path / ".nuclei.zarr.abc"
    old.mkdir()
    (old / "old").write_text("old")
    new.mkdir()
    (new / "new").write_text("new")
    _replace(new, old)
    assert (old / "new").read_text() == "new" and not (old / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nuclei.zarr"]  # nothing left beside it
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").touch()
    if exchange(a, b):  # Linux: the two folders traded places in one step
        assert (b / "x").exists() and not (a / "x").exists()
