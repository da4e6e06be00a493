"""Expression inputs of the interactome (method §2.4, §5.1): single-cell counts and bulk expression.

- **Single cells** (FUCCI U2OS, GEO GSE146773; the demo's ``scrnaseq_counts.h5ad``): counts →
  :func:`preprocess_single_cell`, the reference's scanpy steps: gene names upper-cased (duplicates:
  the first kept), cells with fewer than ``min_genes`` detected genes and genes detected in fewer than
  ``min_cells`` cells dropped, counts normalised to ``target_sum`` per cell (1e6: CPM) and
  ``log1p``. The edge costs of the interactome are Spearman correlations over these cells.
- **Bulk** (DepMap CCLE expression, log2(TPM+1), and its sample info; the demo's
  ``bulk_expression.csv``): :func:`read_ccle` gives cell lines × genes with the reference's names
  (lines by ``stripped_cell_line_name``, genes upper-cased and cut at the first space, so
  ``"TP53 (7157)"`` is ``TP53``); :func:`marker_table` the per-gene log fold change of the target
  line against the mean of the others, whose absolute value is the node prize.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import stats
from scipy.sparse import issparse


def read_counts_csv(path: str | Path, cells_in_rows: bool = True) -> ad.AnnData:
    """A counts table (CSV, optionally gzipped; GEO style: first column the IDs) as a cells × genes AnnData."""
    path = Path(path)
    table = pd.read_csv(path, index_col=0)
    if not cells_in_rows:
        table = table.T
    numeric = table.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().to_numpy().any():
        row, column = np.argwhere(numeric.isna().to_numpy())[0]
        raise ValueError(f"{path}: non-numeric count {table.iat[row, column]!r} at cell {table.index[row]!r}, "
                         f"gene {table.columns[column]!r}")
    return ad.AnnData(numeric.to_numpy(np.float32), obs=pd.DataFrame(index=table.index.astype(str)),
                      var=pd.DataFrame(index=table.columns.astype(str)))


def read_single_cell(path: str | Path, cells_in_rows: bool = True) -> ad.AnnData:
    """Single-cell counts from an ``.h5ad`` file (cells × genes) or a counts CSV (see :func:`read_counts_csv`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no single-cell counts file")
    if path.suffix == ".h5ad":
        return ad.read_h5ad(path)
    if path.name.endswith((".csv", ".csv.gz")):
        return read_counts_csv(path, cells_in_rows=cells_in_rows)
    raise ValueError(f"{path}: single-cell counts must be .h5ad or .csv(.gz)")


def read_gene_id_table(path: str | Path) -> pd.Series:
    """Ensembl gene ID → symbol, from the HGNC complete set (columns ``ensembl_gene_id``, ``symbol``).

    A table with exactly two columns (ID, symbol) is read as well. IDs without a symbol are dropped;
    an ID listed twice keeps its first symbol.
    """
    path = Path(path)
    table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    if {"ensembl_gene_id", "symbol"} <= set(table.columns):
        table = table[["ensembl_gene_id", "symbol"]]
    elif table.shape[1] != 2:
        raise ValueError(f"{path}: expected columns 'ensembl_gene_id' and 'symbol' (HGNC complete set) or two "
                         f"columns (ID, symbol), found {list(table.columns)[:6]}")
    table = table.dropna()
    mapping = pd.Series(table.iloc[:, 1].str.strip().to_numpy(), index=table.iloc[:, 0].str.strip().to_numpy())
    return mapping[~mapping.index.duplicated()].rename("symbol")


def map_gene_ids(counts: ad.AnnData, mapping: pd.Series) -> ad.AnnData:
    """Rename the genes of ``counts`` from Ensembl IDs to symbols (method §2.4, step 1–2); a new AnnData.

    Version suffixes (``ENSG00000141510.17``) are ignored; IDs without a symbol are dropped; of genes
    mapped to the same symbol the first is kept. ``var["gene_id"]`` keeps the original ID.
    """
    ids = pd.Index(counts.var_names.astype(str))
    symbols = pd.Series(ids.str.replace(r"\.\d+$", "", regex=True), index=ids).map(mapping)
    keep = symbols.notna().to_numpy() & ~symbols.duplicated().to_numpy()
    if not keep.any():
        raise ValueError(f"none of the {len(ids)} gene IDs (e.g. {ids[0]!r}) is in the ID → symbol table")
    adata = counts[:, keep].copy()
    adata.var["gene_id"] = ids[keep].to_numpy()
    adata.var_names = pd.Index(symbols[keep].astype(str).to_numpy())
    return adata


def preprocess_single_cell(counts: ad.AnnData, *, min_genes: int = 8000, min_cells: int = 10,
                           target_sum: float = 1e6) -> ad.AnnData:
    """The reference's single-cell preprocessing (method §2.4); returns a new AnnData, ``counts`` untouched.

    ``layers["counts"]`` keeps the raw counts of the kept cells and genes; ``X`` is
    ``log1p(counts / total · target_sum)``.
    """
    adata = counts.copy()
    names = pd.Index(adata.var_names.astype(str).str.upper())
    adata = adata[:, ~names.duplicated()].copy()
    adata.var_names = names[~names.duplicated()]
    sc.pp.filter_cells(adata, min_genes=min_genes)
    sc.pp.filter_genes(adata, min_cells=min_cells)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"no cells or genes left after filtering (min_genes={min_genes}, min_cells={min_cells})")
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    return adata


