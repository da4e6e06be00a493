"""PPI loaders, gene universe, components and the pruning scans, on hand-made graphs and the real iRefIndex."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from image2reg.data import ppi
from image2reg.network import pruning

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "irefindex_v14_miscore_costs.tsv"


def write_tsv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_irefindex_drops_self_loops_and_keeps_the_cheapest_of_duplicate_edges(tmp_path):
    path = write_tsv(tmp_path / "ppi.tsv", "protein1\tprotein2\tcost\nA\tB\t0.5\nB\tA\t0.2\nC\tC\t0.1\nC\tA\t0.4\n")
    edges = ppi.read_irefindex(path)
    assert edges.to_dict("records") == [{"gene1": "A", "gene2": "B", "cost": 0.2},
                                        {"gene1": "A", "gene2": "C", "cost": 0.4}]


def test_irefindex_errors_name_the_file_and_row(tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", "protein1\tprotein2\tcost\nA\tB\t0.5\nB\tC\tlow\n")
    with pytest.raises(ValueError, match=r"bad.tsv: row 3"):
        ppi.read_irefindex(path)
    with pytest.raises(ValueError, match=r"missing columns \['cost'\]"):
        ppi.read_irefindex(write_tsv(tmp_path / "cols.tsv", "protein1\tprotein2\tscore\nA\tB\t1\n"))


def test_string_links_get_gene_names_and_costs(tmp_path):
    links = tmp_path / "9606.protein.links.txt.gz"
    with gzip.open(links, "wt") as handle:
        handle.write("protein1 protein2 combined_score\n9606.P1 9606.P2 900\n9606.P2 9606.P1 900\n"
                     "9606.P2 9606.P3 150\n")
    info = write_tsv(tmp_path / "info.txt", "#string_protein_id\tpreferred_name\tsize\n9606.P1\tTP53\t1\n"
                     "9606.P2\tMDM2\t1\n9606.P3\tEP300\t1\n")
    edges = ppi.read_string_links(links, info, min_score=400)
    assert edges.to_dict("records") == [{"gene1": "MDM2", "gene2": "TP53", "cost": pytest.approx(0.1)}]
    bad_info = write_tsv(tmp_path / "info2.txt", "#string_protein_id\tpreferred_name\n9606.P1\tTP53\n")
    with pytest.raises(ValueError, match="absent from"):
        ppi.read_string_links(links, bad_info)


# A triangle A-B-C with a tail C-D, and a separate pair E-F; H is a hub joined to A, B, C, E.
EDGES = pd.DataFrame({"gene1": ["A", "A", "B", "C", "E", "A", "B", "C", "E"],
                      "gene2": ["B", "C", "C", "D", "F", "H", "H", "H", "H"],
                      "cost": [0.1, 0.2, 0.3, 0.6, 0.1, 0.9, 0.9, 0.9, 0.9]})


def test_components_restriction_and_degrees():
    assert set(pruning.largest_component(EDGES).index) == set(EDGES.index)  # H joins everything
    without_hub = EDGES[EDGES["gene2"] != "H"]
    assert sorted(pruning.largest_component(without_hub)["gene2"]) == ["B", "C", "C", "D"]
    # the component with the most targets wins over the larger one
    assert pruning.largest_component(without_hub, targets=["E", "F"])["gene1"].tolist() == ["E"]
    assert pruning.restrict_to_genes(EDGES, ["A", "B", "C"])["cost"].tolist() == [0.1, 0.2, 0.3]
    assert pruning.node_degrees(EDGES).to_dict() == {"A": 3, "B": 3, "C": 4, "D": 1, "E": 2, "F": 1, "H": 4}


def test_confidence_pruning_keeps_cheaper_edges_in_the_largest_component():
    scan = pruning.confidence_scan(EDGES, [0.15, 0.5, 1.0], targets=["D", "F"])
    assert scan[["n_nodes", "n_edges", "targets_covered"]].to_dict("records") == [
        {"n_nodes": 2, "n_edges": 1, "targets_covered": 0},   # A-B (ties to E-F: the first gene's component)
        {"n_nodes": 3, "n_edges": 3, "targets_covered": 0},   # the triangle
        {"n_nodes": 7, "n_edges": 9, "targets_covered": 2}]   # everything
    assert scan["n_edges"].is_monotonic_increasing


def test_hub_pruning_removes_the_top_degrees_and_keeps_the_targets_component():
    pruned, hubs = pruning.prune_hubs(EDGES, 0.9, targets=["E"])
    assert hubs == ["C", "H"]  # degree 4 reaches the 0.9 quantile of degrees
    assert pruned.to_dict("records") == [{"gene1": "E", "gene2": "F", "cost": 0.1}]
    scan = pruning.hub_scan(EDGES, [0.5, 0.9, 1.0], targets=["A", "B"])
    assert scan["n_hubs"].tolist() == [4, 2, 2] and scan["targets_covered"].tolist() == [0, 2, 2]
    with pytest.raises(ValueError, match="quantile"):
        pruning.prune_hubs(EDGES, 0)


@pytest.mark.skipif(not SHARED.is_file(), reason="needs ../shared/data (not distributed with the project)")
def test_the_real_irefindex_table_has_the_reference_size():
    edges = ppi.read_irefindex(SHARED)
    summary = pruning.summarize(edges)
    assert (summary["n_nodes"], summary["n_edges"]) == (15759, 181955)  # method §5.1, step 1
    assert edges["cost"].between(0, 1).all() and (edges["gene1"] < edges["gene2"]).all()


@pytest.mark.parametrize("seed", range(5))
def test_the_one_pass_confidence_scan_equals_pruning_at_each_cutoff(seed):
    # random sparse graphs with many equal-size components: the tie rule must match too
    rng = np.random.default_rng(seed)
    genes = [f"G{k:02d}" for k in range(40)]
    pairs = rng.choice(40, size=(60, 2))
    edges = pd.DataFrame({"gene1": [genes[a] for a in pairs[:, 0]], "gene2": [genes[b] for b in pairs[:, 1]],
                          "cost": rng.choice([0.1, 0.2, 0.3, 0.5, 0.8], size=60)})
    edges = edges[edges["gene1"] != edges["gene2"]].drop_duplicates(["gene1", "gene2"]).reset_index(drop=True)
    targets = genes[::5]
    cutoffs = [0.0, 0.15, 0.2, 0.25, 0.3, 0.6, 0.9]
    scan = pruning.confidence_scan(edges, cutoffs, targets)
    for row in scan.itertuples():
        expected = pruning.summarize(pruning.prune_confidence(edges, row.cutoff), targets)
        assert (row.n_nodes, row.n_edges, row.targets_covered) == (expected["n_nodes"], expected["n_edges"],
                                                                  expected["targets_covered"]), row.cutoff
