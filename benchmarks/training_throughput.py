"""CNN training throughput (samples/s) of image2reg's data path against a naive per-item baseline.

Run: ``python benchmarks/training_throughput.py [--device auto|cpu|cuda] [--steps 3] [--batch-size 16]
[--images-dir runs/demo/01_images] [--json results.json]``

The model is the reference's ensemble (method §4.2 and §4.4): :class:`~image2reg.cnn.ensemble.ImageEnsemble`
with the nucleus and region branches (ResNet18, width 64), latent 1024 and 42 classes, trained with
class-weighted cross-entropy and Adam, at the reference's input size 224 (the 64 px crops and 448 px
regions resized inside the model) and at the native 64 px. One training step is forward + backward +
Adam step, run by the training loop of :mod:`image2reg.cnn.train` (its ``_train_epoch`` under its
deterministic settings; on CUDA with the ``TrainingParams`` defaults, mixed precision and
channels-last). Per input size, three throughputs are measured over ``--steps`` batches after
``--warmup`` batches, with a new model each:

- **model only**: one batch, already on the device, fed again and again (the upper bound);
- **image2reg**: :class:`~image2reg.cnn.datasets.NucleusBatches` over a stage-01 folder (crops read into
  memory once, region patches cut by a :class:`~image2reg.cnn.datasets.RegionCutter` from
  illumination-corrected fields kept in an LRU cache), converted, flipped and standardised on the
  device in whole batches (``_Runtime.inputs``). Every epoch gets a new, cold field cache, so each
  field is read once per epoch, as in a Rohban-sized split whose fields far outnumber the cache;
- **naive**: the style of the reference's code (method §4.1): a ``torch.utils.data.Dataset`` that per
  nucleus opens its crop's own TIFF file and reads its whole illumination-corrected field TIFF
  (uint16), scales the field by its 0.1/99.9 percentiles to uint8, pads it by 448 px with its 1st
  percentile, cuts the 448 px region, converts both images to float and flips and standardises them
  per item on the CPU, batched by a ``DataLoader`` with ``--workers`` worker processes and a shuffling
  sampler. Unlike the reference's, the naive loader leaves the resize to 224 to the model (so both
  paths feed the model the same tensors), joins its epochs without restarting its workers, and is
  timed after its workers' first batches (their start and ramp-up left out): all three in favour of
  the baseline.

The data paths alone (batches produced and moved to the device, images converted, flipped and
standardised, no model) are timed too, so the output shows where the time goes: image2reg's over one
epoch of the training nuclei (at most ``--data-samples``; its field reads come at the start of each
shuffling window, so a shorter count would overstate them), the naive one over ``--naive-batches``
(its cost per item is the same throughout). The image2reg path runs in the main process, the naive
one in ``--workers`` processes.

Data: by default a synthetic world from ``params/smoke.yml`` with the Rohban field geometry (1080 px
fields, ~70 nuclei of ~40 px each, as ``benchmarks/preprocessing.py``) is built and run through
stage 01 in a temporary folder; ``--images-dir`` uses an existing stage-01 folder instead (read
only). The 42 class labels are drawn at random (throughput does not depend on them).

Projection: the specificity screen (method §4.3) trains 190 genes × 4 folds binary models, each on
the training part (3/4 × 4/5 = 0.6) of the gene's nuclei and as many undersampled controls; the
projection multiplies the measured samples/s at input 224 by 190 × 4 × ``--epochs`` ×
``--train-nuclei`` (default 2 × 3,000 × 0.6) training samples, and also for Rohban's largest gene
(``--max-gene-nuclei`` 10,600). It counts training steps only (no validation or test inference, no
data loading outside the epochs) and uses the 42-class, latent-1024 head (the screen's 2 classes and
latent 512 differ only in the tiny head). It is compared with the reference's own statement that
running *all* its experiments and analyses took more than 200 hours of computation (reference
README, "Reproducing the paper results"; developed on one Nvidia RTX 4000), so it is a loose bound
for the screen alone.

On the CPU the reference setting is slow: the defaults there are 3 measured batches of 16 after 1
warm-up; on CUDA 30 batches of 64 after 3 warm-ups. torch uses as many threads as there are cores
(``--threads``); on a machine whose cores are busy with other work, that many threads wait for each
other at every operation and small models slow down many times over, so measure there with fewer
threads (and compare only runs under the same load). All numbers are measured in this run; nothing
is asserted about them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from image2reg.cnn import train
from image2reg.cnn.augment import GREY_MEAN, GREY_STD
from image2reg.cnn.datasets import NucleusBatches, RegionCutter, load_crops
from image2reg.cnn.ensemble import ImageEnsemble
from image2reg.config import load_params
from image2reg.data import synthetic
from image2reg.data.cellpainting import read_image_table
from image2reg.execute import ExecutionParams, default_workers
from image2reg.images import pipeline
from image2reg.images.illumination import correct_illumination, read_illumination_function
from image2reg.layout import RawLayout, artifact_name, stored_path

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 42
LATENT_DIM = 1024
WIDTH = 64
REGION_SIZE = 448
INPUT_SIZES = (224, 64)
REFERENCE_INPUT = 224
SCREEN_GENES, SCREEN_FOLDS = 190, 4
REFERENCE_HOURS = 200.0  # reference README: "more than 200 hours of pure computation time", all experiments
PLATE, FIELD, QC_PASS = "Metadata_Plate", "image_path", "QC_pass"


# --- data -------------------------------------------------------------------------------------------

def build_world(folder: Path, field_size: int, nuclei_per_field: int, sites_per_well: int) -> Path:
    """Smoke world with the given field geometry, through stage 01 in-process; returns the stage-01 folder."""
    params = load_params(ROOT / "params" / "smoke.yml")
    syn = params.stage("data").synthetic
    screen = syn.screen.model_copy(update={"field_size": field_size, "nuclei_per_field": nuclei_per_field,
                                           "nucleus_radius": 20.0, "sites_per_well": sites_per_well})
    raw = RawLayout(folder / "raw")
    synthetic.synthesize_world(syn.model_copy(update={"screen": screen}), raw, params.seed, progress_bar=False)
    images = params.stage("images").model_copy(update={"execution": ExecutionParams(backend="inprocess")})
    fields = pipeline.field_inputs(read_image_table(raw), raw, supplied_masks=False)
    out = folder / "01_images"
    pipeline.preprocess_images(fields, out, images, progress_bar=False)
    return out


def benchmark_images(args: argparse.Namespace, folder: Path) -> tuple[Path, str]:
    """The stage-01 folder a benchmark runs on, and where it comes from: ``args.images_dir``, or else a smoke world
    with ``args``'s field geometry built in ``folder`` (:func:`build_world`)."""
    if args.images_dir is not None:
        return args.images_dir, str(args.images_dir)
    started = time.perf_counter()
    images_dir = build_world(folder, args.field_size, args.nuclei_per_field, args.sites_per_well)
    return images_dir, (f"synthetic (params/smoke.yml, {args.field_size} px fields, ~{args.nuclei_per_field} "
                        f"nuclei each), stage 01 built in {time.perf_counter() - started:.0f} s")