def dense_expression(adata: ad.AnnData) -> np.ndarray:
    """``X`` as a dense float64 cells × genes array."""
    return np.asarray(adata.X.toarray() if issparse(adata.X) else adata.X, dtype=np.float64)


def read_ccle(expression: str | Path, sample_info: str | Path) -> pd.DataFrame:
    """DepMap CCLE expression (rows ``DepMap_ID``) as cell lines (stripped names) × genes (symbols).

    Genes listed twice after cutting the names keep their first column; lines absent from the
    sample info are an error naming them.
    """
    expression, sample_info = Path(expression), Path(sample_info)
    table = pd.read_csv(expression, index_col=0)
    info = pd.read_csv(sample_info)
    missing = sorted({"DepMap_ID", "stripped_cell_line_name"} - set(info.columns))
    if missing:
        raise ValueError(f"{sample_info}: missing columns {missing}")
    names = info.set_index("DepMap_ID")["stripped_cell_line_name"]
    unknown = table.index.difference(names.index)
    if len(unknown):
        raise ValueError(f"{expression}: {len(unknown)} rows are not in {sample_info}, e.g. {unknown[0]!r}")
    table.index = pd.Index(names.loc[table.index].astype(str).to_numpy(), name="cell_line")
    genes = pd.Index(table.columns.astype(str).str.split(" ").str[0].str.upper())
    table = table.loc[:, ~genes.duplicated()]
    table.columns = genes[~genes.duplicated()]
    return table.astype(np.float64)


def marker_table(bulk: pd.DataFrame, target: str = "U2OS") -> pd.DataFrame:
    """Per gene: the target line's expression against the other lines (the reference's ``find_markers``).

    Columns: ``log_fc`` (target minus the mean of the others; the data are log2(TPM+1)),
    ``abs_log_fc``, ``p_value`` (one-sample t-test of the others against the target's value) and
    ``fdr`` (Benjamini–Hochberg). Indexed by gene, sorted by ``abs_log_fc`` from high to low.
    """
    if target not in bulk.index:
        raise KeyError(f"cell line {target!r} is not in the bulk expression ({len(bulk)} lines)")
    if (bulk.index == target).sum() > 1:
        raise ValueError(f"cell line {target!r} appears more than once in the bulk expression")
    others = bulk.drop(index=target)
    if len(others) < 2:
        raise ValueError("the marker table needs at least two other cell lines")
    value = bulk.loc[target]
    log_fc = value - others.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant genes: zero variance
        p_value = stats.ttest_1samp(others.to_numpy(), value.to_numpy(), axis=0).pvalue
    p_value = np.where(np.isnan(p_value), 1.0, p_value)  # constant genes: no evidence
    table = pd.DataFrame({"log_fc": log_fc, "abs_log_fc": log_fc.abs(), "p_value": p_value,
                          "fdr": stats.false_discovery_control(p_value)}, index=bulk.columns)
    return table.rename_axis("gene").sort_values("abs_log_fc", ascending=False, kind="stable")
