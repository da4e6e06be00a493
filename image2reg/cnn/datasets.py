"""Batches of nuclei for the CNN stages: crops from the zarr store, region patches from the fields.

A batch is a dict of tensors: ``nucleus`` (uint8, N×1×64×64), ``region`` (uint8, N×1×S×S, only
when regions are requested), ``label`` (int64, N) and ``index`` (int64, N: the row labels of the
nucleus table). Everything stays uint8 here; the training loop converts to float and augments on
the device.

- :func:`load_crops`: the crops of a split, read once in chunk order and kept in memory (4 KB
  each, so a million nuclei take 4 GB);
- :class:`RegionCutter`: the S×S patch of the illumination-corrected field of view centred on a
  nucleus (method §4.1, component 1 of the ensemble), with an LRU cache of prepared fields;
- :class:`NucleusBatches`: the batches of one split, re-iterable once per epoch, shuffled
  deterministically for a seed and an epoch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from image2reg.images.illumination import correct_illumination, read_illumination_function
from image2reg.images.io import read_field
from image2reg.images.store import open_crops
from image2reg.layout import stored_path

logger = logging.getLogger("image2reg")

#: Percentiles of a corrected field mapped to 0 and 255 (a robust minimum and maximum).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 99.9
#: Percentile of a corrected field that fills the region outside it (the reference's padding).
PAD_PERCENTILE = 1.0

#: The nucleus-table columns read: crop row, field of view and centroid (pixels, row and column).
CROP_INDEX, FIELD, CENTROID_Y, CENTROID_X = "crop_index", "image_path", "centroid_y", "centroid_x"


def load_crops(folder: str | Path, crop_indices: Sequence[int] | np.ndarray,
               progress_bar: bool = False) -> torch.Tensor:
    """Read crops from a stage-01 crop store into memory, each touched chunk once, in chunk order.

    Reading crop by crop (or batch by batch in random order) would decode every chunk many times;
    sorting the indices and reading chunk after chunk decodes each once.

    Parameters
    ----------
    folder
        The stage-01 folder holding ``nuclei.zarr``.
    crop_indices
        Rows of the crop array (the ``crop_index`` column of ``nuclei.parquet``), in any order,
        repeats allowed.
    progress_bar
        Show a tqdm bar over the chunks read.

    Returns
    -------
    torch.Tensor
        uint8, ``len(crop_indices)`` × 1 × size × size, in the order of ``crop_indices``.
    """
    crops = open_crops(folder)
    indices = np.asarray(crop_indices, dtype=np.int64)
    if indices.ndim != 1:
        raise ValueError(f"crop_indices must be one-dimensional, got shape {indices.shape}")
    if len(indices) and (indices.min() < 0 or indices.max() >= crops.shape[0]):
        raise IndexError(f"crop indices must lie in [0, {crops.shape[0]}), got [{indices.min()}, {indices.max()}]")
    out = np.empty((len(indices), 1, *crops.shape[1:]), dtype=np.uint8)
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    chunk = crops.chunks[0]
    starts = np.flatnonzero(np.diff(ordered // chunk)) + 1
    for positions in tqdm(np.split(np.arange(len(ordered)), starts) if len(ordered) else [],
                          desc="reading crops", unit="chunk", disable=not progress_bar):
        first = ordered[positions[0]] // chunk * chunk
        block = crops[first:min(first + chunk, crops.shape[0])]
        out[order[positions], 0] = block[ordered[positions] - first]
    return torch.from_numpy(out)


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 255 linearly, clip, round to uint8.

    A constant field (``high <= low``) maps to 0.
    """
    span = high - low
    if not span > 0:
        return np.zeros(np.shape(values), dtype=np.uint8)
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / span)
    return (np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


class RegionCutter:
    """Cut the size×size patch of the illumination-corrected field centred on each nucleus.

    A field is read, divided by its plate's illumination function, scaled to uint8 by its own
    robust range (percentile 0.1 → 0, 99.9 → 255) and padded once by ``size // 2`` on every side
    with its 1st percentile (scaled the same way); patches are then plain slices. The last
    ``cache_fields`` prepared fields are kept (least recently used dropped first), so batches drawn
    field by field read each field once: (1080 + 448)² bytes = 2.3 MB per Rohban field at the
    reference's 448 px, 150 MB for 64 fields. Illumination functions are read once per plate and
    kept (float32, 4.7 MB per plate of 1080² fields).

    The reference (method §4.1) pads by the full size with the field's 1st percentile and crops at
    ``(int(row), int(col))`` in the padded field, so the nucleus centroid's pixel is the patch's
    pixel ``(size // 2, size // 2)``; the same here. It scaled fields as ``(x - p0.1) / p99.9``,
    and only when p99.9 exceeded 255 (method §11, quirk 1): dim fields came out darker than bright
    ones by the ratio of their offsets, and 8-bit fields were not scaled at all. Here every field
    is scaled by ``(x - p0.1) / (p99.9 - p0.1)``, whatever its bit depth.

    Parameters
    ----------
    fields
        Field (the ``image_path`` of the nucleus table) → its plate.
    illumination
        Plate → its illumination function file, or None for fields used as they are (already
        corrected, or a run without correction).
    size
        Side of the patches in pixels (the reference: 448 on 1080 px fields).
    cache_fields
        Number of prepared fields kept.
    base
        The folder of the nucleus table: a relative ``image_path`` is read from there
        (:func:`image2reg.layout.stored_path`).
    """

    def __init__(self, fields: Mapping[str, str], illumination: Mapping[str, str | Path | None], size: int,
                 cache_fields: int = 64, base: str | Path | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        if cache_fields < 1:
            raise ValueError(f"cache_fields must be at least 1, got {cache_fields}")
        plates = {str(plate) for plate in fields.values()}
        unknown = sorted(plates - {str(plate) for plate in illumination})
        if unknown:
            raise KeyError(f"no illumination entry (a path or None) for plates {unknown}")
        self.fields = {str(path): str(plate) for path, plate in fields.items()}
        self.illumination = {str(plate): path for plate, path in illumination.items()}
        self.size = size
        self.cache_fields = cache_fields
        self.base = None if base is None else str(base)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._functions: dict[str, np.ndarray | None] = {}

    @property
    def cached(self) -> list[str]:
        """The fields in the cache, least recently used first."""
        return list(self._cache)

    def cut(self, rows: pd.DataFrame) -> torch.Tensor:
        """The patches of the given nuclei.

        Parameters
        ----------
        rows
            Nuclei with ``image_path``, ``centroid_y`` and ``centroid_x`` (pixels).

        Returns
        -------
        torch.Tensor
            uint8, ``len(rows)`` × 1 × size × size, in the order of ``rows``.
        """
        out = np.empty((len(rows), 1, self.size, self.size), dtype=np.uint8)
        codes, paths = pd.factorize(rows[FIELD].astype(str))
        row = np.floor(rows[CENTROID_Y].to_numpy(dtype=np.float64)).astype(np.int64)
        col = np.floor(rows[CENTROID_X].to_numpy(dtype=np.float64)).astype(np.int64)
        # cached fields first: refreshed before new ones can evict them, a batch never reads a field twice
        for code in sorted(range(len(paths)), key=lambda k: paths[k] not in self._cache):
            members = np.flatnonzero(codes == code)
            padded = self.field(paths[code])
            height, width = (side - 2 * (self.size // 2) for side in padded.shape)
            outside = (row[members] < 0) | (row[members] >= height) | (col[members] < 0) | (col[members] >= width)
            if outside.any():
                raise ValueError(f"{outside.sum()} centroid(s) lie outside the {height}×{width} field {paths[code]}")
            # with a pad of size // 2, the patch centred on (r, c) starts at (r, c) of the padded field
            windows = sliding_window_view(padded, (self.size, self.size))
            out[members, 0] = windows[row[members], col[members]]
        return torch.from_numpy(out)

    def field(self, path: str) -> np.ndarray:
        """The corrected, scaled (uint8) and padded field, from the cache or prepared now."""
        path = str(path)
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        padded = self._prepare(path)
        self._cache[path] = padded
        if len(self._cache) > self.cache_fields:
            self._cache.popitem(last=False)
        return padded

    def _prepare(self, path: str) -> np.ndarray:
        if path not in self.fields:
            raise KeyError(f"field {path} is not among the RegionCutter's fields")
        image = read_field(path if self.base is None else stored_path(path, self.base))
        function = self._function(self.fields[path])
        corrected = image.astype(np.float32) if function is None else correct_illumination(image, function)
        low, pad, high = np.percentile(corrected, [LOW_PERCENTILE, PAD_PERCENTILE, HIGH_PERCENTILE])
        fill = scale_to_uint8(pad, low, high)
        return np.pad(scale_to_uint8(corrected, low, high), self.size // 2, constant_values=fill)

    def _function(self, plate: str) -> np.ndarray | None:
        if plate not in self._functions:
            path = self.illumination[plate]
            self._functions[plate] = None if path is None else read_illumination_function(path)
        return self._functions[plate]


class NucleusBatches:
    """The batches of one split of the nucleus table, one pass per iteration (epoch).

    The split's crops are read into memory at construction (:func:`load_crops`). Every iteration
    yields each nucleus of the split once, in batches of ``batch_size`` (the last one smaller
    when the split does not divide evenly: unlike the reference's ``drop_last=True``, method §11
    quirk 3, no nucleus is left out of training or of the reported metrics). When shuffling
    (training), a last batch of a single nucleus joins the batch before it, as batch norm cannot
    train on one sample.

    Orders: without shuffling, the split table's order. With shuffling, epoch ``e`` draws its
    order from a generator seeded with ``(seed, e)``, so it is the same in every run, and each
    iteration advances the epoch (:meth:`set_epoch` sets it, for a resumed run). Without regions
    nuclei are shuffled freely. With regions a free shuffle would touch a different field for
    almost every nucleus and defeat the field cache (a 1080² field read, corrected and scaled per
    nucleus instead of once per ~100 nuclei); so the fields are shuffled, cut into windows of
    ``window_fields`` consecutive fields, and the nuclei shuffled within each window. The price is
    that a batch draws from the fields of one or two windows rather than the whole split: batches
    mix fewer fields, and so fewer conditions (a field holds one), which makes gradients noisier
    and batch-norm statistics less representative than under a free shuffle; larger windows
    reduce this and cost cache memory. Each field is read once per epoch as long as the cache holds
    two windows and a batch's fields (the default window is half the cache).

    Parameters
    ----------
    nuclei
        The nucleus table of stage 01 (``crop_index``, and for regions ``image_path``,
        ``centroid_y``, ``centroid_x``), with an integer index.
    split_table
        Splits from :mod:`image2reg.cnn.splits`: ``fold``, ``split`` and ``label``, indexed by
        row labels of ``nuclei``.
    split_name
        The split to iterate (``"train"``, ``"val"``, ``"test"`` or ``"held_out"``).
    folder
        The stage-01 folder holding ``nuclei.zarr``.
    batch_size
        Nuclei per batch.
    shuffle
        Reshuffle every epoch (training) or keep the table's order (evaluation).
    seed
        Seed of the shuffling.
    regions
        Cuts the region patches; None for nucleus-only batches.
    fold
        The fold to take the split from; may be None only when the table has one fold.
    window_fields
        Fields per shuffling window with regions; default ``regions.cache_fields // 2``.
    progress_bar
        Show a tqdm bar while the crops are read.
    """

    def __init__(self, nuclei: pd.DataFrame, split_table: pd.DataFrame, split_name: str, *, folder: str | Path,
                 batch_size: int, shuffle: bool, seed: int, regions: RegionCutter | None,
                 fold: int | None = None, window_fields: int | None = None, progress_bar: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not pd.api.types.is_integer_dtype(nuclei.index):
            raise ValueError(f"the nucleus table needs an integer index (batches carry it as int64), "
                             f"got {nuclei.index.dtype}")
        selected = _select(split_table, split_name, fold)
        missing = selected.index.difference(nuclei.index)
        if len(missing):
            raise KeyError(f"{len(missing)} nuclei of split {split_name!r} are not in the nucleus table, "
                           f"e.g. {missing[0]}")
        columns = [CROP_INDEX] if regions is None else [CROP_INDEX, FIELD, CENTROID_Y, CENTROID_X]
        absent = [column for column in columns if column not in nuclei]
        if absent:
            raise ValueError(f"the nucleus table lacks the columns {absent}")
        self.rows = nuclei.loc[selected.index, columns]
        self.index = torch.as_tensor(selected.index.to_numpy(dtype=np.int64))
        self.labels = torch.as_tensor(selected["label"].to_numpy(dtype=np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.regions = regions
        if window_fields is None:
            window_fields = max(1, regions.cache_fields // 2) if regions is not None else 1
        if window_fields < 1:
            raise ValueError(f"window_fields must be at least 1, got {window_fields}")
        if regions is not None and shuffle and 2 * window_fields > regions.cache_fields:
            logger.warning("shuffling windows of %d fields with a cache of %d fields: fields will be read "
                           "more than once per epoch", window_fields, regions.cache_fields)
        self.window_fields = window_fields
        self.epoch = 0
        self._field_codes = pd.factorize(self.rows[FIELD])[0] if regions is not None else None
        self.crops = load_crops(folder, self.rows[CROP_INDEX].to_numpy(), progress_bar=progress_bar)
        logger.info("split %s%s: %d nuclei in %d batches", split_name, "" if fold is None else f" of fold {fold}",
                    len(self.rows), len(self))

    def __len__(self) -> int:
        return len(self._starts()) - 1

    def _starts(self) -> list[int]:
        """Batch boundaries in the epoch's order: batch ``k`` is ``order[starts[k]:starts[k + 1]]``."""
        n = len(self.rows)
        starts = [*range(0, n, self.batch_size), n] if n else [0]
        if self.shuffle and len(starts) > 2 and starts[-1] - starts[-2] == 1:
            del starts[-2]  # a lone last nucleus joins the batch before it
        return starts

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (for a resumed run)."""
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        """Positions in the split (0 … n-1) in the order of epoch ``epoch``."""
        n = len(self.rows)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, epoch])
        if self.regions is None:
            return rng.permutation(n)
        return windowed_order(self._field_codes, self.window_fields, rng)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.from_numpy(self.order(self.epoch))
        self.epoch += 1
        starts = self._starts()
        for start, stop in zip(starts[:-1], starts[1:]):
            positions = order[start:stop]
            batch = {"nucleus": self.crops[positions], "label": self.labels[positions],
                     "index": self.index[positions]}
            if self.regions is not None:
                batch["region"] = self.regions.cut(self.rows.iloc[positions.numpy()])
            yield batch


def windowed_order(field_codes: np.ndarray, window_fields: int, rng: np.random.Generator) -> np.ndarray:
    """A training order that reads each field once: fields shuffled, cut into windows of ``window_fields``
    fields, nuclei shuffled within each window (see :class:`NucleusBatches`).

    Parameters
    ----------
    field_codes
        One integer per nucleus: its field.
    window_fields
        Fields per window.
    rng
        The epoch's generator.

    Returns
    -------
    numpy.ndarray
        A permutation of ``0 … len(field_codes) - 1``.
    """
    field_codes = np.asarray(field_codes)
    if not len(field_codes):
        return np.arange(0)
    by_field = np.argsort(field_codes, kind="stable")
    bounds = np.flatnonzero(np.diff(field_codes[by_field])) + 1
    fields = np.split(by_field, bounds)
    shuffled = [fields[k] for k in rng.permutation(len(fields))]
    windows = [np.concatenate(shuffled[start:start + window_fields])
               for start in range(0, len(shuffled), window_fields)]
    return np.concatenate([rng.permutation(window) for window in windows])


def batch_mixing(order: np.ndarray, field_codes: np.ndarray, labels: np.ndarray, batch_size: int) -> dict[str, float]:
    """How much the batches of an order mix: mean distinct fields and conditions per full batch.

    Measures what the windowed order of the region branch costs against the reference's free shuffle
    (:func:`windowed_order`; batch-norm statistics and gradients see fewer fields and conditions per
    batch when batches draw from a window).
    """
    order = np.asarray(order)
    n_batches = len(order) // batch_size
    if n_batches == 0:
        raise ValueError(f"{len(order)} nuclei make no full batch of {batch_size}")
    batches = order[: n_batches * batch_size].reshape(n_batches, batch_size)
    fields = np.asarray(field_codes)[batches]
    conditions = np.asarray(labels)[batches]
    return {"fields_per_batch": float(np.mean([len(np.unique(row)) for row in fields])),
            "conditions_per_batch": float(np.mean([len(np.unique(row)) for row in conditions]))}


def _select(split_table: pd.DataFrame, split_name: str, fold: int | None) -> pd.DataFrame:
    """The rows of one split of one fold, in table order."""
    absent = sorted({"fold", "split", "label"} - set(split_table.columns))
    if absent:
        raise ValueError(f"the split table lacks the columns {absent}")
    folds = sorted(split_table["fold"].unique())
    if fold is None:
        if len(folds) > 1:
            raise ValueError(f"the split table has folds {folds}: choose one with fold=")
    elif fold not in folds:
        raise ValueError(f"fold {fold} is not in the split table (folds {folds})")
    in_fold = split_table if fold is None else split_table[split_table["fold"] == fold]
    selected = in_fold[in_fold["split"] == split_name]
    if selected.empty:
        raise ValueError(f"no nuclei in split {split_name!r}; the splits are {sorted(in_fold['split'].unique())}")
    if not selected.index.is_unique:
        raise ValueError(f"split {split_name!r} lists a nucleus more than once")
    return selected