def training_table(images_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str | None]]:
    """Nucleus table, a one-fold split table with every usable nucleus in ``train`` (random labels), illumination."""
    nuclei = pd.read_parquet(images_dir / artifact_name("images", "nuclei"))
    # stage 01 stores the fields of its runs folder relative to itself; both loaders here open them directly
    nuclei[FIELD] = [str(stored_path(path, images_dir)) for path in nuclei[FIELD]]
    used = nuclei[nuclei[QC_PASS]] if QC_PASS in nuclei else nuclei
    labels = np.random.default_rng(seed).integers(0, N_CLASSES, len(used))
    splits = pd.DataFrame({"fold": 0, "split": "train", "label": labels}, index=used.index)
    illumination = {}
    for plate in used[PLATE].astype(str).unique():
        path = pipeline.illumination_path(images_dir, plate)
        illumination[plate] = str(path) if path.is_file() else None
    return nuclei, splits, illumination


def make_cutter(nuclei: pd.DataFrame, splits: pd.DataFrame, illumination: dict[str, str | None]) -> RegionCutter:
    used = nuclei.loc[splits.index]
    return RegionCutter(dict(zip(used[FIELD], used[PLATE].astype(str))), illumination, REGION_SIZE)


def image2reg_stream(batches: NucleusBatches, cutter: Callable[[], RegionCutter]) -> Iterator[dict]:
    """Epoch after epoch of ``batches``, each epoch with a new (cold) field cache."""
    for epoch in itertools.count():
        batches.regions = cutter()
        batches.set_epoch(epoch)
        yield from batches


