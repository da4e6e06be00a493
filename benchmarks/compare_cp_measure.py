"""Our classical nucleus features against cp-measure and CellProfiler's own values; our profile
aggregation against pycytominer.

Run from the repository root, in an environment that has the project and the two optional libraries
(they are not dependencies of the project; ``docs/libraries.md`` says how they install)::

    python benchmarks/compare_cp_measure.py [--fields 6] [--run runs/smoke --control EMPTY]

Part 1 (needs ``cp_measure`` and ``../shared/data/real``): real DNA fields that CellProfiler itself
analysed, with its objects and its per-nucleus measurements:

- NF1 Schwann cells (5 fields, 904 × 1224, DAPI): CellProfiler's nucleus masks (binary; one object per
  connected component) and one measured nucleus per field;
- JUMP cpg0000 BR00117006 A01 site 1 (1080 × 1080, Hoechst): CellProfiler's nucleus outlines (turned
  into labels as ``tests/test_real_fields.py`` does) and 5 measured nuclei. CellProfiler measured the
  illumination-corrected field, whose illumination function is not in the fixtures: absolute intensities
  (and the texture, which quantises them) are not comparable there, only shapes and ratios. (NF1's
  intensities in CellProfiler's table are offset too: it measured a preprocessed image.)

Every field is scaled as CellProfiler loads it (÷ 65535 for 16 bits). On CellProfiler's objects each
nucleus is measured by cp-measure (``get_core_measurements``) and by our functions
(:func:`~image2reg.images.nuclei.measure_nuclei`, :func:`~image2reg.images.nuclei.crop_nuclei`, and the
crop features of :func:`~image2reg.profiling.features.nucleus_profiles`). The tables: cp-measure against
CellProfiler, every feature both have (per module: median relative difference, share within 1 % / 5 %);
ours against CellProfiler and against cp-measure for the features that measure the same quantity (or a
close one); seconds per field; and our stage-01 segmenter (``params/jump.yml``) against CellProfiler's
objects. The relative difference of a and b is ``|a - b| / max(|a|, |b|)`` (0 when both are 0).

Part 2 (needs ``pycytominer``): :func:`~image2reg.translation.inputs.profile_table` against
``normalize(method="standardize", samples=control) + aggregate(operation="mean")``,
:func:`~image2reg.profiling.activity.well_profiles` against ``aggregate(strata=plate, well, gene)``,
what ``feature_select`` would drop, and the time of each, on a small seeded table with a missing value,
an infinite value and a constant feature, and on a run's stage-02 profiles when ``--run`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from matplotlib.image import imread
from scipy import ndimage

from image2reg.config import load_params
from image2reg.images.nuclei import crop_nuclei, measure_nuclei
from image2reg.images.pipeline import segmenter
from image2reg.images.segmentation import labels_from_outlines, match_labels
from image2reg.layout import RunLayout
from image2reg.profiling.activity import well_profiles
from image2reg.profiling.features import _crop_features
from image2reg.translation.inputs import profile_table

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
CYTOTABLE = REAL / "cytodataframe" / "tests" / "data" / "cytotable"
NF1 = CYTOTABLE / "NF1_cellpainting_data_shrunken"
JUMP = CYTOTABLE / "JUMP_plate_BR00117006"
SCALE = 65535.0  # CellProfiler's scaling of a 16-bit image to [0, 1]
CROP_SIZE = 64

#: Our feature → CellProfiler feature (without ``Nuclei_`` and the channel) measuring the same quantity.
SAME = {
    "area": "AreaShape_Area",
    "bbox_area": "AreaShape_BoundingBoxArea",
    "solidity": "AreaShape_Solidity",
    "eccentricity": "AreaShape_Eccentricity",
    "aspect_ratio": "AreaShape_MinorAxisLength / AreaShape_MajorAxisLength",
    "mean_intensity": "Intensity_MeanIntensity",
    "integrated_intensity": "Intensity_IntegratedIntensity",
}
#: Our crop feature → the closest CellProfiler feature (a proxy: different masks, scaling, levels or bins).
CLOSE = {
    "intensity_crop_mean": "Intensity_MeanIntensity / Intensity_MaxIntensity",
    "intensity_crop_std": "Intensity_StdIntensity / Intensity_MaxIntensity",
    "intensity_crop_p50": "Intensity_MedianIntensity / Intensity_MaxIntensity",
    "texture_correlation_d3": "Texture_Correlation_3 (mean of 4 angles)",
    "texture_contrast_d3": "Texture_Contrast_3 (mean of 4 angles)",
    "texture_homogeneity_d3": "Texture_InverseDifferenceMoment_3 (mean of 4 angles)",
    "texture_energy_d3^2": "Texture_AngularSecondMoment_3 (mean of 4 angles)",
    **{f"radial_ring{k}": f"RadialDistribution_MeanFrac_{k + 1}of4" for k in range(4)},
}
#: cp-measure's core functions used for the comparison, then the rest of its core set (timed only).
COMPARED = ("sizeshape", "intensity", "texture", "radial_distribution")


# ---------------------------------------------------------------------------------------------- fields


def real_fields(limit: int) -> list[dict]:
    """The fields: name, image (float64, CellProfiler's scale), CellProfiler's labels, table rows, channel."""
    fields = []
    table = pd.read_parquet(NF1 / "Plate_2_with_image_data_shrunken.parquet")
    for name, rows in table.groupby("Image_FileName_DAPI", sort=True):
        image = tifffile.imread(NF1 / "Plate_2_images" / name).astype(np.float64) / SCALE
        mask = tifffile.imread(NF1 / "Plate_2_masks" / name.replace(".tif", "_MaskNuclei.tiff")) > 0
        labels, _ = ndimage.label(mask)
        fields.append({"dataset": "NF1", "name": name, "image": image, "labels": labels.astype(np.int32),
                       "cp": rows, "channel": "DAPI", "cp_count": int(rows["Image_Count_Nuclei"].iloc[0])})
    jump = pd.read_parquet(JUMP / "BR00117006_shrunken.parquet")
    image = tifffile.imread(JUMP / "images" / "orig" / "r01c01f01p01-ch5sk1fk1fl1.tiff").astype(np.float64) / SCALE
    outlines = imread(JUMP / "images" / "outlines" / "r01c01f01p01-ch5sk1fk1fl1_nuclei_outlines.png")
    fields.append({"dataset": "JUMP", "name": "BR00117006 A01 s1", "image": image,
                   "labels": labels_from_outlines(outlines).astype(np.int32), "cp": jump, "channel": "DNA",
                   "cp_count": int(jump["Image_Count_Nuclei"].dropna().iloc[0])})
    # JUMP first when fewer fields are asked for: it is the only field of its kind
    return ([fields[-1]] + fields[:-1])[:limit]


def _optional(module: str):
    """Import one of the compared libraries: optional, not dependencies of the project (docs/libraries.md)."""
    return importlib.import_module(module)


def cp_column(key: str, channel: str) -> str:
    """CellProfiler's column for a cp-measure feature name, e.g. ``Texture_Contrast_3_00_256`` ->
    ``Nuclei_Texture_Contrast_DNA_3_00_256``."""
    parts = key.split("_")
    if parts[0] in ("Intensity", "Location"):
        return f"Nuclei_{key}_{channel}"
    if parts[0] == "RadialDistribution":
        return "_".join(["Nuclei", *parts[:2], channel, *parts[2:]])
    if parts[0] == "Granularity":
        return f"Nuclei_{key}_{channel}"
    if parts[0] in ("AngularSecondMoment", "Contrast", "Correlation", "Variance", "InverseDifferenceMoment",
                    "SumAverage", "SumVariance", "SumEntropy", "Entropy", "DifferenceVariance",
                    "DifferenceEntropy", "InfoMeas1", "InfoMeas2"):
        return "_".join(["Nuclei_Texture", parts[0], channel, *parts[1:]])
    return f"Nuclei_AreaShape_{key}"


def module_of(key: str) -> str:
    head = key.split("_")[0]
    if head == "RadialDistribution":
        return "radial Zernike" if "Zernike" in key else "radial distribution"
    if head in ("Intensity", "Location", "Granularity"):
        return head.lower()
    if head == "Zernike" or key in ("MinFeretDiameter", "MaxFeretDiameter"):
        return "shape (Zernike, Feret)"
    if key.split("_")[-1] == "256":
        return "texture"
    return "size/shape"


def relative_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale == 0, 0.0, np.abs(a - b) / scale)


# ------------------------------------------------------------------------------------------ measuring


def measure_cp(labels: np.ndarray, image: np.ndarray, repeats: int = 1) -> tuple[pd.DataFrame, dict[str, float]]:
    """cp-measure's core features of every label (rows = labels 1..n) and the CPU seconds of each function
    (the least of ``repeats`` runs: the machine may be shared)."""
    bulk = _optional("cp_measure.bulk")
    columns, seconds = {}, {}
    for name, function in bulk.get_core_measurements().items():
        seconds[name] = np.inf
        for _ in range(repeats):
            start = time.process_time()
            values = function(labels, image)
            seconds[name] = min(seconds[name], time.process_time() - start)
        columns.update(values)
    table = pd.DataFrame({key: np.asarray(value, np.float64) for key, value in columns.items()})
    table.index = np.arange(1, len(table) + 1)
    return table, seconds


def measure_ours(labels: np.ndarray, image: np.ndarray, repeats: int = 1) -> tuple[pd.DataFrame, float]:
    """Our stage-01 table and stage-02 crop features of every label (rows = labels), and the CPU seconds
    (the least of ``repeats`` runs)."""
    seconds = np.inf
    for _ in range(repeats):
        start = time.process_time()
        table = measure_nuclei(labels, image.astype(np.float32))
        crops, fits = crop_nuclei(image.astype(np.float32), labels, table, size=CROP_SIZE)
        features = _crop_features(crops[fits])  # the crop part of nucleus_profiles
        features.index = table.index[fits]
        seconds = min(seconds, time.process_time() - start)
    table = table.join(features).set_index("label")
    table["texture_energy_d3^2"] = table["texture_energy_d3"] ** 2
    # share of the nucleus's pixels inside the crop's Otsu foreground mask (the crop features' pixels)
    table["mask_coverage"] = table["intensity_foreground_fraction"] * CROP_SIZE**2 / table["area"]
    table["fits_crop"] = fits
    return table, seconds


def _bare(name: str) -> str:
    """A CellProfiler feature of :data:`SAME` / :data:`CLOSE` -> cp-measure's name for it."""
    return name.removeprefix("AreaShape_")


def cp_table_values(rows: pd.DataFrame, channel: str) -> pd.DataFrame:
    """CellProfiler's own rows with cp-measure's feature names (for :func:`cp_proxy`)."""
    out = {}
    for expression in {**SAME, **CLOSE}.values():
        parts = expression.replace(" (mean of 4 angles)", "").split(" / ")
        for part in parts:
            key = _bare(part)
            if part.startswith("Texture_"):
                stem, scale = key.removeprefix("Texture_").rsplit("_", 1)
                for d in range(4):
                    name = f"{stem}_{scale}_{d:02d}_256"
                    out[name] = rows[cp_column(name, channel)].to_numpy(np.float64)
            else:
                out[key] = rows[cp_column(key, channel)].to_numpy(np.float64)
    return pd.DataFrame(out, index=rows.index)


def _proxy_values(table: pd.DataFrame, expression: str) -> np.ndarray:
    if " (mean of 4 angles)" in expression:
        stem, scale = expression.split(" ")[0].removeprefix("Texture_").rsplit("_", 1)
        return np.mean([table[f"{stem}_{scale}_{d:02d}_256"].to_numpy(np.float64) for d in range(4)], axis=0)
    if " / " in expression:
        top, bottom = expression.split(" / ")
        return table[_bare(top)].to_numpy(np.float64) / table[_bare(bottom)].to_numpy(np.float64)
    return table[_bare(expression)].to_numpy(np.float64)


def nearest_label(measured: pd.DataFrame, x: float, y: float) -> int:
    """The label whose centroid is nearest to CellProfiler's centre (x, y)."""
    distance = np.hypot(measured["centroid_x"] - x, measured["centroid_y"] - y)
    return int(distance.idxmin())


# ------------------------------------------------------------------------------------------ part 1


def part_cp_measure(n_fields: int, repeats: int) -> None:
    if importlib.util.find_spec("cp_measure") is None:
        print("part 1 skipped: cp_measure is not installed (pip install cp-measure; see docs/libraries.md)")
        return
    if not NF1.is_dir() or not JUMP.is_dir():
        print(f"part 1 skipped: the real fields are not in {CYTOTABLE} (../shared is not distributed)")
        return
    print(f"# Part 1: cp-measure {version('cp_measure')} against CellProfiler and against ours\n")
    params = load_params(ROOT / "params" / "jump.yml").stages.images
    segment = segmenter(params)
    cp_vs_cellprofiler, ours_vs_cellprofiler, pooled, timings, seg_rows = [], [], [], [], []
    for field in real_fields(n_fields):
        image, labels, channel = field["image"], field["labels"], field["channel"]
        ours, ours_s = measure_ours(labels, image, repeats)
        cpm, cpm_s = measure_cp(labels, image, repeats)
        start = time.process_time()
        our_labels = segment(image.astype(np.float32), None)
        seg_s = time.process_time() - start
        scores = match_labels(labels, our_labels, iou_threshold=0.5)
        seg_rows.append({"dataset": field["dataset"], "field": field["name"], "CellProfiler nuclei": field["cp_count"],
                         "CP objects here": int(labels.max()), "ours": int(our_labels.max()),
                         "F1@0.5": scores["f1"], "mean IoU": scores.get("mean_iou", np.nan), "s": seg_s})
        timings.append({"dataset": field["dataset"], "field": field["name"], "nuclei": int(labels.max()),
                        "ours (table + crops + crop features)": ours_s,
                        "cp-measure compared set": sum(cpm_s[k] for k in COMPARED),
                        **{f"cp-measure {k}": v for k, v in cpm_s.items()},
                        "cp-measure all core": sum(cpm_s.values())})
        # every nucleus of the field: ours against cp-measure
        both = ours.join(cpm, how="inner")
        both["dataset"] = field["dataset"]
        pooled.append(both)
        # CellProfiler's measured nuclei
        for _, row in field["cp"].iterrows():
            label = nearest_label(ours, row["Nuclei_AreaShape_Center_X"], row["Nuclei_AreaShape_Center_Y"])
            for key in cpm.columns:
                column = cp_column(key, channel)
                if column in row.index and pd.notna(row[column]):
                    cp_vs_cellprofiler.append({"dataset": field["dataset"], "module": module_of(key), "feature": key,
                                               "cp-measure": cpm.at[label, key], "CellProfiler": float(row[column])})
            cp_rows = cp_table_values(row.to_frame().T, channel)
            for ours_name, expression in {**SAME, **CLOSE}.items():
                ours_vs_cellprofiler.append({"dataset": field["dataset"], "ours": ours_name, "CellProfiler": expression,
                                             "ours value": ours.at[label, ours_name],
                                             "cp-measure value": _proxy_values(cpm.loc[[label]], expression)[0],
                                             "CellProfiler value": _proxy_values(cp_rows, expression)[0]})

    float_format = lambda value: f"{value:.3g}"  # noqa: E731
    cvc = pd.DataFrame(cp_vs_cellprofiler)
    cvc["rel"] = relative_difference(cvc["cp-measure"], cvc["CellProfiler"])
    summary = cvc.groupby(["dataset", "module"]).agg(
        features=("feature", "nunique"), values=("rel", "size"), median_rel=("rel", "median"),
        within_1pct=("rel", lambda r: (r <= 0.01).mean()), within_5pct=("rel", lambda r: (r <= 0.05).mean()))
    print("## cp-measure against CellProfiler's own values (same objects, same nuclei)\n")
    print(summary.to_string(float_format=float_format))
    worst = (cvc.groupby(["dataset", "feature"])["rel"].median().sort_values(ascending=False).head(15))
    print("\nlargest median relative differences:\n" + worst.to_string(float_format=float_format))
    detail = cvc[cvc["module"].isin(["intensity", "radial distribution"])]
    detail = detail.groupby(["feature", "dataset"])["rel"].median().unstack("dataset")
    print("\nintensity and radial distribution, median relative difference per feature:\n"
          + detail.to_string(float_format=float_format))
    haralick = cvc[cvc["module"] == "texture"].assign(name=lambda t: t["feature"].str.split("_").str[0])
    haralick = haralick.groupby(["name", "dataset"])["rel"].median().unstack("dataset")
    print("\ntexture (scale 3, 4 angles), median relative difference per Haralick feature:\n"
          + haralick.to_string(float_format=float_format))

    ovc = pd.DataFrame(ours_vs_cellprofiler)
    ovc["ours rel"] = relative_difference(ovc["ours value"], ovc["CellProfiler value"])
    ovc["cp-measure rel"] = relative_difference(ovc["cp-measure value"], ovc["CellProfiler value"])
    table = ovc.groupby(["ours", "CellProfiler", "dataset"], sort=False).agg(
        n=("ours rel", "count"), ours_median_rel=("ours rel", "median"),
        cp_measure_median_rel=("cp-measure rel", "median"),
        r_ours=("ours value", lambda s: _pearson(s, ovc.loc[s.index, "CellProfiler value"])))
    print("\n## Ours and cp-measure against CellProfiler, on CellProfiler's measured nuclei\n")
    print(table.to_string(float_format=float_format))

    pooled_table = pd.concat(pooled)
    coverage = pooled_table.groupby("dataset")["mask_coverage"].describe(percentiles=[0.1, 0.5, 0.9])
    print("\n## Share of each nucleus's pixels in our crop's Otsu mask (nuclei that fit 64 × 64)\n")
    print(coverage.to_string(float_format=float_format))
    rows = []
    for ours_name, expression in {**SAME, **CLOSE}.items():
        for dataset, group in [("all", pooled_table), *pooled_table.groupby("dataset")]:
            a, b = group[ours_name].to_numpy(np.float64), _proxy_values(group, expression)
            ok = np.isfinite(a) & np.isfinite(b)
            rows.append({"ours": ours_name, "cp-measure": expression, "dataset": dataset, "n": int(ok.sum()),
                         "pearson": _pearson(a[ok], b[ok]), "spearman": _spearman(a[ok], b[ok]),
                         "median_rel": float(np.median(relative_difference(a[ok], b[ok]))) if ok.any() else np.nan})
    print("\n## Ours against cp-measure, every nucleus of the fields (crop features: nuclei that fit 64 × 64)\n")
    print(pd.DataFrame(rows).to_string(index=False, float_format=float_format))

    times = pd.DataFrame(timings)
    print(f"\n## CPU seconds per field (process time, least of {repeats} runs)\n")
    print(times.to_string(index=False, float_format=lambda value: f"{value:.2f}"))
    numeric = times.drop(columns=["dataset", "field"])
    per_nucleus = numeric.drop(columns="nuclei").sum() / numeric["nuclei"].sum() * 1000
    print("\nCPU milliseconds per nucleus, all fields:\n" + per_nucleus.to_string(float_format=lambda v: f"{v:.1f}"))

    print("\n## Our stage-01 segmenter (params/jump.yml, no illumination correction) against CellProfiler's objects\n")
    print(pd.DataFrame(seg_rows).to_string(index=False, float_format=lambda value: f"{value:.2f}"))


def _pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a, b) -> float:
    return _pearson(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())


