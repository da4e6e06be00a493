"""Storage of single-nucleus crops: per-shard files while processing, one chunked zarr array after.

While fields are processed, each shard (a group of fields) writes its crops (``.npy``) and its tables
(parquet; ``nuclei`` holds one row per crop) into ``shards/<shard id>/``, finished by a ``done``
marker written last; a killed run resumes by skipping shards that have one. :func:`consolidate` then
writes, in shard order:

- ``nuclei.zarr``: one uint8 array N × size × size (crop ``i`` is row ``i`` of ``nuclei.parquet``),
  chunked along N so a data loader reads a batch of crops with a few chunk reads instead of a
  million files;
- ``<table>.parquet`` for every table of the shards, ``nuclei.parquet`` with a ``crop_index`` column.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from image2reg.layout import TaskFiles, artifact_name, atomic_path
from image2reg.outputs import replace_folder

CROPS = artifact_name("images", "crops")
NUCLEI = "nuclei"  # the table key (of STAGE_FILES["images"]) with one row per crop
_DONE = TaskFiles.SHARD_DONE


def _table_file(name: str) -> str:
    return artifact_name("images", name)


def shard_dir(folder: Path, shard_id: str) -> Path:
    return Path(folder) / artifact_name("images", "shards") / shard_id


def shard_done(folder: Path, shard_id: str) -> bool:
    """Whether a shard was completely written by an earlier (possibly interrupted) run."""
    return (shard_dir(folder, shard_id) / _DONE).is_file()


def write_shard(folder: Path, shard_id: str, crops: np.ndarray, tables: dict[str, pd.DataFrame]) -> None:
    """Write one shard's crops and tables, each atomically, then its ``done`` marker.

    ``tables`` must hold ``nuclei``, one row per crop.
    """
    if len(crops) != len(tables[NUCLEI]):
        raise ValueError(f"shard {shard_id}: {len(crops)} crops for {len(tables[NUCLEI])} nuclei")
    target = shard_dir(folder, shard_id)
    with atomic_path(target / TaskFiles.SHARD_CROPS) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, crops, allow_pickle=False)
    for name, table in tables.items():
        with atomic_path(target / _table_file(name)) as tmp:
            table.to_parquet(tmp, index=False)
    (target / _DONE).touch()


def consolidate(folder: Path, shard_ids: Sequence[str], crop_size: int, tables: Sequence[str],
                chunk: int = 256) -> int:
    """Merge the shards, in the given order, into ``nuclei.zarr`` and one parquet file per table.

    Returns
    -------
    int
        The number of crops written.
    """
    folder = Path(folder)
    missing = [shard for shard in shard_ids if not shard_done(folder, shard)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not finished under {folder / 'shards'}: {missing[:5]}")
    sizes = [len(pd.read_parquet(shard_dir(folder, s) / _table_file(NUCLEI), columns=[])) for s in shard_ids]
    total = sum(sizes)

    for stale in folder.glob(f".{CROPS}.*"):  # left by a consolidation that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CROPS}.", dir=folder))
    shutil.rmtree(tmp)  # zarr creates the store folder itself; the unique name is what was needed
    crops = zarr.create_array(store=str(tmp), shape=(total, crop_size, crop_size), dtype="uint8",
                              chunks=(min(chunk, max(total, 1)), crop_size, crop_size), fill_value=0)
    start = 0
    for shard, size in zip(shard_ids, sizes):
        if size:
            crops[start:start + size] = np.load(shard_dir(folder, shard) / TaskFiles.SHARD_CROPS, allow_pickle=False)
            start += size
    replace_folder(tmp, folder / CROPS)

    for name in tables:
        table = pd.concat([pd.read_parquet(shard_dir(folder, s) / _table_file(name)) for s in shard_ids],
                          ignore_index=True)
        if name == NUCLEI:
            table["crop_index"] = np.arange(total)
        with atomic_path(folder / _table_file(name)) as path:
            table.to_parquet(path, index=False)
    return total


def open_crops(folder: Path) -> zarr.Array:
    """The crop array of a finished preprocessing run (read-only)."""
    return zarr.open_array(str(Path(folder) / CROPS), mode="r")


def read_crops(crops: zarr.Array, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Crops at ``indices`` (any order), reading each touched chunk once."""
    indices = np.asarray(indices)
    order = np.argsort(indices, kind="stable")
    block = crops.oindex[indices[order]]
    out = np.empty_like(block)
    out[order] = block
    return out
