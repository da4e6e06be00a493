"""Expression inputs: single-cell preprocessing, CCLE loading and the marker table, against hand-computed values."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from image2reg.data import expression


def counts() -> ad.AnnData:
    x = np.array([[1, 0, 3, 4], [2, 0, 0, 0], [3, 5, 5, 5]], dtype=np.float32)
    return ad.AnnData(x, obs=pd.DataFrame(index=["c1", "c2", "c3"]),
                      var=pd.DataFrame(index=["tp53", "Mdm2", "TP53", "egfr"]))


def test_single_cell_preprocessing_is_the_reference_pipeline():
    raw = counts()
    result = expression.preprocess_single_cell(raw, min_genes=2, min_cells=2, target_sum=10.0)
    # upper-cased names, the second TP53 dropped; c2 then has 1 detected gene (< 2) and goes;
    # of c1 and c3, MDM2 is detected in one cell only (< 2) and goes
    assert result.obs_names.tolist() == ["c1", "c3"]
    assert result.var_names.tolist() == ["TP53", "EGFR"]
    kept = np.array([[1, 4], [3, 5]], dtype=np.float64)
    totals = np.array([[5.0], [8.0]])  # totals of the kept genes (scanpy normalises after the filters)
    np.testing.assert_allclose(result.X, np.log1p(kept / totals * 10.0), rtol=1e-6)
    np.testing.assert_array_equal(result.layers["counts"], kept)
    assert raw.var_names.tolist() == ["tp53", "Mdm2", "TP53", "egfr"]  # input untouched
    with pytest.raises(ValueError, match="no cells or genes"):
        expression.preprocess_single_cell(raw, min_genes=10)


def test_counts_csv_is_read_as_cells_by_genes(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text(",ENSG1,ENSG2\ncell1,1,2\ncell2,3,4\n")
    adata = expression.read_counts_csv(path)
    assert adata.obs_names.tolist() == ["cell1", "cell2"] and adata.var_names.tolist() == ["ENSG1", "ENSG2"]
    np.testing.assert_array_equal(expression.dense_expression(adata), [[1, 2], [3, 4]])
    assert expression.read_counts_csv(path, cells_in_rows=False).obs_names.tolist() == ["ENSG1", "ENSG2"]
    path.write_text(",ENSG1,ENSG2\ncell1,1,x\n")
    with pytest.raises(ValueError, match="'x' at cell 'cell1', gene 'ENSG2'"):
        expression.read_counts_csv(path)


def test_ccle_rows_become_line_names_and_columns_symbols(tmp_path):
    (tmp_path / "expr.csv").write_text(",TP53 (7157),egfr (1956),TP53 (999)\nACH-1,1.0,2.0,9.0\nACH-2,3.0,4.0,9.0\n")
    (tmp_path / "info.csv").write_text("DepMap_ID,stripped_cell_line_name\nACH-1,U2OS\nACH-2,HELA\n")
    table = expression.read_ccle(tmp_path / "expr.csv", tmp_path / "info.csv")
    assert table.index.tolist() == ["U2OS", "HELA"] and table.columns.tolist() == ["TP53", "EGFR"]
    assert table.loc["HELA", "EGFR"] == 4.0
    (tmp_path / "info.csv").write_text("DepMap_ID,stripped_cell_line_name\nACH-1,U2OS\n")
    with pytest.raises(ValueError, match="'ACH-2'"):
        expression.read_ccle(tmp_path / "expr.csv", tmp_path / "info.csv")


def test_marker_table_against_hand_computed_values():
    bulk = pd.DataFrame({"A": [5.0, 1.0, 2.0, 3.0], "B": [1.0, 1.0, 1.0, 1.0], "C": [0.0, 2.0, 4.0, 3.0]},
                        index=["U2OS", "L1", "L2", "L3"])
    table = expression.marker_table(bulk)
    assert table.index.tolist() == ["A", "C", "B"]  # |logFC| 3, 3, 0; ties keep the column order
    assert table.loc["A", "log_fc"] == pytest.approx(3.0) and table.loc["C", "log_fc"] == pytest.approx(-3.0)
    assert table.loc["B", ["log_fc", "p_value"]].tolist() == [0.0, 1.0]
    assert table.loc["A", "p_value"] == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 5.0).pvalue)
    assert (table["fdr"] >= table["p_value"]).all()
    with pytest.raises(KeyError, match="HEK293"):
        expression.marker_table(bulk, target="HEK293")


def test_ensembl_ids_map_to_symbols_as_the_reference(tmp_path):
    table = tmp_path / "hgnc_complete_set.txt"
    # the HGNC complete set: tab-separated, many columns; some genes have no Ensembl ID
    table.write_text("hgnc_id\tsymbol\tname\tensembl_gene_id\n"
                     "HGNC:11998\tTP53\ttumor protein p53\tENSG00000141510\n"
                     "HGNC:6973\tMDM2\tMDM2 proto-oncogene\tENSG00000135679\n"
                     "HGNC:1\tNOID\tno Ensembl ID\t\n"
                     "HGNC:2\tTP53DUP\ta second symbol of the same gene\tENSG00000141510\n"
                     "HGNC:3\tMDM2\ta second gene with the symbol MDM2\tENSG00000999999\n")
    mapping = expression.read_gene_id_table(table)
    assert mapping.to_dict() == {"ENSG00000141510": "TP53", "ENSG00000135679": "MDM2", "ENSG00000999999": "MDM2"}
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    adata = ad.AnnData(x, var=pd.DataFrame(index=["ENSG00000999999.3", "ENSG00000141510.17", "ENSG00000000000",
                                                  "ENSG00000135679", "ERCC-00002"]))
    mapped = expression.map_gene_ids(adata, mapping)
    # IDs without a symbol are dropped; of the two MDM2 genes the first column is kept
    assert mapped.var_names.tolist() == ["MDM2", "TP53"]
    assert mapped.var["gene_id"].tolist() == ["ENSG00000999999.3", "ENSG00000141510.17"]
    np.testing.assert_array_equal(mapped.X, x[:, [0, 1]])
    assert adata.var_names[0] == "ENSG00000999999.3"  # the input is untouched
    with pytest.raises(ValueError, match="none of the 1 gene IDs"):
        expression.map_gene_ids(adata[:, ["ERCC-00002"]], mapping)


def test_gene_id_table_needs_its_columns(tmp_path):
    bad = tmp_path / "ids.tsv"
    bad.write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(ValueError, match="ids.tsv: expected columns 'ensembl_gene_id' and 'symbol'"):
        expression.read_gene_id_table(bad)
    two = tmp_path / "two.csv"
    two.write_text("id,gene\nENSG1,A\nENSG2,B\n")
    assert expression.read_gene_id_table(two).to_dict() == {"ENSG1": "A", "ENSG2": "B"}


def test_single_cell_counts_are_read_from_h5ad_or_csv(tmp_path):
    raw = counts()
    raw.write_h5ad(tmp_path / "counts.h5ad")
    np.testing.assert_array_equal(expression.read_single_cell(tmp_path / "counts.h5ad").X, raw.X)
    pd.DataFrame(raw.X, index=raw.obs_names, columns=["A", "B", "C", "D"]).to_csv(tmp_path / "counts.csv.gz")
    from_csv = expression.read_single_cell(tmp_path / "counts.csv.gz")
    np.testing.assert_array_equal(from_csv.X, raw.X)
    assert from_csv.var_names.tolist() == ["A", "B", "C", "D"]
    with pytest.raises(FileNotFoundError, match="missing.h5ad"):
        expression.read_single_cell(tmp_path / "missing.h5ad")
    (tmp_path / "counts.txt").write_text("x")
    with pytest.raises(ValueError, match=r"must be \.h5ad or \.csv"):
        expression.read_single_cell(tmp_path / "counts.txt")
