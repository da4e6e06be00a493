"""The published metadata of the real screens -> the project's image table, and what it holds.

Readers of the files a user downloads next to the images, in their published formats:

- **Rohban** (Rohban et al. 2017, TA-ORF, U2OS): the reference's per-image table
  ``metadata_image_data.csv`` (the Image_Metadata_* columns of the screen's CellProfiler database, one
  row per field: Hoechst file name, plate, well, site, gene, allele, well role, QC flags), the IDR
  ``idr0033`` ``.screen`` files (every original and illumination-corrected image file per plate, well,
  site and channel), and the publication's list of outlier plates and wells;
- **JUMP** (cpg0016, ``source_4`` ORF plates): the ``well``, ``plate`` and ``orf`` tables of
  jump-cellpainting/datasets, turned into one row per ORF well with its gene and control role (the
  LoadData tables that name the fields are read by :mod:`image2reg.data.cellpainting`);
- a gene list (``screen_genes.txt``: one symbol per line), checked against the screen.

Bad rows are never dropped silently: an unknown plate, a missing file name or a duplicated field is an
error naming the file and row; rows left out on purpose (outliers, wells without an ORF) are returned
in a table of drops with their reason and count, which the reports show.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from image2reg.data.cellpainting import (
    JUMP,
    NEGATIVE_CONTROL,
    ROHBAN_COLUMNS,
    ImageTableError,
    empty_values,
    jump_labels,
    normalize_rohban_metadata,
    validate_image_table,
)

logger = logging.getLogger("image2reg")

#: The six plates of the Rohban TA-ORF screen (IDR idr0033, the reference's metadata).
ROHBAN_PLATES = ("41744", "41749", "41754", "41755", "41756", "41757")

#: The JUMP compound ID of wells that hold nothing.
JUMP_EMPTY_WELL = "JCP2022_999999"

DROP_COLUMNS = ("reason", "n_rows")
"""Columns of every table of drops: why rows were left out, and how many."""


class GeneListError(ValueError):
    """A gene list that does not fit the screen; the message names the file and the genes."""


@dataclass(frozen=True)
class Reading:
    """A table read from published metadata, with the rows left out on purpose.

    Attributes
    ----------
    table
        The rows kept.
    dropped
        One row per reason (:data:`DROP_COLUMNS`): what was left out and how many rows; empty when none.
    """

    table: pd.DataFrame
    dropped: pd.DataFrame


def shown_list(values: Sequence[str], first: int = 5) -> str:
    """The first values of a list for a message or a table cell, and how many there are when some are left out."""
    values = list(values)
    return ", ".join(values[:first]) + (f" ... ({len(values)} in all)" if len(values) > first else "")


def _drops(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(reason, int(n)) for reason, n in counts.items() if n]
    return pd.DataFrame(rows, columns=list(DROP_COLUMNS)).astype({"n_rows": int})


# ---------------------------------------------------------------------------------------------
# Gene lists
# ---------------------------------------------------------------------------------------------
def read_gene_list(path: str | Path) -> list[str]:
    """Gene symbols of a list file: one per line; blank lines and ``#`` comments are skipped.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    GeneListError
        When it lists no gene, or a gene twice (naming the genes and lines).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no gene list at {path}")
    genes, lines = [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        gene = line.split("#", 1)[0].strip()
        if gene:
            lines.setdefault(gene, []).append(number)
            genes.append(gene)
    twice = {gene: where for gene, where in lines.items() if len(where) > 1}
    if twice:
        shown = ", ".join(f"{gene} (lines {', '.join(map(str, where))})" for gene, where in list(twice.items())[:5])
        raise GeneListError(f"{path} lists {len(twice)} gene(s) more than once: {shown}")
    if not genes:
        raise GeneListError(f"{path} lists no gene")
    return genes


def check_gene_list(genes: Sequence[str], conditions: Iterable[str], path: str | Path, *,
                    control: str = NEGATIVE_CONTROL) -> list[str]:
    """The listed genes, after checking that each is a condition of the screen.

    Parameters
    ----------
    genes
        From :func:`read_gene_list`.
    conditions
        The screen's conditions (``Metadata_Gene`` of the image table).
    path
        The list's file, for the message.
    control
        The negative control, which a list of genes to screen must not name.

    Raises
    ------
    GeneListError
        Naming every listed gene absent from the screen (or the control, when listed).
    """
    available = set(conditions)
    absent = [gene for gene in genes if gene not in available]
    if absent:
        raise GeneListError(f"{path}: {len(absent)} of {len(genes)} listed gene(s) are not conditions of the screen: "
                            f"{shown_list(absent, 20)}")
    _refuse_control(genes, control, path)
    return list(genes)


def _refuse_control(genes: Sequence[str], control: str, path: str | Path) -> None:
    if control in genes:
        raise GeneListError(f"{path} lists the control {control!r}: the list names the genes screened against it")


def genes_to_screen(conditions: Iterable[str], constructs: Iterable[str], gene_list: str | Path | None, *,
                    control: str = NEGATIVE_CONTROL) -> tuple[list[str], list[str]]:
    """The genes the specificity screen tests, and the listed ones without nuclei to test.

    Parameters
    ----------
    conditions
        The conditions that have nuclei (``Metadata_Gene`` of stage 01's nucleus table).
    constructs
        Conditions that are control constructs (Luciferase, LacZ, HcRed, ...), never screened by default.
    gene_list
        The screen's gene list (``raw/genesets/screen_genes.txt``); when the file exists only its genes
        are screened. None or a missing file: every condition but the control and the control
        constructs. Either way sorted, so that a list in another order screens the same way.
    control
        The negative control.

    Returns
    -------
    genes, without_nuclei
        The genes to screen; listed genes that have no nucleus (stage 00 checked that every listed gene
        is in the metadata, so these lost all their fields in stage 01).
    """
    conditions = set(conditions)
    if gene_list is None or not Path(gene_list).is_file():
        return sorted(conditions - set(constructs) - {control}), []
    listed = read_gene_list(gene_list)
    _refuse_control(listed, control, gene_list)
    return sorted(g for g in listed if g in conditions), [g for g in listed if g not in conditions]


def gene_overlap(available: Iterable[str], reference: Iterable[str]) -> dict:
    """How many genes of a reference list a screen holds: ``n_reference``, ``n_shared``, ``missing`` (sorted)."""
    available, reference = set(available), list(dict.fromkeys(reference))
    missing = sorted(gene for gene in reference if gene not in available)
    return {"n_reference": len(reference), "n_shared": len(reference) - len(missing), "missing": missing}


def overlap_table(available: Iterable[str], lists: dict[str, Sequence[str] | str]) -> pd.DataFrame:
    """One row per named gene list: ``list``, ``n_reference``, ``n_shared`` and the first ``missing`` genes.

    A list given as a string instead of genes is shown as that note (e.g. "not yet written by ...").
    """
    available = set(available)
    rows = []
    for name, genes in lists.items():
        if isinstance(genes, str):
            rows.append({"list": name, "n_reference": None, "n_shared": None, "missing": genes})
            continue
        overlap = gene_overlap(available, genes)
        rows.append({"list": name, "n_reference": overlap["n_reference"], "n_shared": overlap["n_shared"],
                     "missing": shown_list(overlap["missing"], 15)})
    return pd.DataFrame(rows, columns=["list", "n_reference", "n_shared", "missing"])


def read_gene_table(path: str | Path) -> list[str]:
    """Genes of a list file: a ``.txt`` gene list (:func:`read_gene_list`) or a CSV with a ``gene`` column
    (as the reference's ``all_gene_embeddings_clusters.csv``)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return read_gene_list(path)
    if not path.is_file():
        raise FileNotFoundError(f"no gene table at {path}")
    table = pd.read_csv(path, dtype=str)
    if "gene" not in table:
        raise GeneListError(f"{path} has no 'gene' column (columns: {', '.join(map(str, table.columns))})")
    return list(dict.fromkeys(table["gene"].dropna().str.strip()))


# ---------------------------------------------------------------------------------------------
# Rohban: the reference's per-image metadata, IDR screen files, outliers
# ---------------------------------------------------------------------------------------------
def read_rohban_metadata(path: str | Path, *, plates: Sequence[str] = ROHBAN_PLATES) -> pd.DataFrame:
    """The reference's per-image Rohban table (``metadata_image_data.csv``) as the normalised image table.

    Columns in the Rohban database convention (``Image_Metadata_*``, ``Image_FileName_OrigHoechst``);
    alleles are pooled per gene, ``EMPTY`` is the negative control, the other control constructs
    (Luciferase, LacZ, eGFP: well role ``CTRL``) are named in ``Metadata_ControlType``, and every other
    column is kept as ``Metadata_<name>`` (``Metadata_QCFlag_isBlurry``, ``Metadata_ASSAY_WELL_ROLE``,
    ``Metadata_Count_Nuclei``, ...). Wells are lower-case (``b01``) as in the screen's file names.

    Raises
    ------
    ImageTableError
        Naming the file and the row: missing columns, a plate not in ``plates``, a row without a file
        name, gene or site, a field listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Rohban metadata table at {path}")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in ROHBAN_COLUMNS if c not in header]
    if missing:
        raise ImageTableError(f"{path} is not a Rohban per-image table: it lacks columns {missing}")
    text = {c: str for c in header if c in ("Image_Metadata_Plate", "Image_Metadata_Well", "Image_Metadata_GeneSymbol",
                                             "Image_Metadata_AlleleDesc", "Image_FileName_OrigHoechst")}
    raw = pd.read_csv(path, dtype=text)
    plate = raw["Image_Metadata_Plate"].str.strip()
    unknown = ~plate.isin(plates)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ImageTableError(f"{path}: {int(unknown.sum())} rows name a plate that is not a Rohban plate (first: row "
                              f"{row + 2}, plate {plate.iat[row]!r}; the plates are {', '.join(plates)})")
    empty = empty_values(raw, ROHBAN_COLUMNS)
    if empty is not None:
        count, row, columns = empty
        raise ImageTableError(f"{path}: {count} rows lack {columns} (first: row {row + 2} of the file)")
    raw["Image_Metadata_Well"] = raw["Image_Metadata_Well"].str.strip().str.lower()
    try:
        table = normalize_rohban_metadata(raw)
    except ValueError as error:
        raise ImageTableError(f"{path}: {error}") from error
    validate_image_table(table, path)
    return table


_IDR_FIELD = re.compile(r"Field_(\d+)")
_IDR_CHANNELS = re.compile(r"^(.*)<([^>]*)>(.*)$")


def read_idr_screen(path: str | Path) -> pd.DataFrame:
    """The image files of one IDR ``.screen`` file (idr0033): one row per field, one column per channel.

    An IDR screen file is an INI-like text: a ``[Plate]`` section (``Name``, ``Rows``, ``Columns``,
    ``Fields``) and one ``[Well i]`` section per well with 0-based ``Row``/``Column``, ``ChannelNames``
    and ``Field_k = <path>``, the path holding the channels' files as a pattern
    ``..._w<1<id>,2<id>,...>.tif``.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Plate`` (the plate's name without ``_illum_corrected``), ``Metadata_Well`` (``a01``),
        ``Metadata_Site`` (1-based), and one column ``FileName_<channel>`` per channel (the file's name,
        without its folder).

    Raises
    ------
    ImageTableError
        Naming the file and line of a malformed entry.
    """
    path = Path(path)
    plate, rows, well, channels = None, [], None, None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("["):
            well = {"section": line} if line.startswith("[Well") else None
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        if well is None:
            if key == "Name":
                plate = value.removesuffix("_illum_corrected")
            continue
        if key in ("Row", "Column"):
            well[key] = int(value)
        elif key == "ChannelNames":
            channels = [c.strip() for c in value.split(",")]
        elif _IDR_FIELD.fullmatch(key):
            match = _IDR_CHANNELS.match(value.rsplit("/", 1)[-1])
            if match is None or channels is None or "Row" not in well or "Column" not in well:
                raise ImageTableError(f"{path}, line {number}: not a field entry of a well with Row, Column and "
                                      f"ChannelNames: {line[:120]}")
            stem, items, suffix = match.groups()
            files = [f"{stem}{item}{suffix}" for item in items.split(",")]
            if len(files) != len(channels):
                raise ImageTableError(f"{path}, line {number}: {len(files)} files for {len(channels)} channels")
            row = {"Metadata_Plate": plate,
                   "Metadata_Well": f"{chr(ord('a') + well['Row'])}{well['Column'] + 1:02d}",
                   "Metadata_Site": int(_IDR_FIELD.fullmatch(key)[1]) + 1}
            rows.append(row | {f"FileName_{c}": f for c, f in zip(channels, files)})
    if plate is None or not rows:
        raise ImageTableError(f"{path} is not an IDR screen file (no [Plate] Name or no field entries)")
    return pd.DataFrame(rows)


def attach_idr_file_names(images: pd.DataFrame, screens: Sequence[str | Path], *,
                          channel: str = "Hoechst") -> pd.DataFrame:
    """Add each field's illumination-corrected DNA file (``Metadata_IllumCorrectedFileName``) from IDR.

    ``screens`` are the plates' ``.screen`` files, original and ``_illum_corrected`` ones. The original
    file names must agree with the image table's ``Metadata_FileName``; a field the screens do not name
    is an error, as is a disagreement (both name the first field concerned).
    """
    original, corrected = [], []
    for screen in screens:
        table = read_idr_screen(screen)
        (corrected if Path(screen).stem.endswith("_illum_corrected") else original).append(table)
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    column = f"FileName_{channel}"
    if not original or not corrected:
        raise ImageTableError("IDR screen files of both kinds are needed: <plate>.screen and "
                              "<plate>_illum_corrected.screen")
    idr = (pd.concat(original)[[*keys, column]]
           .merge(pd.concat(corrected)[[*keys, column]].rename(columns={column: "Metadata_IllumCorrectedFileName"}),
                  on=keys, how="left", validate="one_to_one"))
    merged = images.merge(idr, on=keys, how="left", validate="one_to_one")
    absent = merged[column].isna()
    if absent.any():
        first = merged[absent].iloc[0]
        raise ImageTableError(f"{int(absent.sum())} fields are not in the IDR screen files (first: plate "
                              f"{first['Metadata_Plate']}, well {first['Metadata_Well']}, "
                              f"site {first['Metadata_Site']})")
    differ = merged[column] != merged["Metadata_FileName"]
    if differ.any():
        first = merged[differ].iloc[0]
        raise ImageTableError(f"{int(differ.sum())} fields have another {channel} file in IDR than in the image table "
                              f"(first: plate {first['Metadata_Plate']}, well {first['Metadata_Well']}, site "
                              f"{first['Metadata_Site']}: {first[column]} vs {first['Metadata_FileName']})")
    return merged.drop(columns=column)


def read_outlier_list(path: str | Path) -> tuple[list[str], list[str]]:
    """The publication's outlier plates and wells (``manually_selected_outliers_from_publication.txt``).

    Entries are ``<plate>_*`` (a whole plate) or ``<plate>_<well>``; header lines are skipped.

    Returns
    -------
    plates, wells
        As the images params take them: plates ``["41749"]``, wells ``["41755/B01", ...]``.
    """
    plates, wells = [], []
    for line in Path(path).read_text().splitlines():
        match = re.fullmatch(r"\s*(\d+)_(\*|[A-Za-z]{1,2}\d{1,2})\s*", line)
        if match is None:
            continue
        if match[2] == "*":
            plates.append(match[1])
        else:
            wells.append(f"{match[1]}/{match[2]}")
    if not plates and not wells:
        raise ImageTableError(f"{path} names no outlier ('<plate>_*' or '<plate>_<well>' lines)")
    return plates, wells


# ---------------------------------------------------------------------------------------------
# JUMP: ORF wells of source_4
# ---------------------------------------------------------------------------------------------
def jump_orf_wells(well: pd.DataFrame, plate: pd.DataFrame, orf: pd.DataFrame, *,
                   batches: Sequence[str] | None = None, plates: Sequence[str] | None = None) -> Reading:
    """The ORF wells of JUMP ``source_4`` with their gene and control role, one row per well.

    Parameters
    ----------
    well, plate, orf
        The tables of jump-cellpainting/datasets (:func:`image2reg.data.cellpainting.read_jump_metadata`).
    batches, plates
        Only these batches / plate barcodes (default: all ORF plates); an unknown one is an error
        naming the known ones.

    Returns
    -------
    Reading
        ``table``: ``Metadata_Source``, ``Metadata_Batch``, ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_JCP2022``, ``Metadata_Gene`` (the symbol; BFP, the negative control, renamed
        ``EMPTY``), ``Metadata_Allele`` (the clone, ``broad_sample``), ``Metadata_Control``,
        ``Metadata_ControlType`` (BFP → EMPTY, HcRed, LUCIFERASE, LacZ, eGFP) and ``Metadata_pert_type``;
        ``dropped``: the ORF-plate wells with no ORF of the orf table (empty wells, compound controls).
    """
    orf_plates = plate[(plate["Metadata_Source"] == JUMP.source) & (plate["Metadata_PlateType"] == "ORF")]
    for wanted, column, what in ((batches, "Metadata_Batch", "batches"), (plates, "Metadata_Plate", "plates")):
        if wanted:
            known = sorted(orf_plates[column].unique())
            unknown = sorted(set(map(str, wanted)) - set(known))
            if unknown:
                raise ValueError(f"{what} {unknown} hold no {JUMP.source} ORF plate (known: {', '.join(known[:15])}"
                                 f"{' ...' if len(known) > 15 else ''})")
            orf_plates = orf_plates[orf_plates[column].isin(list(map(str, wanted)))]
    wells = well.merge(orf_plates[["Metadata_Source", "Metadata_Batch", "Metadata_Plate"]],
                       on=["Metadata_Source", "Metadata_Plate"], how="inner")
    columns = [c for c in ("Metadata_JCP2022", "Metadata_Symbol", "Metadata_broad_sample", "Metadata_pert_type")
               if c in orf]
    annotated = wells.merge(orf[columns], on="Metadata_JCP2022", how="left", validate="many_to_one")
    no_orf = annotated["Metadata_Symbol"].isna()
    empty = annotated["Metadata_JCP2022"] == JUMP_EMPTY_WELL
    annotated = annotated[~no_orf]
    gene, negative, control_type = jump_labels(annotated["Metadata_Symbol"])
    table = pd.DataFrame({
        "Metadata_Source": annotated["Metadata_Source"], "Metadata_Batch": annotated["Metadata_Batch"],
        "Metadata_Plate": annotated["Metadata_Plate"], "Metadata_Well": annotated["Metadata_Well"],
        "Metadata_JCP2022": annotated["Metadata_JCP2022"], "Metadata_Gene": gene,
        "Metadata_Allele": annotated.get("Metadata_broad_sample"),
        "Metadata_Control": negative.to_numpy(), "Metadata_ControlType": control_type,
        "Metadata_pert_type": annotated.get("Metadata_pert_type"),
    }).sort_values(["Metadata_Batch", "Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    dropped = _drops({f"empty well ({JUMP_EMPTY_WELL})": int((no_orf & empty).sum()),
                      "no ORF of orf.csv (compound controls, IDs the table lacks)": int((no_orf & ~empty).sum())})
    if len(dropped):
        logger.warning("%d of %d wells of the chosen ORF plates hold no ORF and are left out (%s)", int(no_orf.sum()),
                       len(wells), "; ".join(f"{r}: {n}" for r, n in dropped.itertuples(index=False)))
    return Reading(table, dropped)


# ---------------------------------------------------------------------------------------------
# What a screen holds
# ---------------------------------------------------------------------------------------------
def inventory(images: pd.DataFrame, *, outliers: pd.Series | None = None,
              dropped: pd.DataFrame | None = None) -> pd.DataFrame:
    """The inventory of an image table, as a two-column table (``what``, ``value``) for reports.

    Fields, plates, batches, conditions, genes (conditions that are no control), control fields per
    control construct, fields per gene (min–max), well roles, the published QC flags, and the fields
    the outlier list leaves out (``outliers``: one boolean per field) and any rows dropped while reading
    (``dropped``: a table of :data:`DROP_COLUMNS`).
    """
    controls = images["Metadata_ControlType"].fillna("").astype(str)
    genes = images.loc[controls == "", "Metadata_Gene"]
    per_gene = genes.value_counts()
    rows = [("fields of view", len(images)),
            ("plates", images["Metadata_Plate"].nunique())]
    if "Metadata_Batch" in images:
        rows.append(("batches", images["Metadata_Batch"].nunique()))
    rows += [("conditions", images["Metadata_Gene"].nunique()),
             ("genes (not controls)", genes.nunique()),
             ("fields per gene", f"{per_gene.min()}–{per_gene.max()}" if len(per_gene) else "–"),
             ("negative control fields", int(images["Metadata_Control"].sum()))]
    for construct, n in controls[controls != ""].value_counts().sort_index().items():
        rows.append((f"control {construct} fields", int(n)))
    if "Metadata_ASSAY_WELL_ROLE" in images:
        for role, n in images["Metadata_ASSAY_WELL_ROLE"].value_counts().sort_index().items():
            rows.append((f"role {role} fields", int(n)))
    for flag in sorted(c for c in images.columns if c.startswith("Metadata_QCFlag_")):
        flagged = int(pd.to_numeric(images[flag]).sum())
        rows.append((f"published {flag.removeprefix('Metadata_QCFlag_')} flags", flagged))
    if outliers is not None:
        rows.append(("outlier fields left out (params qc.outlier_*)", int(np.asarray(outliers, bool).sum())))
    for reason, n in (dropped.itertuples(index=False) if dropped is not None else ()):
        rows.append((f"dropped: {reason}", int(n)))
    return pd.DataFrame(rows, columns=["what", "value"]).astype({"value": str})


def condition_counts(images: pd.DataFrame) -> pd.DataFrame:
    """Plates, wells and fields of each condition, with its alleles (clones), most fields first."""
    well = images["Metadata_Plate"].astype(str) + "/" + images["Metadata_Well"].astype(str)
    return (images.assign(_well=well).groupby("Metadata_Gene")
            .agg(plates=("Metadata_Plate", "nunique"), wells=("_well", "nunique"), fields=("_well", "size"),
                 alleles=("Metadata_Allele", lambda a: ", ".join(sorted(set(a.dropna().astype(str))))))
            .sort_values(["fields", "wells"], ascending=False, kind="stable"))
