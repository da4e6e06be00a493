"""Interactome inference at the scale of the human PPI: loading, pruning scans, all-edge costs, the β sweep.

Run: ``python benchmarks/interactome.py [--ppi ../shared/data/irefindex_v14_miscore_costs.tsv] [--cells 1126]``

On the real iRefIndex v14 table (15.7k nodes, 182k edges) with synthetic single-cell expression and
fold changes for its genes (the real ones cannot be downloaded here), times every step of stage 05
as the reference ran it (method §5): the confidence cut-off scan (0 to 0.999 by 0.001), the hub
scan, Spearman costs of all edges, prizes and the 99-value β sweep with its selected solution. Two
steps are also timed the naive way, on a sample, and printed as ratios: a Python loop of
``scipy.stats.spearmanr`` over edges, and a confidence scan that prunes the graph again for every
cut-off.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from image2reg.data import ppi
from image2reg.network import pruning
from image2reg.network.pcst import beta_sweep, node_prizes, select_beta, spearman_edge_costs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PPI = ROOT.parent / "shared" / "data" / "irefindex_v14_miscore_costs.tsv"


class Clock:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []

    def time(self, name: str, function, *args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        self.rows.append((name, time.perf_counter() - start))
        print(f"  {name:<48s} {self.rows[-1][1]:8.2f} s", flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppi", type=Path, default=DEFAULT_PPI, help="iRefIndex costs table")
    parser.add_argument("--cells", type=int, default=1126, help="synthetic single cells (FUCCI: 1,126)")
    parser.add_argument("--targets", type=int, default=41, help="synthetic impactful targets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.ppi.is_file():
        raise SystemExit(f"{args.ppi} not found: pass --ppi with an iRefIndex costs table")
    rng = np.random.default_rng(args.seed)
    clock = Clock()
    print(f"interactome benchmark on {args.ppi.name}, {args.cells} synthetic cells")
    edges = clock.time("load (self-loops, duplicates)", ppi.read_irefindex, args.ppi)
    genes = np.array(sorted(set(edges["gene1"]) | set(edges["gene2"])))
    print(f"    {len(genes)} nodes, {len(edges)} edges")
    expressed = genes[rng.random(len(genes)) < 0.62]  # the reference kept ~61 % of PPI genes
    targets = list(rng.choice(expressed, args.targets, replace=False))
    universe = clock.time("gene universe + largest component", lambda: pruning.largest_component(
        pruning.restrict_to_genes(edges, expressed)))
    cutoffs = np.round(np.arange(0.0, 1.0, 0.001), 3)
    scan = clock.time(f"confidence scan ({len(cutoffs)} cut-offs)", pruning.confidence_scan, universe, cutoffs, targets)
    full = scan["targets_covered"].max()
    cutoff = float(scan.loc[scan["targets_covered"] == full, "cutoff"].min())
    pruned = pruning.prune_confidence(universe, cutoff)
    quantiles = np.round(np.arange(0.99, 1.0, 0.001), 3)
    hubs = clock.time(f"hub scan ({len(quantiles)} quantiles)", pruning.hub_scan, pruned, quantiles, targets)
    quantile = float(hubs.loc[hubs["targets_covered"] == hubs["targets_covered"].max(), "quantile"].min())
    network, removed = pruning.prune_hubs(pruned, quantile, targets)
    nodes = pd.Index(sorted(set(network["gene1"]) | set(network["gene2"])))
    print(f"    cut-off {cutoff}, hub quantile {quantile} ({len(removed)} hubs): {len(nodes)} nodes, "
          f"{len(network)} edges, {pruning.summarize(network, targets)['targets_covered']} of {len(targets)} targets")
    expression = rng.poisson(rng.gamma(0.5, 2.0, len(nodes)), size=(args.cells, len(nodes))).astype(np.float32)
    index = np.column_stack([nodes.get_indexer(network["gene1"]), nodes.get_indexer(network["gene2"])])
    costs = clock.time(f"Spearman costs of all {len(index)} edges", spearman_edge_costs, np.log1p(expression), index)
    logfc = pd.Series(rng.normal(0, 1, len(nodes)), index=nodes)
    prizes = node_prizes(logfc, targets).reindex(nodes).to_numpy()
    betas = np.round(np.arange(0.1, 10, 0.1), 1)
    sweep, solutions = clock.time(f"β sweep ({len(betas)} values, Louvain per solution)", beta_sweep, index, costs,
                                  prizes, betas, nodes.get_indexer(targets))
    beta = select_beta(sweep)
    chosen = sweep.loc[sweep["beta"] == beta].iloc[0]
    total = sum(seconds for _, seconds in clock.rows)
    print(f"    selected β = {beta}: {int(chosen['n_nodes'])} nodes, {int(chosen['n_edges'])} edges, "
          f"{int(chosen['targets_covered'])} targets, {int(chosen['n_clusters'])} Louvain clusters")
    print(f"total {total:.1f} s (target: under 60 s on 2 cores)")

    print("naive baselines, measured on a sample and scaled to the full step:")
    sample = rng.choice(len(index), 2000, replace=False)
    values = np.log1p(expression)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant genes: spearmanr gives NaN (cost 1 in the package)
        naive = [1 - abs(spearmanr(values[:, i], values[:, j]).statistic) for i, j in index[sample]]
    loop = (time.perf_counter() - start) / len(sample) * len(index)
    np.testing.assert_allclose(np.nan_to_num(naive, nan=1.0), costs[sample], atol=1e-9)
    spearman_seconds = dict(clock.rows)[f"Spearman costs of all {len(index)} edges"]
    print(f"  spearmanr per edge: {loop:8.1f} s  (vectorised {spearman_seconds:.2f} s: {loop / spearman_seconds:.0f}x)")
    start = time.perf_counter()
    for value in cutoffs[::100]:
        pruning.summarize(pruning.prune_confidence(universe, value), targets)
    per_cutoff = (time.perf_counter() - start) / len(cutoffs[::100]) * len(cutoffs)
    scan_seconds = dict(clock.rows)[f"confidence scan ({len(cutoffs)} cut-offs)"]
    print(f"  prune per cut-off:  {per_cutoff:8.1f} s  "
          f"(one pass {scan_seconds:.2f} s: {per_cutoff / scan_seconds:.0f}x)")


if __name__ == "__main__":
    main()