# ------------------------------------------------------------------------------------------ part 2


def small_table(seed: int = 0, missing: bool = True, infinite: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded nuclei × features with plate, well and gene, a feature constant in the control, and optionally
    one NaN and one +inf."""
    rng = np.random.default_rng(seed)
    genes = np.repeat(["EMPTY", "GENE1", "GENE2", "GENE3"], [40, 20, 20, 20])
    obs = pd.DataFrame({"Metadata_Plate": np.where(np.arange(len(genes)) % 2, "P1", "P2"),
                        "Metadata_Well": [f"{g}-w{k % 3}" for k, g in enumerate(genes)], "Metadata_Gene": genes})
    profiles = pd.DataFrame(rng.normal(size=(len(genes), 6)) * [1, 2, 3, 4, 5, 6] + [0, 1, 2, 3, 4, 5],
                            columns=[f"f{k}" for k in range(6)])
    profiles["constant_in_control"] = np.where(genes == "EMPTY", 1.0, rng.normal(size=len(genes)))
    if missing:
        profiles.loc[50, "f1"] = np.nan
    if infinite:
        profiles.loc[70, "f2"] = np.inf
    return profiles, obs


def run_table(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage-02 profiles and stage-01 metadata of a run folder (``runs/<dataset>``)."""
    layout = RunLayout(run.name, runs_dir=run.parent)
    profiles = pd.read_parquet(layout.artifact("screen", "profiles"))
    obs = pd.read_parquet(layout.artifact("images", "nuclei"), columns=["Metadata_Plate", "Metadata_Well",
                                                                         "Metadata_Gene"]).loc[profiles.index]
    return profiles, obs


def _differences(theirs: np.ndarray, ours: np.ndarray) -> str:
    """Max |difference| and the cells beyond float32 rounding (rtol 1e-5, atol 1e-6) and beyond 1e-12."""
    theirs, ours = np.asarray(theirs, np.float64), np.asarray(ours, np.float64)
    with np.errstate(invalid="ignore"):
        gap = np.abs(theirs - ours)
    beyond32 = ~np.isclose(theirs, ours, rtol=1e-5, atol=1e-6, equal_nan=True)
    exact = ~np.isclose(theirs, ours, rtol=0, atol=1e-12, equal_nan=True)
    return (f"max |diff| {np.nanmax(gap) if np.isfinite(gap).any() else np.nan:.3g}; cells differing: "
            f"{int(exact.sum())} of {gap.size} beyond 1e-12, {int(beyond32.sum())} beyond float32 rounding")


def compare_pycytominer(name: str, profiles: pd.DataFrame, obs: pd.DataFrame, control: str) -> dict[str, str]:
    """pycytominer's normalize + aggregate, aggregate per well and feature_select against ours, on one table."""
    pycytominer = _optional("pycytominer")
    aggregate, feature_select, normalize = pycytominer.aggregate, pycytominer.feature_select, pycytominer.normalize

    features = list(profiles.columns)
    frame = pd.concat([obs.reset_index(drop=True), profiles.reset_index(drop=True)], axis=1)
    values = profiles.to_numpy(np.float64)
    normalized = None
    row = {"nuclei × features": f"{len(profiles)} × {len(features)} ({profiles.dtypes.iloc[0]})",
           "non-finite values": f"{int(np.isnan(values).sum())} NaN, {int(np.isinf(values).sum())} inf"}

    start = time.process_time()
    ours = profile_table(profiles, obs["Metadata_Gene"], control)
    ours_s = time.process_time() - start
    try:
        start = time.process_time()
        normalized = normalize(frame, features=features, meta_features=list(obs.columns),
                               samples=f"Metadata_Gene == '{control}'", method="standardize")
        theirs = aggregate(normalized, strata=["Metadata_Gene"], features=features, operation="mean")
        theirs_s = time.process_time() - start
        theirs = theirs.set_index("Metadata_Gene").sort_index()[ours.columns]
        row["profile_table vs normalize+aggregate"] = _differences(theirs.to_numpy(), ours.to_numpy())
    except Exception as error:  # noqa: BLE001  (the library's answer is the result)
        theirs_s = np.nan
        row["profile_table vs normalize+aggregate"] = f"pycytominer raised {type(error).__name__}: {error}"
    row["CPU s: profile_table | normalize+aggregate"] = f"{ours_s:.3f} | {theirs_s:.3f}"

    start = time.process_time()
    means, meta = well_profiles(profiles, obs.reset_index(drop=True))  # as the stages call it: their dtype
    ours_s = time.process_time() - start
    frame["Metadata_ObjectNumber"] = np.arange(len(frame))
    start = time.process_time()
    wells = aggregate(frame, strata=["Metadata_Plate", "Metadata_Well", "Metadata_Gene"], features=features,
                      operation="mean", compute_object_count=True)
    theirs_s = time.process_time() - start
    counts = (wells["Metadata_Object_Count"].to_numpy() == meta["n_nuclei"].to_numpy()).all()
    row["well_profiles vs aggregate(plate, well, gene)"] = (f"{len(meta)} wells; "
                                                            f"{_differences(wells[features].to_numpy(), means)}; "
                                                            f"counts equal: {bool(counts)}")
    row["CPU s: well_profiles | aggregate"] = f"{ours_s:.3f} | {theirs_s:.3f}"

    # feature selection works on normalised profiles; where normalize failed, on the raw ones (inf -> NaN)
    finite = frame.drop(columns="Metadata_ObjectNumber").replace([np.inf, -np.inf], np.nan)
    finite = normalized if normalized is not None else finite
    row["feature_select input"] = "normalised nuclei" if normalized is not None else "raw nuclei (inf -> NaN)"
    for operation in ("variance_threshold", "correlation_threshold", "drop_na_columns", "drop_outliers"):
        try:
            selected = feature_select(finite, features=features, samples="all", operation=operation)
            dropped = [f for f in features if f not in selected.columns]
            listed = f": {', '.join(dropped)}" if dropped else ""
            row[f"feature_select {operation} drops"] = f"{len(dropped)}{listed}"
        except Exception as error:  # noqa: BLE001
            row[f"feature_select {operation} drops"] = f"raised {type(error).__name__}: {error}"
    print(f"\n## {name}\n")
    width = max(map(len, row))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in row.items()))
    return row


