"""Storage of single-nucleus crops: per-shard files while processing, one chunked zarr array after.

While fields are processed, each shard (a group of fields) writes its crops (``.npy``), nucleus table
and field table into ``shards/<shard id>/``, finished by a ``done`` marker written last; a killed run
resumes by skipping shards that have one. :func:`consolidate` then writes, in shard order:

- ``nuclei.zarr``: one uint8 array N × size × size (crop ``i`` is row ``i`` of the nucleus table),
  chunked along N so a data loader reads a batch of crops with a few chunk reads instead of a
  million files;
- ``nuclei.parquet``: ``Metadata_*`` columns, shape measures, centroid and ``crop_index``;
- ``images.parquet``: one row per field (QC measures and counts).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from image2reg.layout import atomic_path

CROPS = "nuclei.zarr"
NUCLEI = "nuclei.parquet"
FIELDS = "images.parquet"
_DONE = "done"


def shard_dir(folder: Path, shard_id: str) -> Path:
    return Path(folder) / "shards" / shard_id


def shard_done(folder: Path, shard_id: str) -> bool:
    """Whether a shard was completely written by an earlier (possibly interrupted) run."""
    return (shard_dir(folder, shard_id) / _DONE).is_file()


def write_shard(folder: Path, shard_id: str, crops: np.ndarray, nuclei: pd.DataFrame, fields: pd.DataFrame) -> None:
    """Write one shard's crops and tables, each atomically, then its ``done`` marker."""
    if len(crops) != len(nuclei):
        raise ValueError(f"shard {shard_id}: {len(crops)} crops for {len(nuclei)} nuclei")
    target = shard_dir(folder, shard_id)
    with atomic_path(target / "crops.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, crops, allow_pickle=False)
    with atomic_path(target / NUCLEI) as tmp:
        nuclei.to_parquet(tmp, index=False)
    with atomic_path(target / FIELDS) as tmp:
        fields.to_parquet(tmp, index=False)
    (target / _DONE).touch()


def consolidate(folder: Path, shard_ids: Sequence[str], crop_size: int, chunk: int = 256) -> dict[str, int]:
    """Merge the shards, in the given order, into ``nuclei.zarr``, ``nuclei.parquet`` and ``images.parquet``.

    Returns
    -------
    dict
        ``n_nuclei`` and ``n_fields`` written.
    """
    folder = Path(folder)
    missing = [shard for shard in shard_ids if not shard_done(folder, shard)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not finished under {folder / 'shards'}: {missing[:5]}")
    nuclei = [pd.read_parquet(shard_dir(folder, s) / NUCLEI) for s in shard_ids]
    fields = [pd.read_parquet(shard_dir(folder, s) / FIELDS) for s in shard_ids]
    sizes = [len(table) for table in nuclei]
    total = sum(sizes)

    tmp = folder / f".{CROPS}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    crops = zarr.create_array(store=str(tmp), shape=(total, crop_size, crop_size), dtype="uint8",
                              chunks=(min(chunk, max(total, 1)), crop_size, crop_size), fill_value=0)
    # write whole chunks at a time: fewer, larger writes than one per shard
    buffer, start = [], 0
    for shard, size in zip(shard_ids, sizes):
        if size:
            buffer.append(np.load(shard_dir(folder, shard) / "crops.npy", allow_pickle=False))
        buffered = sum(len(b) for b in buffer)
        if buffered >= chunk or (shard == shard_ids[-1] and buffered):
            block = np.concatenate(buffer)
            crops[start:start + len(block)] = block
            start += len(block)
            buffer = []
    _replace(tmp, folder / CROPS)

    table = pd.concat(nuclei, ignore_index=True) if nuclei else pd.DataFrame()
    table["crop_index"] = np.arange(total)
    with atomic_path(folder / NUCLEI) as path:
        table.to_parquet(path, index=False)
    with atomic_path(folder / FIELDS) as path:
        (pd.concat(fields, ignore_index=True) if fields else pd.DataFrame()).to_parquet(path, index=False)
    return {"n_nuclei": total, "n_fields": int(sum(len(f) for f in fields))}


def _replace(new: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    new.rename(target)


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
