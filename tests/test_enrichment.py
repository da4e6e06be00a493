"""Gene-set enrichment: GMT reading and the hypergeometric test against hand-computed values."""

from __future__ import annotations

from math import comb

import pytest

from image2reg.data.network_inputs import read_gmt
from image2reg.network.enrichment import enrichment


def test_gmt_is_read_with_upper_cased_unique_genes(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("HALLMARK_A\thttp://x\ttp53\tMDM2\tTP53\n\nSET_B\tdesc\tEGFR\n")
    assert read_gmt(path) == {"HALLMARK_A": ["TP53", "MDM2"], "SET_B": ["EGFR"]}
    path.write_text("ONLY_A_NAME\n")
    with pytest.raises(ValueError, match="line 1 has 1 tab-separated fields"):
        read_gmt(path)
    path.write_text("A\td\tX\nA\td\tY\n")
    with pytest.raises(ValueError, match="line 2 repeats the gene set 'A'"):
        read_gmt(path)


def test_hypergeometric_p_values_match_the_formula():
    universe = [f"G{k}" for k in range(10)]
    sets = {"IN": ["G0", "G1", "G2", "OUTSIDE"], "OFF": ["G7", "G8"], "TINY": ["OUTSIDE"]}
    table = enrichment(["G0", "G1", "G5", "NOT_IN_UNIVERSE"], sets, universe)
    # list of 3 (G0, G1, G5) from 10; "IN" has 3 genes in the universe, 2 of them listed
    p_in = sum(comb(3, k) * comb(7, 3 - k) for k in (2, 3)) / comb(10, 3)
    assert table.index.tolist() == ["IN", "OFF"]  # TINY has no gene in the universe
    assert table.loc["IN", ["set_size", "overlap", "genes"]].tolist() == [3, 2, "G0,G1"]
    assert table.loc["IN", "expected"] == pytest.approx(0.9)
    assert table.loc["IN", "p_value"] == pytest.approx(p_in)
    assert table.loc["OFF", "p_value"] == pytest.approx(1.0) and table.loc["OFF", "overlap"] == 0
    assert (table["fdr"] >= table["p_value"]).all()
    with pytest.raises(ValueError, match="universe is empty"):
        enrichment(["G0"], sets, [])
