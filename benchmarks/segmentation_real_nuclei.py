"""Benchmark of the classical nuclear segmenter on real and synthetic nuclei.

Run from the repository root::

    python benchmarks/segmentation_real_nuclei.py [--plates 1] [--sites 2]

Real nuclei: the DSB2018 field in ``tests/fixtures/real_nuclei`` (125 annotated nuclei; source and
license in its README). It is segmented whole, each half on its own (the segmenter's constants were
chosen with the whole field in view, so the halves are a weak check of stability, not a held-out
set), and with a strong illumination gradient. Synthetic nuclei: a demo world (``params/demo.yml``,
fewer plates and sites for speed), its in-focus, unsaturated fields divided by the true
illumination, scored against the true masks.

Each row gives F1 at IoU 0.5, precision, recall, mean IoU of the matches and seconds per megapixel,
for a plain baseline (Gaussian, Otsu, fill holes, distance-transform watershed with the same marker
spacing and minimum area as the segmenter) and for :func:`segment_nuclei`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from skimage import feature, filters, segmentation

from image2reg.config import load_params
from image2reg.data.synthetic import synthesize_world
from image2reg.images.segmentation import match_labels, pool_matches, segment_nuclei
from image2reg.layout import RawLayout

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "real_nuclei"
REAL_DIAMETER = 24.0  # px: equivalent diameter of the median annotated nucleus (area 440 px)


def otsu_watershed_baseline(image: np.ndarray, nucleus_diameter: float) -> np.ndarray:
    """Plain baseline: Gaussian (σ 1), Otsu, holes filled, small objects removed, distance watershed."""
    smoothed = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    mask = ndimage.binary_fill_holes(smoothed > filters.threshold_otsu(smoothed))
    components, _ = ndimage.label(mask)
    mask &= (np.bincount(components.ravel()) >= int(0.1 * np.pi * nucleus_diameter**2 / 4))[components]
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), 1.0)
    peaks = feature.peak_local_max(distance, min_distance=round(0.3 * nucleus_diameter),
                                   labels=ndimage.label(mask)[0], exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return segmentation.watershed(-distance, markers, mask=mask)


def methods(nucleus_diameter: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    return {
        "baseline: Otsu + distance watershed": lambda image: otsu_watershed_baseline(image, nucleus_diameter),
        "segment_nuclei (otsu)": lambda image: segment_nuclei(image, nucleus_diameter=nucleus_diameter),
        "segment_nuclei (local)": lambda image: segment_nuclei(image, nucleus_diameter=nucleus_diameter,
                                                               threshold="local"),
    }


def score(cases: list[tuple[str, np.ndarray, np.ndarray]], nucleus_diameter: float) -> pd.DataFrame:
    """One row per (case, method): object-level scores and seconds per megapixel."""
    rows = []
    for method, segment in methods(nucleus_diameter).items():
        segment(cases[0][1])  # warm-up: imports and caches are not what the timing should show
        for case, image, truth in cases:
            start = time.perf_counter()
            labels = segment(image)
            seconds = time.perf_counter() - start
            rows.append({"image": case, "method": method, **match_labels(truth, labels),
                         "s_per_mpx": seconds / (image.size / 1e6)})
    return pd.DataFrame(rows)


def real_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    image = tifffile.imread(FIXTURE / "dsb2018_image.tif")
    truth = tifffile.imread(FIXTURE / "dsb2018_labels.tif")
    half = image.shape[1] // 2
    rows, cols = np.mgrid[0:image.shape[0], 0:image.shape[1]] / image.shape[0]
    vignetting = 1 - 0.5 * ((rows - 0.3) ** 2 + (cols - 0.7) ** 2) / 0.98  # off-centre, down to 0.5
    uneven = np.round(image * vignetting * 50 + 300).astype(np.uint16)
    return [("field", image, truth), ("left half alone", image[:, :half], truth[:, :half]),
            ("right half alone", image[:, half:], truth[:, half:]),
            ("field × vignetting (uint16 ×50 + 300)", uneven, truth)]


def synthetic_cases(plates: int, sites: int, folder: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], float]:
    """In-focus, unsaturated fields of a demo world divided by the true illumination, and the diameter."""
    params = load_params(ROOT / "params" / "demo.yml")
    world = params.stage("data").synthetic
    screen = world.screen.model_copy(update={"n_plates": plates, "sites_per_well": sites})
    raw = RawLayout(folder / "raw")
    synthesize_world(world.model_copy(update={"screen": screen}), raw, params.seed, progress_bar=False)
    metadata = pd.read_csv(raw.image_metadata)
    fine = metadata[(metadata["Image_Metadata_QCFlag_isBlurry"] == 0)
                    & (metadata["Image_Metadata_QCFlag_isSaturated"] == 0)]
    cases = []
    for plate, fields in fine.groupby("Image_Metadata_Plate"):
        illumination = tifffile.imread(raw.truth / "illumination" / f"{plate}.tif")
        for name in fields["Image_FileName_OrigHoechst"]:
            image = tifffile.imread(raw.images / str(plate) / name).astype(np.float32) / illumination
            cases.append((f"plate {plate}", image, tifffile.imread(raw.masks / str(plate) / name)))
    return cases, 2.0 * screen.nucleus_radius


def pooled_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per image group and method: scores pooled over fields, and the mean seconds per megapixel."""
    rows = []
    for (image, method), group in scores.groupby(["image", "method"], sort=False):
        rows.append({"image": image, "method": method, "fields": len(group),
                     **pool_matches(group.to_dict("records")), "s_per_mpx": group["s_per_mpx"].mean()})
    return pd.DataFrame(rows)


def show(table: pd.DataFrame, title: str) -> None:
    columns = [c for c in ("image", "method", "fields", "n_true", "n_pred", "tp", "precision", "recall", "f1",
                           "mean_iou", "s_per_mpx") if c in table.columns]
    print(f"\n## {title}\n")
    print(table[columns].to_string(index=False, float_format=lambda value: f"{value:.3f}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=1, help="plates of the synthetic world (demo: 2)")
    parser.add_argument("--sites", type=int, default=2, help="sites per well of the synthetic world (demo: 4)")
    args = parser.parse_args(argv)

    if (FIXTURE / "dsb2018_image.tif").is_file():
        show(score(real_cases(), REAL_DIAMETER), f"Real nuclei: DSB2018 field, nucleus diameter {REAL_DIAMETER:g} px")
    else:
        print(f"real-nuclei fixture not found in {FIXTURE}; skipped")

    with tempfile.TemporaryDirectory() as folder:
        cases, diameter = synthetic_cases(args.plates, args.sites, Path(folder))
    scores = score(cases, diameter)
    table = pooled_table(scores)
    if scores["image"].nunique() > 1:
        table = pd.concat([table, pooled_table(scores.assign(image="all fields"))], ignore_index=True)
    show(table,
         f"Synthetic demo world ({args.plates} plate(s), {args.sites} site(s) per well; in-focus, unsaturated "
         f"fields ÷ true illumination), nucleus diameter {diameter:g} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
