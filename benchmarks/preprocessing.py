"""Stage-01 throughput and crop-store access speed, printed as ratios against baselines measured here.

Run: ``python benchmarks/preprocessing.py [--fields 24] [--crops 20000]``

1. Fields per second per core for segmentation + filters + crops (``process_field``) on 1080×1080
   16-bit synthetic fields with about 70 nuclei each (the Rohban field size and density), single
   process; and the same through ``preprocess_images`` with a process pool over all cores.
2. A CNN data loader drawing random batches of 64 crops for one epoch: from one TIFF file per nucleus
   (the naive baseline), from the zarr store read crop by crop, and from the zarr store read once in
   chunks and then sampled in memory (what the image2reg loader does).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from image2reg.config import load_params
from image2reg.data import synthetic
from image2reg.execute import ExecutionParams, default_workers
from image2reg.images import pipeline, store
from image2reg.images.segmentation import make_segmenter

ROOT = Path(__file__).resolve().parents[1]
FIELD_SIZE = 1080
NUCLEI_PER_FIELD = 70


def make_fields(folder: Path, n: int) -> pd.DataFrame:
    """Rohban-sized synthetic fields (1080², ~70 nuclei of ~40 px diameter) written as TIFFs."""
    params = load_params(ROOT / "params" / "demo.yml").stage("data").synthetic.screen
    params = params.model_copy(update={"field_size": FIELD_SIZE, "nucleus_radius": 20.0, "touching_fraction": 0.1})
    rng = np.random.default_rng(0)
    illumination = synthetic.illumination_field(FIELD_SIZE, params.illumination_strength, rng)
    rows = []
    for k in range(n):
        phenotypes = rng.standard_normal((rng.poisson(NUCLEI_PER_FIELD), len(synthetic.PHENOTYPES)))
        image, _, _ = synthetic.render_field(phenotypes, params, illumination, False, False, rng)
        path = folder / f"field_{k:03d}.tif"
        tifffile.imwrite(path, image)
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"a{k + 1:02d}", "Metadata_Site": 1,
                     "Metadata_Gene": "EMPTY", "image_path": str(path)})
    return pd.DataFrame(rows)


def field_throughput(fields: pd.DataFrame, folder: Path) -> None:
    params = load_params(ROOT / "params" / "rohban.yml").stage("images")
    segment = make_segmenter("classical", nucleus_diameter=params.segmentation.nucleus_diameter)
    images = [tifffile.imread(path) for path in fields["image_path"]]
    pipeline.process_field(images[0], None, segment, None, params)  # warm-up (imports, caches)
    started = time.perf_counter()
    kept = sum(len(pipeline.process_field(image, None, segment, None, params)[1]) for image in images)
    single = len(images) / (time.perf_counter() - started)
    print(f"process_field, 1 core: {single:.2f} fields/s ({kept / len(images):.0f} nuclei kept per field)")

    workers = default_workers()
    pooled = params.model_copy(update={"execution": ExecutionParams(backend="processes", workers=workers),
                                       "illumination": params.illumination.model_copy(update={"method": "none"}),
                                       "qc": params.qc.model_copy(update={"outlier_plates": [], "outlier_wells": []}),
                                       "shard_size": 4})
    started = time.perf_counter()
    pipeline.preprocess_images(fields, folder / "out", pooled, progress_bar=False)
    rate = len(fields) / (time.perf_counter() - started)
    print(f"preprocess_images, {workers} processes: {rate:.2f} fields/s = {rate / workers:.2f} fields/s/core "
          f"(incl. process start-up, QC, writing the store); projected 17,262 Rohban fields: "
          f"{17262 / rate / 3600:.1f} h on {workers} cores, {17262 / (single * 32) / 60:.0f} min on 32 cores")


def crop_access(folder: Path, n: int, batch: int = 64) -> None:
    rng = np.random.default_rng(0)
    crops = np.zeros((n, 64, 64), np.uint8)
    yy, xx = np.mgrid[-32:32, -32:32]
    for k in range(n):  # disc-like nuclei with texture: compresses like real crops
        radius = rng.uniform(12, 24)
        crops[k] = np.where(yy**2 + xx**2 < radius**2, rng.integers(1, 256, (64, 64)), 0)
    tiffs = folder / "tiffs"
    tiffs.mkdir()
    for k in range(n):
        tifffile.imwrite(tiffs / f"{k}.tif", crops[k])
    store.write_shard(folder, "all", crops, {"nuclei": pd.DataFrame({"k": np.arange(n)})})
    store.consolidate(folder, ["all"], 64, ["nuclei"])
    order = rng.permutation(n)
    batches = [order[i:i + batch] for i in range(0, n, batch)]

    started = time.perf_counter()
    for indices in batches:
        np.stack([tifffile.imread(tiffs / f"{k}.tif") for k in indices])
    baseline = time.perf_counter() - started

    array = store.open_crops(folder)
    started = time.perf_counter()
    for indices in batches:
        store.read_crops(array, indices)
    direct = time.perf_counter() - started

    started = time.perf_counter()
    in_memory = array[:]
    for indices in batches:
        in_memory[indices]
    loaded = time.perf_counter() - started

    print(f"one epoch of {n} crops in random batches of {batch} (warm page cache, local disk):")
    print(f"  per-nucleus TIFF files (baseline):     {baseline:7.3f} s")
    print(f"  zarr, crop by crop:                    {direct:7.3f} s  speed-up {baseline / direct:6.2f}x")
    print(f"  zarr, read once in chunks + in memory: {loaded:7.3f} s  speed-up {baseline / loaded:6.2f}x")
    print(f"  files on disk: {n} TIFFs vs {sum(1 for _ in (folder / store.CROPS).rglob('*'))} zarr entries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fields", type=int, default=24)
    parser.add_argument("--crops", type=int, default=20000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="image2reg-bench-"))
    try:
        (folder / "fields").mkdir()
        field_throughput(make_fields(folder / "fields", args.fields), folder)
        (folder / "crops").mkdir()
        crop_access(folder / "crops", args.crops)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
