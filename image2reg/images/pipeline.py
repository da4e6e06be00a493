"""Stage 01: fields of view → illumination correction, QC, segmentation, nucleus filters, crops.

One pass over every field, spread over workers in shards of a few fields (see
:mod:`image2reg.execute`); each shard's results are written as soon as it finishes, so a killed run
resumes without redoing finished shards. Illumination functions are estimated per plate first.

Bad fields follow one policy in every step that reads them (the illumination estimate, QC,
segmentation and crops, and so stage 08 and ``predict``, which run this pipeline): a missing,
truncated, corrupt or wrong-shape file (another shape than its plate's, :func:`plate_field_shapes`)
is named once in the log, recorded with its reason (which names the file) in the ``error`` column of
``images.parquet`` and skipped; when more than ``max_bad_fraction`` of the fields are bad the stage
stops with an error listing them (:func:`image2reg.images.io.check_bad_fields`). Per-plate QC flags
need every field's measures, so they are set after the pass; nuclei of flagged fields stay in the
tables, marked ``QC_pass = False``, so the report can show what was flagged.

Outputs in ``out_dir``: ``nuclei.zarr`` (crops), ``nuclei.parquet`` (one row per crop),
``nuclei_dropped.parquet`` (nuclei removed by a filter, with the reason), ``images.parquet`` (one
row per field: QC measures, flags, counts, errors) and ``illumination/<plate>.tif``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from image2reg.config import ImagesStageParams
from image2reg.data.cellpainting import read_image_table
from image2reg.execute import map_tasks
from image2reg.images import store
from image2reg.images.illumination import correct_illumination, estimate_illumination, read_illumination_function
from image2reg.images.io import ImageReadError, check_bad_fields, field_shape, read_field
from image2reg.images.nuclei import crop_nuclei, filter_nuclei, measure_nuclei
from image2reg.images.qc import field_qc, flag_fields, outlier_fields
from image2reg.images.segmentation import make_segmenter, match_labels
from image2reg.layout import RawLayout, artifact_name, atomic_path, portable_path, stored_path, write_json

logger = logging.getLogger("image2reg")

#: Columns the field table given to :func:`preprocess_images` must have.
FIELD_COLUMNS = ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "image_path")
TABLES = ("nuclei", "nuclei_dropped", "images")
TOO_LARGE = "larger_than_crop"
#: Fields per plate whose TIFF headers decide the plate's field shape (:func:`plate_field_shapes`).
SHAPE_PROBES = 9
#: Fields per plate read for its crop intensity scale (:func:`plate_intensity_scales`).
SCALE_FIELDS = 24


@dataclass(frozen=True)
class ShardTask:
    """A few fields of one plate, processed by one worker (plain data: it crosses processes)."""

    shard_id: str
    fields: list[dict]
    illumination: str | None
    params: ImagesStageParams
    out_dir: str
    shape: tuple[int, int] | None = None  #: the plate's field shape; a field of another shape is bad
    known_errors: dict[str, str] = dataclasses.field(default_factory=dict)  #: fields found bad already (path -> error)
    intensity_scale: float | None = None  #: the plate's crop scale (crop_scaling plate_percentile)


def field_inputs(images: pd.DataFrame, raw: RawLayout, supplied_masks: bool) -> pd.DataFrame:
    """The field table of :func:`preprocess_images` from a normalised image table
    (:func:`image2reg.data.cellpainting.read_image_table`): absolute image, mask and illumination paths."""
    fields = images.copy()
    fields["image_path"] = [str(raw.root / path) for path in images["Metadata_PathName"]]
    if supplied_masks and "Metadata_MaskPathName" in images:  # a folder screen names each field's mask
        fields["mask_path"] = [str(raw.root / path) for path in images["Metadata_MaskPathName"]]
    elif supplied_masks:
        fields["mask_path"] = [str(raw.masks / str(plate) / name)
                               for plate, name in zip(images["Metadata_Plate"], images["Metadata_FileName"])]
    if "Metadata_IllumPathName" in images:
        fields["illumination_path"] = [str(raw.root / path) if isinstance(path, str) else None
                                       for path in images["Metadata_IllumPathName"]]
    return fields


def segmenter(params: ImagesStageParams) -> Callable[[np.ndarray, Path | None], np.ndarray]:
    """The segmenter the stage's params name (see :func:`image2reg.images.segmentation.make_segmenter`)."""
    seg = params.segmentation
    return make_segmenter(seg.method, nucleus_diameter=seg.nucleus_diameter, cellpose_model=seg.cellpose_model)