def part_pycytominer(run: Path | None, control: str, timing_rows: int) -> None:
    if importlib.util.find_spec("pycytominer") is None:
        print("part 2 skipped: pycytominer is not installed (pip install pycytominer; see docs/libraries.md)")
        return
    print(f"\n# Part 2: pycytominer {version('pycytominer')} against profile_table and well_profiles")
    compare_pycytominer("seeded table, all finite", *small_table(missing=False), "EMPTY")
    compare_pycytominer("seeded table, one NaN", *small_table(missing=True), "EMPTY")
    compare_pycytominer("seeded table, one NaN and one +inf", *small_table(missing=True, infinite=True), "EMPTY")
    if run is not None:
        compare_pycytominer(f"stage-02 profiles of {run}", *run_table(run), control)
    rng = np.random.default_rng(1)
    n = timing_rows
    obs = pd.DataFrame({"Metadata_Plate": rng.choice(["P1", "P2", "P3"], n),
                        "Metadata_Well": rng.integers(0, 96, n).astype(str)})
    obs["Metadata_Gene"] = "G" + (obs["Metadata_Well"].astype(int) % 48).astype(str)
    obs.loc[obs["Metadata_Gene"] == "G0", "Metadata_Gene"] = "EMPTY"
    big = pd.DataFrame(rng.normal(size=(n, 38)).astype(np.float32), columns=[f"x{k}" for k in range(38)])
    compare_pycytominer(f"timing: seeded {n} nuclei × 38 float32 features, 48 conditions, 288 wells", big, obs,
                        "EMPTY")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=6, help="real fields to measure (6: all; JUMP first)")
    parser.add_argument("--run", type=Path, default=None, help="a run folder (runs/<dataset>) for part 2")
    parser.add_argument("--control", default="EMPTY", help="the control condition of --run")
    parser.add_argument("--timing-rows", type=int, default=200_000, help="nuclei of part 2's timing table")
    parser.add_argument("--repeats", type=int, default=3, help="timings: the least CPU time of this many runs")
    parser.add_argument("--part", choices=["all", "cp-measure", "pycytominer"], default="all")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    if args.part in ("all", "cp-measure"):
        part_cp_measure(args.fields, args.repeats)
    if args.part in ("all", "pycytominer"):
        part_pycytominer(args.run, args.control, args.timing_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
