"""Throughput of self-supervised (contrastive) pretraining of the nucleus encoder against a supervised epoch.

Run: ``python benchmarks/pretraining.py [--images-dir DIR] [--device auto|cpu|cuda] [--epochs 1] [--width 8]
[--input-size 64] [--batch-size 256] [--max-nuclei N] [--threads T] [--json out.json]``

Pretraining (:mod:`image2reg.cnn.pretrain`): per batch, two views of every nucleus
(:func:`~image2reg.cnn.pretrain.augment_views`: crop-and-resize, one of 8 symmetries, pixel noise,
made on the device), one forward pass of the ``2 × batch`` views through the ResNet18 trunk
(``--width``) and its projection head, NT-Xent, backward, AdamW and the cosine schedule: the loop of
``pretrain._train_epoch``, under the training's deterministic settings. The baseline is the supervised
step of the same trunk on the same crops in the same batches: an ``ImageEnsemble`` with the nucleus
branch only, class-weighted cross-entropy on random labels (42 classes), flips only, one view per
nucleus, Adam, run by ``image2reg.cnn.train._train_epoch`` (on CUDA with the ``TrainingParams``
defaults: mixed precision and channels-last; pretraining uses bfloat16 autocast on CUDA).

Both are timed over one epoch of the drawn nuclei (``--max-nuclei``, default all; the last incomplete
batch dropped) after ``--warmup`` unmeasured batches, each with a new model; the crops are in memory
(read once, as :func:`~image2reg.cnn.pretrain.pretrain_nuclei` does). The output gives nuclei/s of both
(a pretraining nucleus is two views), their ratio, and the projected time of ``--epochs`` epochs over
``--demo-nuclei`` nuclei (default 14,600, the demo's count) for each.

Data: by default a synthetic world from ``params/smoke.yml`` with the Rohban field geometry (1080 px
fields, ~70 nuclei each) is built and run through stage 01 in a temporary folder, with
``benchmarks/training_throughput.py``'s ``benchmark_images``; ``--images-dir`` uses an existing stage-01
folder instead (read only). torch uses ``--threads`` threads (default: the cores); on a machine whose
cores are shared, compare only runs made under the same load. All numbers are measured in this run;
nothing is asserted about them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from training_throughput import benchmark_images, device_name, supervised_setup

from image2reg.cnn import pretrain, train
from image2reg.cnn.datasets import load_crops
from image2reg.cnn.ensemble import ImageEnsemble
from image2reg.config import PretrainStageParams, TrainingParams
from image2reg.execute import default_workers

N_CLASSES = 42
DEMO_NUCLEI = 14_600


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pretraining_rate(crops: torch.Tensor, params: PretrainStageParams, warmup: int) -> tuple[float, float, int, float]:
    """Nuclei/s of one pretraining epoch over ``crops`` after ``warmup`` batches; seconds, steps, mean loss."""
    runtime = pretrain._runtime(params.device)
    batch, steps = pretrain.batch_plan(len(crops), params.batch_size)
    torch.manual_seed(params.seed)
    model = pretrain.ContrastiveModel.from_params(params).to(runtime.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=(steps + warmup) * params.epochs)
    order, views = torch.Generator().manual_seed(params.seed), torch.Generator().manual_seed(params.seed + 1)
    with train._deterministic(runtime.device):
        if warmup:
            pretrain._train_epoch(model, crops, batch, min(warmup, steps), optimizer, scheduler, order, views, params,
                                  runtime)
        sync(runtime.device)
        started = time.perf_counter()
        loss, _, _ = pretrain._train_epoch(model, crops, batch, steps, optimizer, scheduler, order, views, params,
                                           runtime)  # ends in .item()
        seconds = time.perf_counter() - started
    return steps * batch / seconds, seconds, steps, loss


def supervised_rate(crops: torch.Tensor, params: PretrainStageParams, warmup: int) -> tuple[float, float, int]:
    """Nuclei/s of one supervised epoch (one flipped view, random labels) of the same trunk on the same batches."""
    training = TrainingParams(device=params.device, seed=params.seed)
    runtime = train._Runtime.for_training(training)
    batch, steps = pretrain.batch_plan(len(crops), params.batch_size)
    labels = torch.from_numpy(np.random.default_rng(params.seed).integers(0, N_CLASSES, len(crops)))
    weights = train.class_weights(labels.numpy(), N_CLASSES).to(runtime.device)
    order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(params.seed))
    batches = [{"nucleus": crops[order[k * batch:(k + 1) * batch]], "label": labels[order[k * batch:(k + 1) * batch]]}
               for k in range(steps)]
    torch.manual_seed(params.seed)
    model = ImageEnsemble(N_CLASSES, branches=("nucleus",), latent_dim=params.branch_dim, input_size=params.input_size,
                          width=params.width, branch_dim=params.branch_dim).to(runtime.device)
    optimizer, scaler, flips = supervised_setup(model, runtime, training)
    with train._deterministic(runtime.device):
        if warmup:
            train._train_epoch(model, batches[:warmup], optimizer, scaler, weights, flips, runtime)
        sync(runtime.device)
        started = time.perf_counter()
        train._train_epoch(model, batches, optimizer, scaler, weights, flips, runtime)  # ends in .item()
        seconds = time.perf_counter() - started
    return steps * batch / seconds, seconds, steps


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="an existing stage-01 folder (read only); default: build a synthetic one")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the projection")
    parser.add_argument("--width", type=int, default=8, help="channels of ResNet18's first stage")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256, help="nuclei per batch (pretraining: 2 views each)")
    parser.add_argument("--max-nuclei", type=int, default=None, help="nuclei drawn (seeded); default: all")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured batches before each measured epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores)")
    parser.add_argument("--demo-nuclei", type=int, default=DEMO_NUCLEI, help="nuclei of the projection")
    parser.add_argument("--field-size", type=int, default=1080, help="synthetic fields' side (px)")
    parser.add_argument("--nuclei-per-field", type=int, default=70)
    parser.add_argument("--sites-per-well", type=int, default=2, help="synthetic fields per well (smoke: 2)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    threads = args.threads or default_workers()
    torch.set_num_threads(threads)
    params = PretrainStageParams(width=args.width, input_size=args.input_size, batch_size=args.batch_size,
                                 epochs=args.epochs, max_nuclei=args.max_nuclei, device=args.device)
    device = pretrain._runtime(params.device).device
    folder = Path(tempfile.mkdtemp(prefix="image2reg-pretrain-bench-"))
    try:
        images_dir, origin = benchmark_images(args, folder)
        started = time.perf_counter()
        rows = pretrain._drawn_rows(images_dir, folder / "pretrain", params)  # the draw of pretrain_nuclei
        crops = load_crops(images_dir, rows)
        crops_seconds = time.perf_counter() - started
        batch, steps = pretrain.batch_plan(len(crops), params.batch_size)

        print(f"device: {device.type} ({device_name(device)}), torch {torch.__version__}, {threads} threads")
        print(f"data: {origin}; {len(crops)} nuclei, crops {tuple(crops.shape[-2:])} into memory in "
              f"{crops_seconds:.2f} s")
        print(f"model: ResNet18 trunk width {params.width}, input {params.input_size}, branch_dim "
              f"{params.branch_dim}; batches of {batch} nuclei, {steps} per epoch, {args.warmup} warm-up")

        pre_rate, pre_seconds, _, loss = pretraining_rate(crops, params, args.warmup)
        sup_rate, sup_seconds, _ = supervised_rate(crops, params, args.warmup)
        ratio = sup_rate / pre_rate
        print(f"pretraining (2 views, NT-Xent, AdamW): {pre_rate:9.1f} nuclei/s ({2 * pre_rate:.1f} views/s; "
              f"epoch of {steps * batch} nuclei in {pre_seconds:.2f} s, loss {loss:.3f})")
        print(f"supervised (1 view, flips, CE, Adam):  {sup_rate:9.1f} nuclei/s (epoch in {sup_seconds:.2f} s)")
        print(f"pretraining costs {ratio:.2f}x the supervised step per nucleus")
        pre_projected = args.epochs * args.demo_nuclei / pre_rate
        sup_projected = args.epochs * args.demo_nuclei / sup_rate
        print(f"projection, {args.epochs} epoch(s) over {args.demo_nuclei:,} nuclei on this {device.type}: "
              f"pretraining {duration(pre_projected)}, supervised {duration(sup_projected)} (training steps only)")
        if args.json is not None:
            result = {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
                      "threads": threads, "images": origin, "nuclei": len(crops), "batch_size": batch,
                      "steps": steps, "warmup": args.warmup, "width": params.width, "input_size": params.input_size,
                      "pretraining_nuclei_per_s": pre_rate, "supervised_nuclei_per_s": sup_rate,
                      "cost_ratio": ratio, "epochs": args.epochs, "demo_nuclei": args.demo_nuclei,
                      "projected_seconds": {"pretraining": pre_projected, "supervised": sup_projected}}
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