def corrected_field(image: np.ndarray, illumination: np.ndarray | None) -> np.ndarray:
    """The field divided by its illumination function, as float32 (unchanged when there is none)."""
    return image.astype(np.float32) if illumination is None else correct_illumination(image, illumination)


def illumination_path(out_dir: Path, plate: str) -> Path:
    return Path(out_dir) / artifact_name("images", "illumination") / f"{plate}.tif"


def field_error(path: str | Path, error: BaseException) -> str:
    """The ``error`` entry of a bad field: the exception's type and message, which always names the file."""
    message = str(error)
    if str(path) not in message:
        message = f"{path}: {message}"
    return f"{type(error).__name__}: {message}"


def plate_field_shapes(fields: pd.DataFrame, probes: int = SHAPE_PROBES) -> dict[str, tuple[int, int] | None]:
    """Each plate's field shape: the most common 2-D shape in the headers of a few of its fields.

    Every field of a plate comes from one camera, so a field of another shape is a wrong file; it is
    bad whatever the illumination method. Only headers are read (no pixels), ``probes`` fields
    evenly spread over each plate; unreadable headers are passed over.

    Parameters
    ----------
    fields
        The field table (``Metadata_Plate``, ``image_path``).
    probes
        Fields per plate whose headers are read.

    Returns
    -------
    dict
        Plate -> (height, width), or None when no probed header holds a 2-D field (no shape is then
        required).
    """
    shapes: dict[str, tuple[int, int] | None] = {}
    for plate, group in fields.groupby(fields["Metadata_Plate"].astype(str), sort=True):
        paths = group["image_path"].to_numpy()
        picks = np.unique(np.linspace(0, len(paths) - 1, min(probes, len(paths))).round().astype(int))
        seen: Counter[tuple[int, ...]] = Counter()
        for path in paths[picks]:
            try:
                shape = field_shape(path)
            except ImageReadError:
                continue
            if len(shape) == 2:
                seen[shape] += 1
        shapes[plate] = seen.most_common(1)[0][0] if seen else None
    return shapes


def _estimate_plate(task: tuple[str, list[str], str, ImagesStageParams, tuple[int, int] | None]
                    ) -> tuple[str, bool, dict[str, str]]:
    """Estimate one plate's function from its readable sampled fields and save it.

    Returns the plate, whether a function was written (not when no sampled field is readable) and the
    bad sampled fields (path -> :func:`field_error`).
    """
    plate, paths, target, params, shape = task
    bad: dict[str, str] = {}
    try:
        function = estimate_illumination(_readable_fields(paths, shape, bad),
                                         smoothing_sigma=params.illumination.smoothing_sigma,
                                         downsample=params.illumination.downsample)
    except ValueError:
        if len(bad) == len(paths):  # no field to estimate from
            return plate, False, bad
        raise
    with atomic_path(target) as tmp:
        tifffile.imwrite(tmp, function.astype(np.float32))
    return plate, True, bad


def _readable_fields(paths: list[str], shape: tuple[int, int] | None, bad: dict[str, str]) -> Iterator[np.ndarray]:
    """The fields of ``paths`` that can be read with ``shape``; the others are entered in ``bad``."""
    for path in paths:
        try:
            yield read_field(path, shape=shape)
        except ImageReadError as error:
            bad[path] = field_error(path, error)


def prepare_illumination(fields: pd.DataFrame, out_dir: Path, params: ImagesStageParams,
                         progress_bar: bool = True) -> dict[str, str | None]:
    """The illumination function of every plate: published, estimated (and saved), or none.

    With method ``published`` a plate uses the function its image table names (``illumination_path``,
    as the Gallery's LoadData tables give it); a plate without one, or whose file is missing, falls
    back to a function estimated from its own fields, with a warning naming the plates. Estimated
    functions are saved under ``out_dir/illumination/`` and reused by a rerun. Bad sampled fields are
    named in the log and left out of the estimate (:func:`estimate_plate_illumination`).
    """
    return estimate_plate_illumination(fields, out_dir, params, progress_bar=progress_bar)[0]