def write_naive_files(folder: Path, images_dir: Path, nuclei: pd.DataFrame, splits: pd.DataFrame,
                      illumination: dict[str, str | None]) -> pd.DataFrame:
    """One TIFF per crop and one illumination-corrected uint16 TIFF per field, as the reference had on disk."""
    used = nuclei.loc[splits.index]
    (folder / "crops").mkdir(parents=True)
    (folder / "fields").mkdir()
    crops = load_crops(images_dir, used["crop_index"].to_numpy()).numpy()
    crop_paths = [str(folder / "crops" / f"{k}.tif") for k in range(len(used))]
    for path, crop in zip(crop_paths, crops):
        tifffile.imwrite(path, crop[0])
    field_paths = {}
    functions = {plate: None if path is None else read_illumination_function(path)
                 for plate, path in illumination.items()}
    for k, (field, plate) in enumerate(used.groupby(FIELD)[PLATE].first().astype(str).items()):
        image = tifffile.imread(field)
        function = functions[plate]
        corrected = image.astype(np.float32) if function is None else correct_illumination(image, function)
        field_paths[field] = str(folder / "fields" / f"{k}.tif")
        tifffile.imwrite(field_paths[field], np.clip(np.rint(corrected), 0, 65535).astype(np.uint16))
    return pd.DataFrame({"crop": crop_paths, "field": used[FIELD].map(field_paths).to_numpy(),
                         "row": used["centroid_y"].to_numpy(), "col": used["centroid_x"].to_numpy(),
                         "label": splits["label"].to_numpy()})


