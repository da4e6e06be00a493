"""Interactome files: GraphML and parquet round trips."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from image2reg.network.io import to_graph, write_interactome

NODES = pd.DataFrame({"prize": [1.0, 0.25, np.nan], "target": [True, False, False], "cluster": [0, 0, 1]},
                     index=pd.Index(["TP53", "MDM2", "EGFR"], name="gene"))
EDGES = pd.DataFrame({"gene1": ["MDM2", "EGFR"], "gene2": ["TP53", "TP53"], "cost": [0.1, 0.7]})


def test_graphml_and_tables_round_trip(tmp_path):
    paths = write_interactome(tmp_path, NODES, EDGES)
    graph = nx.read_graphml(paths["graphml"])
    assert sorted(graph.nodes) == ["EGFR", "MDM2", "TP53"] and graph.number_of_edges() == 2
    assert graph.nodes["TP53"] == {"prize": 1.0, "target": True, "cluster": 0}
    assert "prize" not in graph.nodes["EGFR"]  # missing values are left out
    assert graph.edges["EGFR", "TP53"]["cost"] == pytest.approx(0.7)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["nodes"]), NODES)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["edges"]), EDGES)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_edges_must_join_nodes():
    with pytest.raises(ValueError, match="not nodes"):
        to_graph(NODES.drop(index="EGFR"), EDGES)