def estimate_plate_illumination(fields: pd.DataFrame, out_dir: Path, params: ImagesStageParams,
                                shapes: dict[str, tuple[int, int] | None] | None = None, progress_bar: bool = True
                                ) -> tuple[dict[str, str | None], dict[str, str]]:
    """:func:`prepare_illumination`, with the bad fields the estimate met.

    A field the estimate cannot read, or of another shape than its plate's, is logged once by name
    and left out. A plate none of whose fields is readable gets no function (all its fields are bad);
    a plate with more fields than ``max_fields_per_plate`` none of whose sampled ones is readable is
    an error naming the plate.

    Parameters
    ----------
    fields, out_dir, params, progress_bar
        As :func:`prepare_illumination`.
    shapes
        Plate -> field shape (:func:`plate_field_shapes`); None: probed here for the plates estimated.

    Returns
    -------
    functions
        Plate -> function file, or None (no correction).
    bad
        Bad sampled field (path) -> :func:`field_error`, in the order the plates and fields were read.

    Raises
    ------
    ValueError
        A plate of many fields none of whose sampled fields is readable (named, with the files).
    """
    method = params.illumination.method
    plates = sorted(fields["Metadata_Plate"].astype(str).unique())
    if method == "none":
        return {plate: None for plate in plates}, {}
    functions: dict[str, str | None] = {}
    if method == "published":
        named = (fields.dropna(subset=["illumination_path"]).groupby(fields["Metadata_Plate"].astype(str))
                 ["illumination_path"].first() if "illumination_path" in fields else pd.Series(dtype=object))
        functions = {plate: str(named[plate]) for plate in plates if plate in named and Path(named[plate]).is_file()}
        fallback = [plate for plate in plates if plate not in functions]
        if fallback:
            logger.warning("no published illumination function for %d of %d plates (%s): estimated from their "
                           "fields instead", len(fallback), len(plates), ", ".join(fallback[:10]))
    tasks, sizes = [], {}
    for plate in plates:
        if plate in functions:
            continue
        target = illumination_path(out_dir, plate)
        functions[plate] = str(target)
        if target.is_file():
            continue
        paths = fields.loc[fields["Metadata_Plate"].astype(str) == plate, "image_path"].to_numpy()
        step = max(1, len(paths) // params.illumination.max_fields_per_plate)
        tasks.append([plate, [str(p) for p in paths[::step][: params.illumination.max_fields_per_plate]],
                      str(target), params])
        sizes[plate] = len(paths)
    if tasks and shapes is None:
        shapes = plate_field_shapes(fields[fields["Metadata_Plate"].astype(str).isin(sizes)])
    tasks = [(*task, (shapes or {}).get(task[0])) for task in tasks]
    found: dict[str, dict[str, str]] = {}
    for index, (plate, written, bad) in map_tasks(_estimate_plate, tasks, params.execution,
                                                  progress_bar=progress_bar, desc="illumination", unit="plate"):
        for error in bad.values():
            logger.warning("bad field skipped: %s", error)
        found[plate] = bad
        if not written:
            functions[plate] = None
            if len(tasks[index][1]) < sizes[plate]:
                raise ValueError(f"none of the {len(tasks[index][1])} fields sampled from plate {plate} to estimate "
                                 "its illumination function can be read: " + "; ".join(list(bad.values())[:5]))
    bad_fields = {path: error for plate in sorted(found) for path, error in found[plate].items()}
    return {plate: functions[plate] for plate in plates}, bad_fields


def illumination_table(functions: dict[str, str | None], out_dir: Path) -> pd.DataFrame:
    """One row per plate: the illumination function it was corrected with and whether it was ``published``,
    ``estimated`` (by stage 01, under ``out_dir/illumination/``) or ``none``."""
    estimated = (Path(out_dir) / artifact_name("images", "illumination")).resolve()
    kinds = {plate: "none" if path is None else "estimated" if Path(path).resolve().parent == estimated else "published"
             for plate, path in functions.items()}
    return pd.DataFrame({"function": pd.Series(functions, dtype=object), "kind": pd.Series(kinds)}).rename_axis("plate")


def process_field(image: np.ndarray, illumination: np.ndarray | None,
                  segment: Callable[[np.ndarray, Path | None], np.ndarray], mask_path: Path | None,
                  params: ImagesStageParams, intensity_scale: float | None = None
                  ) -> tuple[dict, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """QC, correct, segment, measure, filter and crop one field (crops scaled by ``intensity_scale`` when given,
    else each by its nucleus's brightest pixel).

    Returns
    -------
    qc
        The field's QC measures and nucleus counts.
    kept, dropped
        Shape measures of the kept nuclei (one per crop) and of the dropped ones (with ``drop_reason``).
    crops
        uint8, len(kept) × crop_size × crop_size.
    """
    qc = field_qc(image, camera_bits=params.qc.bit_depth)
    corrected = corrected_field(image, illumination)
    labels = segment(corrected, mask_path)
    table = measure_nuclei(labels, corrected)
    table["drop_reason"] = filter_nuclei(table, **params.filters.model_dump())
    candidates = table[table["drop_reason"] == ""]
    crops, fits = crop_nuclei(corrected, labels, candidates, size=params.crop_size, scale=intensity_scale)
    table.loc[candidates.index[~fits], "drop_reason"] = TOO_LARGE
    kept = table[table["drop_reason"] == ""].drop(columns="drop_reason")
    qc.update(n_segmented=len(table), n_nuclei=len(kept))
    return qc, kept.reset_index(drop=True), table[table["drop_reason"] != ""].reset_index(drop=True), crops[fits]


def _process_shard(task: ShardTask) -> tuple[str, dict[str, str]]:
    """Process a shard's fields and write its results.

    Returns the shard id and the bad fields it found (path -> :func:`field_error`), not counting
    ``task.known_errors``, which are recorded without reading the files again. The caller logs them:
    a worker's log may not reach the console.
    """
    segment = segmenter(task.params)
    illumination = read_illumination_function(task.illumination) if task.illumination else None
    rows, kept_tables, dropped_tables, crop_blocks = [], [], [], []
    found: dict[str, str] = {}
    for entry in task.fields:
        path, stored = entry["image_path"], entry.get("stored_path", entry["image_path"])
        metadata = {key: value for key, value in entry.items() if key.startswith("Metadata_")}
        error = task.known_errors.get(path)
        if error is None:
            try:
                image = read_field(path, shape=task.shape)
                mask = entry.get("mask_path")
                qc, kept, dropped, crops = process_field(image, illumination, segment,
                                                          Path(mask) if mask else None, task.params,
                                                          task.intensity_scale)
            except Exception as failure:  # noqa: BLE001 - one bad field must not stop a screen
                error = found[path] = field_error(path, failure)
        if error is not None:
            rows.append({**metadata, "image_path": stored, "error": error})
            continue
        rows.append({**metadata, "image_path": stored, "error": "", **qc})
        for table in (kept, dropped):
            for key, value in reversed(metadata.items()):
                table.insert(0, key, value)
            table["image_path"] = stored
        kept_tables.append(kept)
        dropped_tables.append(dropped)
        crop_blocks.append(crops)
    size = task.params.crop_size
    store.write_shard(task.out_dir, task.shard_id,
                      np.concatenate(crop_blocks) if crop_blocks else np.zeros((0, size, size), np.uint8),
                      {"nuclei": _concat(kept_tables), "nuclei_dropped": _concat(dropped_tables),
                       "images": pd.DataFrame(rows)})
    return task.shard_id, found


def plate_intensity_scales(fields: pd.DataFrame, illumination: dict[str, str | None], percentile: float,
                           shapes: dict[str, tuple[int, int] | None] | None = None,
                           known: dict[str, str] | None = None, n_fields: int = SCALE_FIELDS) -> dict[str, float]:
    """Each plate's crop intensity scale: the median over sampled fields of a percentile of their corrected pixels.

    Crops scaled by their own brightest pixel (the reference) all look equally bright, so the CNN cannot see
    DNA content. One scale per plate keeps it: the plate's fields (controls and every perturbation) set it, so
    a perturbation that brightens its nuclei still gives brighter crops. Up to ``n_fields`` fields, evenly
    spaced over the plate's fields in well and site order, are read and corrected by the plate's illumination
    function; the ``percentile`` of each field's pixels is taken and their median is the scale. Unreadable or
    known-bad fields are passed over.

    Raises
    ------
    ValueError
        A plate none of whose sampled fields is readable, or whose scale is not positive (named).
    """
    known = known or {}
    scales = {}
    ordered = fields.sort_values(["Metadata_Plate", "Metadata_Well", "Metadata_Site"], kind="stable")
    for plate, group in ordered.groupby(ordered["Metadata_Plate"].astype(str), sort=True):
        paths = [path for path in group["image_path"] if path not in known]
        picks = np.unique(np.linspace(0, len(paths) - 1, min(n_fields, len(paths))).round().astype(int)
                          ) if paths else []
        function = read_illumination_function(illumination[plate]) if illumination.get(plate) else None
        bad: dict[str, str] = {}
        values = [float(np.percentile(corrected_field(image, function), percentile))
                  for image in _readable_fields([paths[k] for k in picks], (shapes or {}).get(plate), bad)]
        if not values:
            raise ValueError(f"plate {plate}: no readable field to measure its crop intensity scale from")
        scales[plate] = float(np.median(values))
        if not scales[plate] > 0:
            raise ValueError(f"plate {plate}: the {percentile}th percentile of its fields is {scales[plate]}; "
                             "use crop_scaling: nucleus_max for such images")
    return scales


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def shard_fields(fields: pd.DataFrame, shard_size: int) -> list[tuple[str, pd.DataFrame]]:
    """Split the fields into shards of at most ``shard_size`` fields of one plate, in a fixed order."""
    ordered = fields.sort_values(["Metadata_Plate", "Metadata_Well", "Metadata_Site"], kind="stable")
    shards = []
    for plate, group in ordered.groupby(ordered["Metadata_Plate"].astype(str), sort=True):
        for k, start in enumerate(range(0, len(group), shard_size)):
            shards.append((f"{plate}-{k:05d}", group.iloc[start:start + shard_size]))
    return shards


def preprocess_images(fields: pd.DataFrame, out_dir: str | Path, params: ImagesStageParams,
                      progress_bar: bool = True, max_bad_fraction: float | None = None,
                      portable_within: str | Path | None = None,
                      intensity_scales: dict[str, float] | None = None) -> dict:
    """Run stage 01 on a table of fields.

    Bad fields (missing, truncated, corrupt, of another shape than their plate's, or failing later)
    are logged once by name, recorded in ``images.parquet``'s ``error`` column and skipped, whichever
    step meets them first.

    Parameters
    ----------
    fields
        One row per field of view with :data:`FIELD_COLUMNS` (``image_path`` absolute), any other
        ``Metadata_*`` columns to carry into the outputs, and optionally ``mask_path`` (for supplied
        masks) and ``illumination_path`` (for published illumination functions).
    out_dir
        The stage's artifact folder; finished shards found there are not redone.
    params
        The stage's params.
    progress_bar
        Show tqdm bars.
    max_bad_fraction
        The share of bad fields above which the stage stops; None: ``params.max_bad_fraction``
        (``predict`` may pass 1.0 and decide itself).
    portable_within
        The dataset's runs folder: the tables store the ``image_path`` of a field inside it relative to
        ``out_dir`` (:func:`image2reg.layout.portable_path`), so the runs folder can move; None: absolute.
    intensity_scales
        With ``crop_scaling: plate_percentile``, each plate's crop scale given rather than measured
        (``predict`` passes the screen's, as a query plate has no controls); written to ``crop_scales.json``.

    Returns
    -------
    dict
        Counts: fields (processed, outliers left out, failed, flagged), nuclei kept and dropped, seconds.

    Raises
    ------
    image2reg.images.io.TooManyBadFieldsError
        More than ``max_bad_fraction`` of the fields are bad (listed); the tables are written first.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    missing = [column for column in FIELD_COLUMNS if column not in fields]
    if missing:
        raise KeyError(f"the field table lacks column(s) {missing}")
    outliers = outlier_fields(fields, params.qc.outlier_plates, params.qc.outlier_wells).to_numpy(bool)
    kept_fields = fields[~outliers]

    shapes = plate_field_shapes(kept_fields)
    illumination, known = estimate_plate_illumination(kept_fields, out_dir, params, shapes, progress_bar)
    scales: dict[str, float] = {}
    if params.crop_scaling == "plate_percentile":
        scales = intensity_scales if intensity_scales is not None else plate_intensity_scales(
            kept_fields, illumination, params.crop_percentile, shapes, known)
        write_json(scales, out_dir / artifact_name("images", "crop_scales"))
    kept_fields = kept_fields.assign(stored_path=[portable_path(path, out_dir, portable_within)
                                                  for path in kept_fields["image_path"]])
    shards = shard_fields(kept_fields, params.shard_size)
    columns = [c for c in kept_fields.columns
               if c.startswith("Metadata_") or c in ("image_path", "mask_path", "stored_path")]
    pending = []
    for shard_id, group in shards:
        if store.shard_done(out_dir, shard_id):
            continue
        plate = str(group["Metadata_Plate"].iat[0])
        pending.append(ShardTask(shard_id, group[columns].to_dict("records"), illumination[plate], params,
                                 str(out_dir), shapes.get(plate),
                                 {path: known[path] for path in group["image_path"] if path in known},
                                 scales.get(plate)))
    if len(pending) < len(shards):
        logger.info("resuming: %d of %d shards already done", len(shards) - len(pending), len(shards))
    for _, (_, found) in map_tasks(_process_shard, pending, params.execution, progress_bar=progress_bar,
                                   desc="fields", unit="shard"):
        for error in found.values():
            logger.warning("bad field skipped: %s", error)
    n_kept = store.consolidate(out_dir, [shard_id for shard_id, _ in shards], params.crop_size, TABLES)
    images = _flag(out_dir, params)
    bad = images[images["error"] != ""]
    if len(bad):
        logger.warning("%d of %d fields skipped as bad: their errors are in %s", len(bad), len(images),
                       out_dir / artifact_name("images", "images"))
    named = [str(stored_path(path, out_dir)) for path in bad["image_path"]]
    check_bad_fields(dict(zip(named, bad["error"])), len(images),
                     params.max_bad_fraction if max_bad_fraction is None else max_bad_fraction,
                     out_dir / artifact_name("images", "images"))
    dropped = pd.read_parquet(out_dir / artifact_name("images", "nuclei_dropped"), columns=[])
    return {"fields": len(images), "outlier_fields_left_out": int(outliers.sum()),
            "failed_fields": int((images["error"] != "").sum()), "flagged_fields": int((~images["QC_pass"]).sum()),
            "nuclei": n_kept, "nuclei_dropped": len(dropped), "seconds": round(time.perf_counter() - started, 1)}


def _flag(out_dir: Path, params: ImagesStageParams) -> pd.DataFrame:
    """Set the per-plate QC flags on the field table and carry ``QC_pass`` into the nucleus tables."""
    images = pd.read_parquet(out_dir / artifact_name("images", "images"))
    measured = images["error"] == ""
    columns = ("QC_blurry", "QC_saturated", "QC_outlier", "QC_pass")
    for column in columns:
        images[column] = False
    if measured.any():  # when every field is bad there is nothing to flag (and no measure column)
        flagged = flag_fields(images[measured], blur_max_slope=params.qc.blur_max_slope,
                              blur_mad_k=params.qc.blur_mad_k,
                              saturation_max_fraction=params.qc.saturation_max_fraction)
        for column in columns:
            images.loc[measured, column] = flagged[column].to_numpy()
    with atomic_path(out_dir / artifact_name("images", "images")) as tmp:
        images.to_parquet(tmp, index=False)
    passing = images.set_index("image_path")["QC_pass"]
    for name in ("nuclei", "nuclei_dropped"):
        table = pd.read_parquet(out_dir / artifact_name("images", name))
        table["QC_pass"] = table["image_path"].map(passing).astype(bool) if len(table) else pd.Series(dtype=bool)
        with atomic_path(out_dir / artifact_name("images", name)) as tmp:
            table.to_parquet(tmp, index=False)
    return images


def evaluate_segmentation(fields: pd.DataFrame, truth_masks: list[Path], illumination: dict[str, str | None],
                          params: ImagesStageParams, iou_threshold: float = 0.5) -> pd.DataFrame:
    """Segment fields again and score them against ground-truth masks (F1 at an IoU threshold).

    Returns one row per field with ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` and
    ``mean_iou``; sum ``tp``/``fp``/``fn`` for the overall F1.
    """
    segment = segmenter(params)
    functions = {plate: read_illumination_function(path) for plate, path in illumination.items() if path}
    rows = []
    for field, truth_path in zip(fields.itertuples(index=False), truth_masks):
        image = read_field(field.image_path)
        corrected = corrected_field(image, functions.get(str(field.Metadata_Plate)))
        scores = match_labels(tifffile.imread(truth_path), segment(corrected, None), iou_threshold=iou_threshold)
        rows.append({"Metadata_Plate": field.Metadata_Plate, "Metadata_Well": field.Metadata_Well,
                     "Metadata_Site": field.Metadata_Site, **scores})
    return pd.DataFrame(rows)


def overall_f1(scores: pd.DataFrame) -> float:
    """F1 over all objects of all fields (not the mean of per-field F1s)."""
    tp, fp, fn = scores["tp"].sum(), scores["fp"].sum(), scores["fn"].sum()
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def illumination_files(raw: RawLayout, out_dir: Path, params: ImagesStageParams) -> dict[str, str | None]:
    """Plate → the illumination function file stage 01 corrected with (None: no correction).

    For the CNN stages, whose region patches are cut from the corrected fields; ``out_dir`` is the
    stage-01 folder, whose estimated functions exist once stage 01 has run.
    """
    fields = field_inputs(read_image_table(raw), raw, supplied_masks=False)
    return prepare_illumination(fields, Path(out_dir), params, progress_bar=False)