class NaiveDataset(Dataset):
    """Per item: the crop's TIFF and the whole field's TIFF from disk, scaled, padded, cut, flipped, normalised."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    @staticmethod
    def _augment(image: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(image.astype(np.float32) / 255.0)[None]
        if torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
        if torch.rand(()) < 0.5:
            tensor = tensor.flip(-2)
        return (tensor - GREY_MEAN) / GREY_STD

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        item = self.table.iloc[k]
        nucleus = tifffile.imread(item["crop"])
        field = tifffile.imread(item["field"]).astype(np.float32)
        low, high = np.percentile(field, [0.1, 99.9])
        scaled = (np.clip((field - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
        padded = np.pad(scaled, REGION_SIZE, constant_values=np.percentile(scaled, 1))
        top, left = int(item["row"]) + REGION_SIZE // 2, int(item["col"]) + REGION_SIZE // 2
        region = padded[top:top + REGION_SIZE, left:left + REGION_SIZE]
        return {"nucleus": self._augment(nucleus), "region": self._augment(region),
                "label": torch.tensor(item["label"], dtype=torch.int64)}


def naive_stream(table: pd.DataFrame, batch_size: int, workers: int) -> Iterator[dict]:
    """Shuffled batches of :class:`NaiveDataset`, epoch after epoch without restarting the workers.

    The workers' first batches are drawn and dropped here (at the first ``next``), so that what
    follows comes at the loader's steady rate: their start-up, and its stall at every epoch of the
    reference's loader, are left out (in favour of the baseline; this world's epochs are short).
    """
    dataset = NaiveDataset(table)
    sampler = RandomSampler(dataset, num_samples=len(dataset) * 10_000)  # lazily, one permutation per epoch
    iterator = iter(DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                               drop_last=True))
    try:
        for _ in range(max(workers, 1)):
            next(iterator)
        yield from iterator
    finally:
        getattr(iterator, "_shutdown_workers", lambda: None)()


class PreparedRuntime(train._Runtime):
    """The training loop's runtime for batches already converted and augmented (the naive loader's)."""

    def inputs(self, model, batch, flips=None):
        inputs = {}
        for name in model.branches:
            images = batch[name].to(self.device, non_blocking=True)
            inputs[name] = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        return inputs


# --- measurements ----------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def supervised_setup(model: torch.nn.Module, runtime: train._Runtime, params: train.TrainingParams
                     ) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler | None, torch.Generator]:
    """What :mod:`image2reg.cnn.train`'s ``_train_epoch`` needs beside the model, set up as ``train_model`` does:
    the model in channels-last where the runtime wants it, Adam, the fp16 loss scaler (or None), the flips."""
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay,
                                 foreach=True)
    scaler = torch.amp.GradScaler("cuda") if runtime.amp_dtype == torch.float16 else None
    return optimizer, scaler, torch.Generator().manual_seed(params.seed)


def train_rate(stream: Iterator[dict], runtime: train._Runtime, params: train.TrainingParams, input_size: int,
               weights: torch.Tensor, warmup: int, steps: int) -> tuple[float, float]:
    """Samples/s of ``steps`` training steps on batches of ``stream`` after ``warmup`` steps; and the seconds."""
    torch.manual_seed(0)
    model = ImageEnsemble(N_CLASSES, latent_dim=LATENT_DIM, input_size=input_size, width=WIDTH).to(runtime.device)
    optimizer, scaler, flips = supervised_setup(model, runtime, params)
    counted: list[int] = []

    def take(n: int) -> Iterable[dict]:
        for batch in itertools.islice(stream, n):
            counted.append(len(batch["label"]))
            yield batch

    with train._deterministic(runtime.device):
        if warmup:
            train._train_epoch(model, take(warmup), optimizer, scaler, weights, flips, runtime)
        counted.clear()
        sync(runtime.device)
        started = time.perf_counter()
        train._train_epoch(model, take(steps), optimizer, scaler, weights, flips, runtime)  # ends in .item()
        seconds = time.perf_counter() - started
    return sum(counted) / seconds, seconds


def data_rate(stream: Iterator[dict], prepare: Callable[[dict], dict], device: torch.device,
              n_batches: int) -> tuple[float, float]:
    """Samples/s of producing ``n_batches`` batches and preparing their model inputs on the device."""
    samples = 0
    started = time.perf_counter()
    for batch in itertools.islice(stream, n_batches):
        prepare(batch)
        samples += len(batch["label"])
    sync(device)
    seconds = time.perf_counter() - started
    return samples / seconds, seconds


# --- main -----------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--steps", type=int, default=None, help="measured training steps (CPU 3, CUDA 30)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (CPU 1, CUDA 3)")
    parser.add_argument("--batch-size", type=int, default=None, help="CPU 16, CUDA 64")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores)")
    parser.add_argument("--workers", type=int, default=None,
                        help="naive DataLoader workers (default: the cores, at most the reference's 15)")
    parser.add_argument("--data-samples", type=int, default=4096,
                        help="most nuclei of image2reg's data-path-only measurement (at most one epoch: its "
                             "field reads are spread over whole shuffling windows)")
    parser.add_argument("--naive-batches", type=int, default=None,
                        help="batches of the naive data-path-only measurement (default: 20, at least 4 per worker)")
    parser.add_argument("--input-sizes", type=int, nargs="+", default=list(INPUT_SIZES))
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="an existing stage-01 folder (read only); default: build a synthetic one")
    parser.add_argument("--field-size", type=int, default=1080, help="synthetic fields' side (px)")
    parser.add_argument("--nuclei-per-field", type=int, default=70)
    parser.add_argument("--sites-per-well", type=int, default=2, help="synthetic fields per well (smoke: 2)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per screen model in the projection")
    parser.add_argument("--train-nuclei", type=int, default=int(2 * 3000 * 0.6),
                        help="training nuclei per screen model in the projection")
    parser.add_argument("--max-gene-nuclei", type=int, default=10600, help="Rohban's largest gene, for the projection")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    params = train.TrainingParams(device=args.device)
    runtime = train._Runtime.for_training(params)
    device = runtime.device
    cuda = device.type == "cuda"
    steps = args.steps or (30 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    batch_size = args.batch_size or (64 if cuda else 16)
    cores = default_workers()
    threads = args.threads or cores
    workers = args.workers if args.workers is not None else min(cores, 15)
    torch.set_num_threads(threads)

    folder = Path(tempfile.mkdtemp(prefix="image2reg-bench-"))
    results: list[dict] = []
    try:
        images_dir, origin = benchmark_images(args, folder)
        nuclei, splits, illumination = training_table(images_dir, params.seed)
        n_fields = nuclei.loc[splits.index, FIELD].nunique()
        started = time.perf_counter()
        batches = NucleusBatches(nuclei, splits, "train", folder=images_dir, batch_size=batch_size, shuffle=True,
                                 seed=params.seed, regions=make_cutter(nuclei, splits, illumination), fold=0)
        crops_seconds = time.perf_counter() - started
        naive_table = write_naive_files(folder / "naive", images_dir, nuclei, splits, illumination)
        weights = train.class_weights(splits["label"].to_numpy(), N_CLASSES).to(device)
        cutter = lambda: make_cutter(nuclei, splits, illumination)  # noqa: E731

        def naive_loader() -> Iterator[dict]:
            stream = naive_stream(naive_table, batch_size, workers)
            next(stream)  # start the workers, drop their first batches
            return stream

        print(f"device: {device.type} ({device_name(device)}), torch {torch.__version__}, {threads} threads"
              + (f", autocast {runtime.amp_dtype}, channels-last {runtime.channels_last}" if cuda else ""))
        print(f"data: {origin}; {len(splits)} nuclei on {n_fields} fields (crops into memory once: "
              f"{crops_seconds:.2f} s); naive loader: {workers} workers")
        print(f"batches of {batch_size}; training: {steps} steps measured after {warmup} warm-up steps, a new model "
              f"each (ImageEnsemble nucleus + region, width {WIDTH}, latent {LATENT_DIM}, {N_CLASSES} classes)")

        # data paths alone
        flips = torch.Generator().manual_seed(params.seed)
        model_branches = ImageEnsemble(N_CLASSES, latent_dim=8, width=1)  # only its branch names are read
        ours_batches = max(1, min(args.data_samples, len(splits)) // batch_size)
        naive_batches = args.naive_batches or max(20, 4 * workers)
        print("\ndata path only (batches produced and made model inputs on the device, no model):")
        stream = naive_loader()
        naive_data, naive_seconds = data_rate(
            stream, lambda b: PreparedRuntime(device).inputs(model_branches, b), device, naive_batches)
        stream.close()  # the loader goes, and its workers with it
        ours_data, ours_seconds = data_rate(
            image2reg_stream(batches, cutter), lambda b: runtime.inputs(model_branches, b, flips), device,
            ours_batches)
        print(f"  naive, TIFFs per item, {workers} workers: {naive_data:9.1f} samples/s "
              f"({naive_batches} batches in {naive_seconds:.1f} s)")
        print(f"  image2reg, main process:      {ours_data:9.1f} samples/s "
              f"({ours_batches} batches in {ours_seconds:.1f} s, each field read once)  "
              f"speed-up {ours_data / naive_data:6.2f}x")
        results += [{"measure": "data", "path": "naive", "samples_per_s": naive_data, "seconds": naive_seconds,
                     "batches": naive_batches},
                    {"measure": "data", "path": "image2reg", "samples_per_s": ours_data, "seconds": ours_seconds,
                     "batches": ours_batches}]

        # training steps
        print("\ntraining steps (forward + backward + Adam), samples/s:")
        rates: dict[tuple[int, str], float] = {}
        for size in args.input_sizes:
            one = next(iter(batches))
            fixed = {key: value.to(device) for key, value in one.items()}
            paths = {"model only": (lambda: itertools.repeat(fixed), runtime),  # noqa: B023
                     "naive": (naive_loader, PreparedRuntime(device, runtime.amp_dtype, runtime.channels_last)),
                     "image2reg": (lambda: image2reg_stream(batches, cutter), runtime)}
            for path, (make_stream, path_runtime) in paths.items():
                stream = make_stream()
                rate, seconds = train_rate(stream, path_runtime, params, size, weights, warmup, steps)
                rates[size, path] = rate
                results.append({"measure": "train", "input_size": size, "path": path, "samples_per_s": rate,
                                "seconds": seconds})
                if hasattr(stream, "close"):
                    stream.close()  # a naive stream's loader shuts its workers down
            label = "reference" if size == REFERENCE_INPUT else "native" if size == 64 else "other"
            print(f"  input {size:3d} {'(' + label + ')':11s}: model only {rates[size, 'model only']:8.2f} | naive "
                  f"{rates[size, 'naive']:8.2f} | image2reg {rates[size, 'image2reg']:8.2f} | image2reg/naive "
                  f"{rates[size, 'image2reg'] / rates[size, 'naive']:5.2f}x | image2reg/model only "
                  f"{rates[size, 'image2reg'] / rates[size, 'model only']:5.2f}")

        # projection
        size = REFERENCE_INPUT if REFERENCE_INPUT in args.input_sizes else args.input_sizes[0]
        models = SCREEN_GENES * SCREEN_FOLDS
        typical = models * args.epochs * args.train_nuclei
        largest = models * args.epochs * int(2 * args.max_gene_nuclei * 0.6)
        print(f"\nspecificity screen projection (method §4.3: {SCREEN_GENES} genes × {SCREEN_FOLDS} folds, "
              f"{args.epochs} epochs, training steps only), input {size}, on this {device.type}:")
        projection = {"input_size": size, "models": models, "epochs": args.epochs,
                      "train_nuclei": args.train_nuclei, "max_gene_nuclei": args.max_gene_nuclei,
                      "reference_hours": REFERENCE_HOURS, "hours": {}}
        for path in ("image2reg", "naive"):
            rate = rates[size, path]
            hours, upper = typical / rate / 3600, largest / rate / 3600
            projection["hours"][path] = {"typical": hours, "all_genes_at_max": upper}
            print(f"  {path:9s} at {rate:8.2f} samples/s: {hours:9.1f} h with {args.train_nuclei:,} training "
                  f"nuclei per model ({hours / REFERENCE_HOURS:6.2f}x the reference's 200 h), {upper:9.1f} h "
                  f"if every gene had {args.max_gene_nuclei:,} nuclei")
        needed = typical / (REFERENCE_HOURS * 3600)
        projection["samples_per_s_for_reference_hours"] = needed
        print(f"  (the reference reports >{REFERENCE_HOURS:.0f} h of computation for all its experiments together, "
              f"on one RTX 4000; the screen alone takes {REFERENCE_HOURS:.0f} h at {needed:.0f} samples/s)")
        if args.json is not None:
            meta = {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
                    "threads": threads, "workers": workers, "batch_size": batch_size, "steps": steps,
                    "warmup": warmup, "autocast": str(runtime.amp_dtype), "channels_last": runtime.channels_last,
                    "images": origin, "nuclei": len(splits), "fields": int(n_fields)}
            args.json.write_text(json.dumps({"meta": meta, "results": results, "projection": projection},
                                            indent=2) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
