"""A lab's own screen on disk (``source: folder``): DNA images in a folder and a metadata table.

:func:`read_folder_screen` checks everything before anything is written, and turns the user's table
into the normalised image table (:data:`image2reg.data.cellpainting.IMAGE_COLUMNS`) with the image
paths absolute, so that nothing is copied; :func:`link_inputs` links the optional inputs (interactome,
expression, gene sets, gene list) into the raw folder under the names the later stages read. Each
problem is an error that names the file, the column or the rows, and the ones that exist:

- a missing metadata table, images folder or image file (the count, and the first few named);
- a mapped column the table does not have (with the columns it has);
- a field listed twice, an empty key;
- a control label that matches no row;
- genes with fewer fields than the folds of the run;
- a gene list naming a gene the screen does not have.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from image2reg.config import FolderParams
from image2reg.data.cellpainting import (
    NEGATIVE_CONTROL,
    ImageTableError,
    empty_values,
    finish_image_table,
    validate_image_table,
)
from image2reg.data.metadata import GeneListError, check_gene_list, read_gene_list, shown_list
from image2reg.layout import RAW_FILES, RawLayout, resolve_path

logger = logging.getLogger("image2reg")

#: Optional inputs of a folder screen -> where the later stages read them in the raw folder.
LINKED_INPUTS = {"ppi": RAW_FILES["ppi"], "bulk_expression": RAW_FILES["bulk_expression"],
                 "bulk_sample_info": RAW_FILES["bulk_sample_info"], "gene_sets": RAW_FILES["genesets"],
                 "gene_list": RAW_FILES["screen_genes"]}
SINGLE_CELL_STEM = RAW_FILES["scrnaseq"].removesuffix(".h5ad")


class FolderScreenError(ValueError):
    """A folder screen that cannot be used; the message names the file, the columns or the rows."""


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FolderScreenError(f"no metadata table at {path}")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path).astype(str).replace({"None": np.nan, "nan": np.nan, "<NA>": np.nan})
        return pd.read_csv(path, dtype=str, sep=None, engine="python")
    except (ValueError, OSError) as error:
        raise FolderScreenError(f"cannot read the metadata table {path}: {error}") from error


def read_folder_screen(params: FolderParams, base: str | Path, *, folds: int) -> pd.DataFrame:
    """The normalised image table of a folder screen, after checking every field and column.

    Parameters
    ----------
    params
        The ``data.folder`` block.
    base
        The folder relative paths in ``params`` start from (the params file's folder).
    folds
        The run's folds: every gene needs at least this many fields, one per fold's test part.

    Returns
    -------
    pandas.DataFrame
        :data:`~image2reg.data.cellpainting.IMAGE_COLUMNS` (``Metadata_PathName`` absolute), the extra
        columns, and ``Metadata_MaskPathName`` when masks are given. The negative-control labels
        become ``EMPTY`` (their label is kept in ``Metadata_ControlType``).

    Raises
    ------
    FolderScreenError
        For each problem listed in the module's docstring.
    """
    base = Path(base)
    metadata_path = resolve_path(params.metadata, base)
    images_dir = resolve_path(params.images, base)
    if not images_dir.is_dir():
        raise FolderScreenError(f"the images folder {images_dir} does not exist")
    table = _read_table(metadata_path)
    columns = params.columns
    mapped = {"file": columns.file, "plate": columns.plate, "well": columns.well, "site": columns.site,
              "perturbation": columns.perturbation, "allele": columns.allele}
    wanted = [c for c in (*mapped.values(), *columns.extra) if c is not None]
    absent = [c for c in wanted if c not in table.columns]
    if absent:
        raise FolderScreenError(f"{metadata_path} has no column(s) {absent} named in data.folder.columns; its columns "
                                f"are: {', '.join(map(str, table.columns))}")
    keys = [c for c in (columns.file, columns.plate, columns.well, columns.site, columns.perturbation) if c]
    empty = empty_values(table, keys)
    if empty is not None:
        count, row, missing = empty
        raise FolderScreenError(f"{metadata_path}: {count} rows lack a value in {missing} "
                                f"(first: row {row + 2} of the file)")
    site = (pd.to_numeric(table[columns.site], errors="coerce") if columns.site
            else pd.Series(1, index=table.index))
    if site.isna().any():
        row = int(np.flatnonzero(site.isna())[0])
        raise FolderScreenError(f"{metadata_path}: column {columns.site!r} holds a value that is not a site number "
                                f"(row {row + 2}: {table[columns.site].iat[row]!r})")
    label = table[columns.perturbation].astype(str).str.strip()
    unmatched = [c for c in (*params.controls, *params.other_controls) if c not in set(label)]
    if unmatched:
        present = sorted(set(label))
        raise FolderScreenError(f"{metadata_path}: control label(s) {unmatched} match no row of column "
                                f"{columns.perturbation!r} (its values: {shown_list(present)})")
    negative = label.isin(params.controls)
    files = table[columns.file].astype(str).str.strip()
    paths = [str(resolve_path(name, images_dir)) for name in files]
    normalized = pd.DataFrame({
        "Metadata_Plate": table[columns.plate].astype(str).str.strip(),
        "Metadata_Well": table[columns.well].astype(str).str.strip(),
        "Metadata_Site": site.astype(int),
        "Metadata_Gene": label.where(~negative, NEGATIVE_CONTROL),
        "Metadata_Allele": table[columns.allele] if columns.allele else np.nan,
        "Metadata_Control": negative.to_numpy(),
        "Metadata_ControlType": label.where(negative | label.isin(params.other_controls)),
        "Metadata_FileName": files.map(lambda name: Path(name).name),
        "Metadata_PathName": paths,
    })
    for column in columns.extra:
        normalized[f"Metadata_{column}"] = table[column].to_numpy()
    if params.masks is not None:
        masks_dir = resolve_path(params.masks, base)
        normalized["Metadata_MaskPathName"] = [str(resolve_path(name, masks_dir)) for name in files]
    try:
        normalized = finish_image_table(normalized)
        validate_image_table(normalized, metadata_path)
    except (ImageTableError, ValueError) as error:
        raise FolderScreenError(str(error)) from error
    _check_files(normalized["Metadata_PathName"], f"image files of {metadata_path} under {images_dir}")
    if params.masks is not None:
        _check_files(normalized["Metadata_MaskPathName"], f"mask files under {resolve_path(params.masks, base)}")
    genes = normalized.loc[normalized["Metadata_ControlType"].isna(), "Metadata_Gene"]
    per_gene = genes.value_counts()
    few = per_gene[per_gene < folds]
    if len(few):
        raise FolderScreenError(f"{len(few)} gene(s) have fewer fields than the run's {folds} folds (each fold tests "
                                f"on its own fields): {shown_list([f'{g} ({n})' for g, n in few.items()])}")
    if not normalized["Metadata_Control"].any():
        raise FolderScreenError(f"{metadata_path}: no field of the negative control {params.controls}")
    if params.gene_list is not None:  # checked here, before stage 00 writes anything
        listed_path = resolve_path(params.gene_list, base)
        try:
            check_gene_list(read_gene_list(listed_path), normalized["Metadata_Gene"], listed_path)
        except (GeneListError, FileNotFoundError) as error:
            raise FolderScreenError(f"data.folder.gene_list: {error}") from error
    return normalized


def _check_files(paths: pd.Series, what: str) -> None:
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FolderScreenError(f"{len(missing)} of {len(paths)} {what} are missing: {shown_list(missing)}")


def link_inputs(params: FolderParams, base: str | Path, raw: RawLayout) -> dict[str, Path]:
    """Link the screen's optional inputs into ``raw`` under the names the later stages read.

    Symbolic links, made atomically (a temporary link renamed into place): the user's files are neither
    copied nor changed. A given file that does not exist is an error naming the key and the file.

    Returns
    -------
    dict
        Key -> the link made.
    """
    base = Path(base)
    targets = {key: (relative, getattr(params, key)) for key, relative in LINKED_INPUTS.items()}
    if params.single_cell is not None:
        suffix = ".h5ad" if params.single_cell.endswith(".h5ad") else ".csv.gz" if params.single_cell.endswith(".gz") \
            else ".csv"
        targets["single_cell"] = (SINGLE_CELL_STEM + suffix, params.single_cell)
    sources = {key: (relative, resolve_path(value, base)) for key, (relative, value) in targets.items()
               if value is not None}
    absent = [f"data.folder.{key}: {source} does not exist" for key, (_, source) in sources.items()
              if not source.is_file()]
    if absent:  # every input is checked before the first link is made
        raise FolderScreenError("; ".join(absent))
    links = {}
    for key, (relative, source) in sources.items():
        link = raw.root / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f".{link.name}.link")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(source)
        os.replace(temporary, link)
        links[key] = link
    return links
