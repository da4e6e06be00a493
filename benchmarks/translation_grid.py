"""The translation's LOTO grid search at the Rohban scale: the reference grid over every held-out target.

Run: ``python benchmarks/translation_grid.py [--targets 39] [--genes 249] [--dim 1024] [--workers 2]``

Synthetic LOTO data of the Rohban size (39 targets, 249 interactome genes, 1,024-dimensional image and
regulatory embeddings; one image table and one set of regulatory embeddings shared by all targets)
with a planted relation between the two spaces. Times :func:`grid_ranks` on the full reference grid
(1,440 settings) with the default execution, then a naive loop (``augment_inputs`` + ``NtkRegression``
per setting and target, no grouping or caching) on a random sample of settings, scaled to the full
grid, and prints the ratio. The sampled settings' ranks are compared with the fast ones.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from image2reg.execute import ExecutionParams, default_workers
from image2reg.translation.features import InputSettings, augment_inputs, unit_rows
from image2reg.translation.grid import grid_ranks, grid_summary, nested_selection, reference_grid
from image2reg.translation.loto import LotoData
from image2reg.translation.metrics import distance_ranks, random_topk, topk_accuracy, topk_auc
from image2reg.translation.models import NtkRegression


def synthetic_data(n_targets: int, n_genes: int, dim: int, seed: int) -> LotoData:
    """Shared tables: image embeddings of the targets, regulatory ones = a noisy linear image of them."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"GENE{i:04d}" for i in range(n_genes)])
    targets = sorted(rng.choice(genes, n_targets, replace=False).tolist())
    latent = rng.normal(size=(n_genes, 8))
    image = pd.DataFrame(latent @ rng.normal(size=(8, dim)) + 4.0 * rng.normal(size=(n_genes, dim)), index=genes)
    regulatory = unit_rows(latent @ rng.normal(size=(8, dim)) + 4.0 * rng.normal(size=(n_genes, dim)))
    return LotoData.from_shared(genes, targets, image.loc[targets], regulatory)


def settings_of(row: pd.Series) -> InputSettings:
    return InputSettings(use_y_train_mean=bool(row["use_y_train_mean"]), n_neighbors=int(row["n_neighbors"]),
                         n_encodings=int(row["n_encodings"]), encoding=row["encoding"], sigma=float(row["sigma"]),
                         append_neighbors=row["append_neighbors"], normalize_inputs=bool(row["normalize_inputs"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=39, help="held-out targets (Rohban: 39)")
    parser.add_argument("--genes", type=int, default=249, help="candidate interactome genes (Rohban: 249)")
    parser.add_argument("--dim", type=int, default=1024, help="image and regulatory embedding dimension")
    parser.add_argument("--naive-sample", type=int, default=12, help="settings timed with the naive loop")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = synthetic_data(args.targets, args.genes, args.dim, args.seed)
    grid = reference_grid(len(data.targets) - 1)
    execution = ExecutionParams(workers=args.workers)
    workers = args.workers or default_workers()
    print(f"translation grid benchmark: {len(grid)} settings × {len(data.targets)} targets, "
          f"{len(data.genes)} candidate genes, dim {args.dim}, {workers} worker processes")

    start = time.perf_counter()
    ranks = grid_ranks(data, grid, execution=execution)
    fast = time.perf_counter() - start
    print(f"  grid_ranks ({ranks.shape[0]} × {ranks.shape[1]}):{fast:27.2f} s  (target: under 60 s on 2 cores)")

    ks = [20, 50]
    summary = grid_summary(grid, ranks, ks)
    best = summary.iloc[0]
    nested = nested_selection(ranks, data.targets, ks)
    nested_auc = topk_auc(topk_accuracy(nested["rank"], 50), 50)
    print(f"    best setting {int(best['setting'])}: AUC(20) {best['auc_20']:.3f}, AUC(50) {best['auc_50']:.3f}, "
          f"top-5 {best['top5']:.3f}; nested AUC(50) {nested_auc:.3f}; "
          f"random AUC(50) {topk_auc(random_topk(len(data.genes)), 50):.3f}")

    print("naive baseline (augment_inputs + NtkRegression per setting and target), scaled to the full grid:")
    sample = np.sort(np.random.default_rng(args.seed).choice(len(grid), args.naive_sample, replace=False))
    splits = {target: data.split(target) for target in data.targets}
    mismatches = 0
    start = time.perf_counter()
    for row in sample:
        settings, reg = settings_of(grid.iloc[row]), float(grid.iloc[row]["reg"])
        for column, target in enumerate(data.targets):
            x_train, y_train, x_test, truth = splits[target]
            train, test = augment_inputs(x_train, y_train, x_test, settings, 0)
            prediction = NtkRegression(reg).fit(train, y_train).predict(test)
            mismatches += int(distance_ranks(prediction, data.regulatory[target], [truth])[0] != ranks[row, column])
    naive = (time.perf_counter() - start) / len(sample) * len(grid)
    print(f"  naive loop, one process ({len(sample)} settings sampled): {naive:8.1f} s  "
          f"(grid_ranks {fast:.2f} s: {naive / fast:.0f}x; per worker {naive / (fast * workers):.0f}x)")
    print(f"    ranks differing from grid_ranks on the sample: {mismatches} of {len(sample) * len(data.targets)}")


if __name__ == "__main__":
    main()
