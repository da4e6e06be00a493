"""Cell Painting Gallery screens (Rohban cpg0017, JUMP cpg0016): what to fetch, fetching it, one image table.

The gallery is the public S3 bucket ``s3://cellpainting-gallery`` (us-east-1, read without credentials).
Its projects share one layout (the gallery's ``data_structure`` documentation)::

    <project>/<source>/images/<batch>/images/<plate folder>/[Images/]<field image>
    <project>/<source>/images/<batch>/illum/<plate>/<plate>_Illum<Channel>.npy
    <project>/<source>/workspace/load_data_csv/<batch>/<plate>/load_data_with_illum.{parquet,csv.gz,csv}
    <project>/<source>/workspace/metadata/platemaps/<batch>/barcode_platemap.csv, platemap/<map>.txt

``cpg0017-rohban-pathways/broad`` holds the Rohban et al. (2017) TA-ORF plates of batch
``2013_10_11_SIGMA2_Pilot``, annotated by their platemaps. ``cpg0016-jump/source_4`` holds the JUMP ORF
plates, annotated by the ``well``, ``plate`` and ``orf`` tables of github.com/jump-cellpainting/datasets.
The LoadData tables name every field's images; only the DNA (Hoechst) image and its illumination
function are fetched, into ``raw/images/<plate>/<file>`` and ``raw/illum/<plate>/<file>``.

Whatever the source, the fields end up in one table with the columns of :data:`IMAGE_COLUMNS`, written
to ``raw/metadata/images.csv``. :func:`read_image_table` reads it back, and reads the Rohban database
convention (``Image_Metadata_*``, as the synthetic world writes it) as well.

Why one module of ~1000 lines: the gallery's layout constants, the LoadData and platemap readers, the
resumable S3 downloader and the normalised image table are one format's code; they share the column
names and path rules above, and the tests exercise them together against the real files in ``../shared``
and a local S3 server.
"""

from __future__ import annotations

import argparse
import io
import logging
import posixpath
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import urllib3
from tqdm import tqdm

from image2reg.layout import RawLayout, atomic_path

logger = logging.getLogger("image2reg")

BUCKET = "cellpainting-gallery"
REGION = "us-east-1"
NEGATIVE_CONTROL = "EMPTY"
JUMP_METADATA_SOURCE = "https://github.com/jump-cellpainting/datasets/tree/main/metadata"

IMAGE_COLUMNS = (
    "Metadata_Plate",         # plate barcode (str)
    "Metadata_Well",          # well as the screen names it (Rohban: a01, JUMP: A01)
    "Metadata_Site",          # field of view within the well (int, from 1)
    "Metadata_Gene",          # the condition: gene symbol, alleles pooled; EMPTY for the negative control
    "Metadata_Allele",        # Rohban allele (WT.1, V600E, ...) or JUMP ORF clone (broad_sample); may be empty
    "Metadata_Control",       # True for the negative control (Rohban EMPTY, JUMP BFP renamed EMPTY)
    "Metadata_ControlType",   # name of any control construct (EMPTY, LacZ, Luciferase, HcRed, ...), else empty
    "Metadata_FileName",      # the DNA image's file name
    "Metadata_PathName",      # the DNA image, relative to the raw folder: images/<plate>/<file>
)
"""Columns every normalised image table has, in this order; others (``Metadata_Batch``, QC flags, ...) follow."""

ROHBAN_COLUMNS = ("Image_Metadata_Plate", "Image_Metadata_Well", "Image_Metadata_Site",
                  "Image_FileName_OrigHoechst", "Image_Metadata_GeneSymbol")
"""Columns a table in the Rohban database convention needs to be read as an image table."""

_ROHBAN_RENAME = {"Image_Metadata_Plate": "Metadata_Plate", "Image_Metadata_Well": "Metadata_Well",
                  "Image_Metadata_Site": "Metadata_Site", "Image_Metadata_GeneSymbol": "Metadata_Gene",
                  "Image_Metadata_AlleleDesc": "Metadata_Allele", "Image_FileName_OrigHoechst": "Metadata_FileName"}
_ROHBAN_CONTROLS = ("EMPTY", "Luciferase", "LacZ")
_ROHBAN_CONTROL_ROLES = ("Untreated", "CTRL")
JUMP_CONTROLS = ("BFP", "HcRed", "LUCIFERASE", "LacZ", "eGFP")
JUMP_NEGATIVE_CONTROL = "BFP"
_JUMP_CONTROL_PERT_TYPES = ("negcon", "poscon", "control")
_DNA_CHANNELS = ("DNA", "Hoechst")  # LoadData channel names of the DNA stain: JUMP pipelines, Rohban database
_LOAD_DATA_FILES = ("load_data_with_illum.parquet", "load_data_with_illum.csv.gz", "load_data_with_illum.csv",
                    "load_data.parquet", "load_data.csv.gz", "load_data.csv")
_SUBSET_KEYS = ("plates", "genes", "max_fields")
_S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_CHUNK = 1 << 20

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class DownloadError(RuntimeError):
    """The gallery could not be reached or files could not be fetched.

    ``failures`` lists ``(key, reason)`` for each file that failed (empty when nothing was tried).
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.failures = list(failures)


class ImageTableError(ValueError):
    """An image table that cannot be used; the message names the file and what is wrong."""


class _TransientError(Exception):
    """A failure that may pass: a dropped connection, a timeout, a 5xx or throttling answer."""


class _PermanentError(Exception):
    """A failure that will not pass by retrying: a missing object, a refused request, a wrong size."""


# ---------------------------------------------------------------------------------------------
# The bucket
# ---------------------------------------------------------------------------------------------
class GallerySource:
    """Unsigned, read-only access to a public S3 bucket (the S3 REST API over HTTPS).

    Plain REST over urllib3 rather than boto3: two unsigned calls (ListObjectsV2, GET) are all that is
    needed, and urllib3 is already installed, whereas boto3 would add the AWS SDK to every install.

    Parameters
    ----------
    bucket
        Bucket name.
    endpoint_url
        An S3-compatible server to use instead of AWS (e.g. ``http://127.0.0.1:5000`` for a local test
        server), addressed path-style (``<endpoint>/<bucket>/<key>``).
    region
        AWS region of the bucket (used only without ``endpoint_url``).
    connect_timeout, read_timeout
        Seconds to wait for a connection, and for each read once connected. A short connect timeout
        makes an unreachable gallery fail in seconds.
    max_connections
        Connections kept open per host (one per download thread is enough).
    """

    def __init__(self, bucket: str = BUCKET, *, endpoint_url: str | None = None, region: str = REGION,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, max_connections: int = 16):
        self.bucket = bucket
        self.endpoint = endpoint_url.rstrip("/") if endpoint_url else f"https://s3.{region}.amazonaws.com"
        self._base = (f"{self.endpoint}/{quote(bucket)}" if endpoint_url
                      else f"https://{bucket}.s3.{region}.amazonaws.com")
        self._http = urllib3.PoolManager(
            maxsize=max_connections, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))

    def __repr__(self) -> str:
        return f"GallerySource(s3://{self.bucket} via {self.endpoint})"

    def describe(self) -> str:
        return f"s3://{self.bucket} ({self.endpoint})"

    def url(self, key: str) -> str:
        """The ``s3://`` address of an object (what LoadData tables and image tables record)."""
        return f"s3://{self.bucket}/{key}"

    def check(self, prefix: str = "") -> None:
        """Raise :class:`DownloadError` at once when the bucket cannot be listed (no retries)."""
        try:
            self._list_page(prefix, None, max_keys=1)
        except (_TransientError, _PermanentError) as error:
            raise DownloadError(f"cannot reach {self.describe()}: {error}") from None

    def list(self, prefix: str) -> dict[str, int]:
        """Every object whose key starts with ``prefix``: key -> size in bytes."""
        objects: dict[str, int] = {}
        token = None
        while True:
            page = _retrying(partial(self._list_page, prefix, token), f"listing {self.url(prefix)}")
            objects.update(page["objects"])
            token = page["token"]
            if token is None:
                return objects

    def read(self, key: str) -> bytes:
        """The content of a (small) object."""
        return _retrying(lambda: self._get(key).data, f"reading {self.url(key)}")

    def fetch(self, key: str, target: Path, size: int, on_bytes: Callable[[int], None]) -> None:
        """Stream an object of ``size`` bytes into ``target`` (written atomically); ``on_bytes`` sees progress.

        A transfer cut short raises :class:`_TransientError` after taking back its progress; an object
        whose size differs from ``size`` raises :class:`_PermanentError` before anything is written.
        """
        response = self._get(key, stream=True)
        written = 0
        try:
            announced = response.headers.get("Content-Length")
            if announced is not None and int(announced) != size:
                raise _PermanentError(f"size mismatch: the server sends {int(announced)} bytes, the plan expects "
                                      f"{size} (the object changed since planning; plan again)")
            with atomic_path(target) as tmp, open(tmp, "wb") as out:
                for chunk in response.stream(_CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    on_bytes(len(chunk))
                if written != size:
                    raise _PermanentError(f"size mismatch: received {written} bytes, the plan expects {size}")
        except (urllib3.exceptions.HTTPError, _PermanentError, OSError) as error:
            on_bytes(-written)
            response.close()  # unread data may remain: the connection must not be reused
            if isinstance(error, urllib3.exceptions.HTTPError):
                raise _TransientError(f"transfer interrupted after {written} of {size} bytes: {error}") from None
            raise
        finally:
            response.release_conn()

    def _get(self, key: str, stream: bool = False) -> urllib3.BaseHTTPResponse:
        response = self._request("GET", f"{self._base}/{quote(key)}", stream)
        if response.status != 200:
            raise _error_for(response)
        return response

    def _list_page(self, prefix: str, token: str | None, max_keys: int = 1000) -> dict:
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
        if token:
            query["continuation-token"] = token
        response = self._request("GET", f"{self._base}/?{urlencode(query, quote_via=quote, safe='')}", stream=False)
        if response.status != 200:
            raise _error_for(response)
        root = ElementTree.fromstring(response.data)
        ns = _S3_NAMESPACE if root.tag.startswith(_S3_NAMESPACE) else ""
        objects = {item.findtext(f"{ns}Key"): int(item.findtext(f"{ns}Size")) for item in root.iter(f"{ns}Contents")}
        truncated = root.findtext(f"{ns}IsTruncated") == "true"
        return {"objects": objects, "token": root.findtext(f"{ns}NextContinuationToken") if truncated else None}

    def _request(self, method: str, url: str, stream: bool) -> urllib3.BaseHTTPResponse:
        try:
            # raw bytes: an object stored with a Content-Encoding must arrive with its listed size
            return self._http.request(method, url, preload_content=not stream, decode_content=False, redirect=False)
        except urllib3.exceptions.HTTPError as error:
            raise _TransientError(f"{type(error).__name__}: {error}") from None


def _error_for(response: urllib3.BaseHTTPResponse) -> Exception:
    body = response.data if response.data is not None else b""
    code = ""
    try:
        code = ElementTree.fromstring(body).findtext("Code") or ""
    except ElementTree.ParseError:
        pass
    reason = f"HTTP {response.status}{' ' + code if code else ''}"
    response.release_conn()
    if response.status == 404:
        return _PermanentError(f"not found ({reason})")
    if response.status == 429 or response.status >= 500:
        return _TransientError(reason)
    return _PermanentError(f"refused ({reason})")


def _retrying(action: Callable[[], T], what: str, attempts: int = 4, backoff: float = 0.5) -> T:
    """Run ``action``, retrying transient failures with exponential backoff; raise DownloadError at the end."""
    attempt = 1
    while True:
        try:
            return action()
        except _TransientError as error:
            if attempt >= attempts:
                raise DownloadError(f"{what} failed after {attempts} attempts: {error}") from None
        except _PermanentError as error:
            raise DownloadError(f"{what}: {error}") from None
        time.sleep(backoff * 2 ** (attempt - 1))
        attempt += 1


# ---------------------------------------------------------------------------------------------
# Datasets in the gallery
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GalleryDataset:
    """Where one screen lives in the gallery."""

    name: str
    project: str
    source: str

    @property
    def prefix(self) -> str:
        return f"{self.project}/{self.source}"

    def images_prefix(self, batch: str, plate: str) -> str:
        """Prefix of a plate's image folder. No trailing slash: the folder may be named
        ``<plate>__<acquisition time>`` (JUMP) and hold the images in an ``Images/`` subfolder."""
        return f"{self.prefix}/images/{batch}/images/{plate}"

    def illum_prefix(self, batch: str, plate: str) -> str:
        return f"{self.prefix}/images/{batch}/illum/{plate}/"

    def load_data_prefix(self, batch: str, plate: str) -> str:
        return f"{self.prefix}/workspace/load_data_csv/{batch}/{plate}/"

    def platemaps_prefix(self, batch: str) -> str:
        return f"{self.prefix}/workspace/metadata/platemaps/{batch}/"


ROHBAN = GalleryDataset("rohban", "cpg0017-rohban-pathways", "broad")
ROHBAN_BATCH = "2013_10_11_SIGMA2_Pilot"
JUMP = GalleryDataset("jump", "cpg0016-jump", "source_4")
DATASETS = {dataset.name: dataset for dataset in (ROHBAN, JUMP)}


def read_table(source: GallerySource, key: str) -> pd.DataFrame:
    """A CSV (plain or gzipped), tab-separated ``.txt`` or parquet object as a table (all columns as text)."""
    content = io.BytesIO(source.read(key))
    if key.endswith(".parquet"):
        return pd.read_parquet(content).astype(str).replace({"None": np.nan, "nan": np.nan})
    return pd.read_csv(content, dtype=str, sep="\t" if key.endswith(".txt") else ",",
                       compression="gzip" if key.endswith(".gz") else None)


def read_load_data(source: GallerySource, dataset: GalleryDataset, batch: str, plate: str) -> pd.DataFrame:
    """The LoadData table of one plate, preferring the one that names illumination functions."""
    prefix = dataset.load_data_prefix(batch, plate)
    present = {posixpath.basename(key) for key in source.list(prefix)}
    for name in _LOAD_DATA_FILES:
        if name in present:
            return read_table(source, prefix + name)
    raise DownloadError(f"no LoadData table for plate {plate} under {source.url(prefix)} "
                        f"(looked for {', '.join(_LOAD_DATA_FILES)}; found {sorted(present) or 'nothing'})")


def read_jump_metadata(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ``well``, ``plate`` and ``orf`` tables of jump-cellpainting/datasets, from a local folder.

    Each is read from ``<name>.csv.gz`` (or ``<name>.csv``), all columns as text.
    """
    folder = Path(folder)
    tables, missing = [], []
    for name in ("well", "plate", "orf"):
        path = next((p for p in (folder / f"{name}.csv.gz", folder / f"{name}.csv") if p.is_file()), None)
        if path is None:
            missing.append(f"{name}.csv.gz")
        else:
            tables.append(pd.read_csv(path, dtype=str))
    if missing:
        raise FileNotFoundError(f"JUMP metadata missing in {folder}: {', '.join(missing)}; get them from "
                                f"{JUMP_METADATA_SOURCE} (directory metadata/)")
    well, plate, orf = tables
    return well, plate, orf


# ---------------------------------------------------------------------------------------------
# Metadata: LoadData tables, platemaps and JUMP tables -> one image table
# ---------------------------------------------------------------------------------------------
def load_data_fields(load_data: pd.DataFrame) -> pd.DataFrame:
    """Plate, well, site and the DNA image (with its illumination function, if named) of each field.

    Parameters
    ----------
    load_data
        A CellProfiler LoadData table: ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` and
        ``FileName_Orig<DNA>`` / ``PathName_Orig<DNA>`` (DNA channel called ``DNA`` or ``Hoechst``),
        optionally ``FileName_Illum<DNA>`` / ``PathName_Illum<DNA>``.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``, ``Metadata_FileName``,
        ``Metadata_ImageURL`` (the ``s3://`` address where the table gives one, else empty) and, with
        illumination, ``Metadata_IllumFileName`` and ``Metadata_IllumURL``.
    """
    channel = next((c for c in _DNA_CHANNELS if f"FileName_Orig{c}" in load_data), None)
    missing = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c not in load_data]
    if channel is None:
        missing.append(" or ".join(f"FileName_Orig{c}" for c in _DNA_CHANNELS))
    if missing:
        raise ImageTableError(f"not a LoadData table with a DNA channel: it lacks {missing}")
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", f"FileName_Orig{channel}"]
    empty = empty_values(load_data, keys)
    if empty is not None:
        count, row, columns = empty
        raise ImageTableError(f"LoadData table: {count} rows lack {columns} (first: row {row} of the table, plate "
                              f"{load_data['Metadata_Plate'].iat[row]}, well {load_data['Metadata_Well'].iat[row]})")
    twice = load_data.duplicated(keys[:3])
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        raise ImageTableError(f"LoadData table: {int(twice.sum())} fields appear twice (first: row {row}, plate "
                              f"{load_data['Metadata_Plate'].iat[row]}, well {load_data['Metadata_Well'].iat[row]}, "
                              f"site {load_data['Metadata_Site'].iat[row]})")
    fields = pd.DataFrame({
        "Metadata_Plate": load_data["Metadata_Plate"].astype(str).to_numpy(),
        "Metadata_Well": load_data["Metadata_Well"].astype(str).to_numpy(),
        "Metadata_Site": pd.to_numeric(load_data["Metadata_Site"]).astype(int).to_numpy(),
        "Metadata_FileName": load_data[f"FileName_Orig{channel}"].astype(str).to_numpy(),
        "Metadata_ImageURL": _s3_urls(load_data.get(f"PathName_Orig{channel}"), load_data[f"FileName_Orig{channel}"]),
    })
    if f"FileName_Illum{channel}" in load_data:
        fields["Metadata_IllumFileName"] = load_data[f"FileName_Illum{channel}"].to_numpy(dtype=object)
        fields["Metadata_IllumURL"] = _s3_urls(load_data.get(f"PathName_Illum{channel}"),
                                               load_data[f"FileName_Illum{channel}"])
    return fields


def _s3_urls(folders: pd.Series | None, names: pd.Series) -> np.ndarray:
    """``s3://`` addresses from LoadData folder + file name; empty where the folder is a local path."""
    if folders is None:
        return np.full(len(names), np.nan, dtype=object)
    folders = folders.astype(str)
    urls = folders.str.rstrip("/") + "/" + names.astype(str)
    return urls.where(folders.str.startswith("s3://"), np.nan).to_numpy(dtype=object)


def rohban_gallery_metadata(load_data: pd.DataFrame, barcode_platemap: pd.DataFrame,
                            platemaps: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The fields of cpg0017 plates in the Rohban database convention (``Image_Metadata_*``).

    Parameters
    ----------
    load_data
        LoadData table(s) of the plates (see :func:`load_data_fields`).
    barcode_platemap
        ``Assay_Plate_Barcode`` -> ``Plate_Map_Name``.
    platemaps
        Platemap name -> table with ``well_position``, ``gene_name``, ``pert_name`` (``<gene>_<allele>``)
        and optionally ``broad_sample``, ``ASSAY_WELL_ROLE``, ``GeneID``.

    Returns
    -------
    pandas.DataFrame
        One row per field, ready for :func:`normalize_rohban_metadata`; fields of wells missing from the
        platemap are dropped with a warning.
    """
    fields = load_data_fields(load_data)
    plate_maps = barcode_platemap.astype(str).set_index("Assay_Plate_Barcode")["Plate_Map_Name"]
    unknown = sorted(set(fields["Metadata_Plate"]) - set(plate_maps.index))
    if unknown:
        raise ValueError(f"plates {unknown} are not in the barcode platemap")
    wells = pd.concat([table.assign(Plate_Map_Name=name) for name, table in platemaps.items()], ignore_index=True)
    wells["_well"] = wells["well_position"].str.lower()
    fields["Plate_Map_Name"] = fields["Metadata_Plate"].map(plate_maps)
    fields["_well"] = fields["Metadata_Well"].str.lower()
    merged = fields.merge(wells, on=["Plate_Map_Name", "_well"], how="left", validate="many_to_one")
    unmapped = merged["gene_name"].isna()
    if unmapped.any():
        logger.warning("%d fields lie in wells missing from the platemap and are dropped", int(unmapped.sum()))
        merged = merged[~unmapped]
    gene = merged["gene_name"].astype(str)
    pert = merged["pert_name"].fillna("").astype(str)
    allele = [p[len(g) + 1:] if p.startswith(f"{g}_") else p for g, p in zip(gene, pert)]
    table = pd.DataFrame({
        "Image_Metadata_Plate": merged["Metadata_Plate"].to_numpy(),
        "Image_Metadata_Well": merged["Metadata_Well"].to_numpy(),
        "Image_Metadata_Site": merged["Metadata_Site"].to_numpy(),
        "Image_FileName_OrigHoechst": merged["Metadata_FileName"].to_numpy(),
        "Image_Metadata_GeneSymbol": gene.to_numpy(),
        "Image_Metadata_AlleleDesc": allele,
    })
    for column in ("ASSAY_WELL_ROLE", "GeneID", "broad_sample"):
        if column in merged:
            table[f"Image_Metadata_{column}"] = merged[column].to_numpy()
    for column in ("Metadata_ImageURL", "Metadata_IllumFileName", "Metadata_IllumURL"):
        if column in merged:
            table[column] = merged[column].to_numpy()
    return table


def normalize_rohban_metadata(table: pd.DataFrame) -> pd.DataFrame:
    """An image table in the Rohban database convention -> the normalised table (:data:`IMAGE_COLUMNS`).

    Used for the synthetic world, the IDR/Rohban database export and cpg0017 (via
    :func:`rohban_gallery_metadata`). Alleles of a gene are pooled: ``Metadata_Gene`` is the gene symbol,
    ``Metadata_Allele`` keeps the allele. ``EMPTY`` is the negative control; ``Luciferase`` and ``LacZ``
    (and wells with the ``Untreated``/``CTRL`` role) are other controls. Every other column is kept,
    renamed to ``Metadata_<name without Image_ / Image_Metadata_>`` (e.g. the QC flags become
    ``Metadata_QCFlag_isBlurry``).
    """
    _require(table, ROHBAN_COLUMNS, "Rohban (Image_Metadata_*) image table")
    gene = table["Image_Metadata_GeneSymbol"].astype(str).str.strip()
    control_type = gene.where(gene.isin(_ROHBAN_CONTROLS))
    if "Image_Metadata_ASSAY_WELL_ROLE" in table:
        role = table["Image_Metadata_ASSAY_WELL_ROLE"]
        control_type = control_type.fillna(gene.where(role.isin(_ROHBAN_CONTROL_ROLES)))
    normalized = table.rename(columns=_ROHBAN_RENAME)
    normalized["Metadata_Gene"] = gene
    if "Metadata_Allele" not in normalized:
        normalized["Metadata_Allele"] = np.nan
    normalized["Metadata_Control"] = gene == NEGATIVE_CONTROL
    normalized["Metadata_ControlType"] = control_type
    renamed = {c: _metadata_name(c) for c in normalized.columns if not c.startswith("Metadata_")}
    return finish_image_table(normalized.rename(columns=renamed))


def _metadata_name(column: str) -> str:
    return "Metadata_" + column.removeprefix("Image_").removeprefix("Metadata_")


def normalize_jump_metadata(load_data: pd.DataFrame, well: pd.DataFrame, plate: pd.DataFrame,
                            orf: pd.DataFrame) -> pd.DataFrame:
    """JUMP LoadData table(s) + the jump-cellpainting/datasets tables -> the normalised image table.

    Fields are joined to their well (``Metadata_Plate``, ``Metadata_Well`` -> ``Metadata_JCP2022``), plate
    (``Metadata_Source``, ``Metadata_Plate`` -> ``Metadata_Batch``) and ORF (``Metadata_JCP2022`` ->
    ``Metadata_Symbol``, ``Metadata_broad_sample``); fields whose well holds no ORF are dropped.
    BFP is the negative control and is renamed ``EMPTY``; HcRed, LUCIFERASE, LacZ, eGFP (and ORFs typed
    ``negcon``/``poscon``/``control``) are other controls, named in ``Metadata_ControlType``. Clones of a
    gene are pooled: ``Metadata_Gene`` is the symbol, ``Metadata_Allele`` the clone (``broad_sample``).
    """
    fields = load_data_fields(load_data)
    _require(well, ("Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022"), "JUMP well table")
    _require(plate, ("Metadata_Source", "Metadata_Batch", "Metadata_Plate"), "JUMP plate table")
    _require(orf, ("Metadata_JCP2022", "Metadata_Symbol"), "JUMP orf table")
    unknown = sorted(set(fields["Metadata_Plate"]) - set(plate["Metadata_Plate"].astype(str)))
    if unknown:
        raise ImageTableError(f"the LoadData table names plates that the JUMP plate table does not know: {unknown} "
                              f"(a newer plate table from {JUMP_METADATA_SOURCE} may have them)")
    wells = well[["Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022"]].astype(str)
    wells = wells.assign(_well=wells["Metadata_Well"].str.upper()).drop(columns="Metadata_Well")
    annotated = (fields.assign(_well=fields["Metadata_Well"].str.upper())
                 .merge(wells, on=["Metadata_Plate", "_well"], how="left", validate="many_to_one")
                 .drop(columns="_well"))
    plates = plate[["Metadata_Source", "Metadata_Batch", "Metadata_Plate"]].astype(str)
    annotated = annotated.merge(plates, on=["Metadata_Source", "Metadata_Plate"], how="left", validate="many_to_one")
    orf_columns = [c for c in ("Metadata_JCP2022", "Metadata_Symbol", "Metadata_Name", "Metadata_broad_sample",
                               "Metadata_pert_type") if c in orf]
    annotated = annotated.merge(orf[orf_columns], on="Metadata_JCP2022", how="inner", validate="many_to_one")
    if len(annotated) < len(fields):
        left_out = fields[~fields["Metadata_Plate"].isin(annotated["Metadata_Plate"])]["Metadata_Plate"].unique()
        logger.warning("%d of %d fields are not in ORF wells (no well entry, compounds, empty) and are left out%s",
                       len(fields) - len(annotated), len(fields),
                       f"; plates without any ORF well: {', '.join(sorted(left_out))}" if len(left_out) else "")

    label = annotated["Metadata_Symbol"]
    if "Metadata_Name" in annotated:
        label = label.fillna(annotated["Metadata_Name"])
    gene, negative, control_type = jump_labels(label, annotated.get("Metadata_pert_type"))
    annotated["Metadata_Gene"] = gene
    annotated["Metadata_Allele"] = annotated.get("Metadata_broad_sample", pd.Series(np.nan, index=annotated.index))
    annotated["Metadata_Control"] = negative.to_numpy()
    annotated["Metadata_ControlType"] = control_type
    dropped = ("Metadata_Symbol", "Metadata_Name", "Metadata_broad_sample")
    return finish_image_table(annotated.drop(columns=[c for c in dropped
                                           if c in annotated]))


def jump_labels(symbols: pd.Series, pert_types: pd.Series | None = None) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Condition labels of JUMP ORFs: ``(gene, is_negative_control, control_type)``.

    BFP, the negative control, becomes ``EMPTY``; HcRed, LUCIFERASE, LacZ and eGFP (any case), and ORFs
    typed ``negcon``/``poscon``/``control``, are controls named in ``control_type`` (NaN for genes).
    """
    label = symbols.astype(str).str.strip()
    known = label.str.casefold().map({name.casefold(): name for name in JUMP_CONTROLS})
    is_control = known.notna()
    if pert_types is not None:
        is_control |= pert_types.isin(_JUMP_CONTROL_PERT_TYPES)
    negative = known == JUMP_NEGATIVE_CONTROL
    gene = label.where(~negative, NEGATIVE_CONTROL)
    return gene, negative, gene.where(is_control)


def finish_image_table(table: pd.DataFrame) -> pd.DataFrame:
    """Typed core columns, relative paths, :data:`IMAGE_COLUMNS` first."""
    duplicated = table.columns[table.columns.duplicated()].tolist()
    if duplicated:
        raise ImageTableError(f"the image table would hold columns {duplicated} twice")
    table = table.copy()
    table["Metadata_Plate"] = table["Metadata_Plate"].astype(str)
    table["Metadata_Well"] = table["Metadata_Well"].astype(str)
    table["Metadata_Site"] = pd.to_numeric(table["Metadata_Site"]).astype(int)
    table["Metadata_Gene"] = table["Metadata_Gene"].astype(str)
    table["Metadata_Allele"] = table["Metadata_Allele"].replace("", np.nan)
    table["Metadata_Control"] = table["Metadata_Control"].map(_as_bool).astype(bool)
    table["Metadata_FileName"] = table["Metadata_FileName"].astype(str)
    if "Metadata_PathName" not in table:
        table["Metadata_PathName"] = "images/" + table["Metadata_Plate"] + "/" + table["Metadata_FileName"]
    if "Metadata_IllumFileName" in table and "Metadata_IllumPathName" not in table:
        illum = table["Metadata_IllumFileName"]  # empty for plates whose LoadData table names no function
        paths = "illum/" + table["Metadata_Plate"] + "/" + illum.astype(str)
        table["Metadata_IllumPathName"] = paths.where(illum.notna())
    rest = [c for c in table.columns if c not in IMAGE_COLUMNS]
    return table[list(IMAGE_COLUMNS) + rest].reset_index(drop=True)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in ("true", "1", "yes"):
            return True
        if value.strip().lower() in ("false", "0", "no", ""):
            return False
        raise ValueError(f"not a truth value: {value!r}")
    return bool(value) if pd.notna(value) else False


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ImageTableError(f"{what} lacks columns {missing}")


# ---------------------------------------------------------------------------------------------
# The image table on disk
# ---------------------------------------------------------------------------------------------
def read_image_table(raw: RawLayout) -> pd.DataFrame:
    """The fields of view of a raw dataset (``raw/metadata/images.csv``) as the normalised table.

    The file may be in the normalised convention (:data:`IMAGE_COLUMNS`, as :func:`download` writes it)
    or in the Rohban database convention (:data:`ROHBAN_COLUMNS`, as the synthetic world writes it).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ImageTableError
        When the file matches neither convention (the message names the file and the missing columns of
        each), or holds unusable rows (empty keys, duplicated fields).
    """
    path = raw.image_metadata
    if not path.is_file():
        raise FileNotFoundError(f"no image table at {path}")
    header = pd.read_csv(path, nrows=0).columns
    text_columns = {c: str for c in header if c in ("Metadata_Plate", "Metadata_Well", "Image_Metadata_Plate",
                                                    "Image_Metadata_Well", "Metadata_Gene", "Metadata_Allele",
                                                    "Image_Metadata_GeneSymbol", "Image_Metadata_AlleleDesc")}
    missing_normalized = [c for c in IMAGE_COLUMNS if c not in header]
    missing_rohban = [c for c in ROHBAN_COLUMNS if c not in header]
    if missing_normalized and missing_rohban:
        raise ImageTableError(f"{path} is in neither image table convention: as a normalised table it lacks "
                              f"{missing_normalized}; as a Rohban (Image_Metadata_*) table it lacks {missing_rohban}")
    try:
        table = pd.read_csv(path, dtype=text_columns)
        table = finish_image_table(table) if not missing_normalized else normalize_rohban_metadata(table)
    except ValueError as error:  # a value that is not a site number, a truth value, ...
        raise ImageTableError(f"{path}: {error}") from error
    validate_image_table(table, path)
    return table


def write_image_table(table: pd.DataFrame, raw: RawLayout) -> Path:
    """Write a normalised image table to ``raw/metadata/images.csv`` (atomically) and return the path."""
    _require(table, IMAGE_COLUMNS, "normalised image table")
    validate_image_table(table, raw.image_metadata)
    with atomic_path(raw.image_metadata) as tmp:
        table.to_csv(tmp, index=False)
    return raw.image_metadata


def empty_values(table: pd.DataFrame, columns: Sequence[str]) -> tuple[int, int, list[str]] | None:
    """Rows of ``table`` without a value (missing, blank or the text ``nan``) in one of ``columns``:
    ``(how many, the first one's position, its empty columns)``, or None when every row is filled."""
    values = table[list(columns)]
    empty = values.isna() | values.astype(str).apply(lambda column: column.str.strip()).isin(["", "nan"])
    rows = np.flatnonzero(empty.any(axis=1))
    if not len(rows):
        return None
    return len(rows), int(rows[0]), [c for c in columns if empty[c].iat[rows[0]]]


def validate_image_table(table: pd.DataFrame, path: Path) -> None:
    """Raise :class:`ImageTableError` (naming ``path`` and the first row) for rows without a key or a file
    name, and for fields listed twice."""
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Gene", "Metadata_FileName"]
    empty = empty_values(table, keys)
    if empty is not None:
        count, row, columns = empty
        raise ImageTableError(f"{path}: {count} rows lack {columns} "
                              f"(first: row {row + 2} of the file)")
    duplicated = table.duplicated(["Metadata_Plate", "Metadata_Well", "Metadata_Site"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise ImageTableError(f"{path}: {int(duplicated.sum())} fields appear twice (first: plate "
                              f"{first['Metadata_Plate']}, well {first['Metadata_Well']}, "
                              f"site {first['Metadata_Site']})")


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadPlan:
    """What :func:`download` fetches and the image table it writes when done.

    Attributes
    ----------
    dataset
        ``rohban`` or ``jump``.
    raw
        Where the files go.
    source
        Where they come from.
    images
        The normalised image table of the planned fields (with ``Metadata_ImageURL``).
    files
        One row per object: ``key``, ``size`` (bytes, from the bucket listing), ``path`` (relative to the
        raw folder) and ``kind`` (``image`` or ``illum``).
    """

    dataset: str
    raw: RawLayout
    source: GallerySource
    images: pd.DataFrame
    files: pd.DataFrame

    @property
    def n_bytes(self) -> int:
        return int(self.files["size"].sum())

    def summary(self) -> str:
        counts = self.files["kind"].value_counts()
        return (f"{self.dataset}: {len(self.images)} fields of {self.images['Metadata_Gene'].nunique()} conditions "
                f"on {self.images['Metadata_Plate'].nunique()} plates; {counts.get('image', 0)} images + "
                f"{counts.get('illum', 0)} illumination functions, {self.n_bytes / 2**20:.1f} MiB from "
                f"{self.source.describe()} into {self.raw.root}")


def plan_downloads(dataset: str, raw: RawLayout, *, subset: Mapping[str, Any] | None = None,
                   source: GallerySource | None = None, jump_metadata: str | Path | None = None,
                   fields: pd.DataFrame | None = None, progress_bar: bool = True) -> DownloadPlan:
    """List the DNA images (and illumination functions) of a screen to fetch, with sizes and destinations.

    Parameters
    ----------
    dataset
        ``rohban`` (cpg0017) or ``jump`` (cpg0016 ``source_4`` ORF plates).
    raw
        The raw folder the files are meant for (``images/<plate>/<file>``, ``illum/<plate>/<file>``).
    subset
        Optional restrictions: ``plates`` (barcodes), ``genes`` (symbols; the negative control EMPTY is
        always kept) and ``max_fields`` (at most this many fields in all, taken round-robin over
        conditions and, within a condition, over wells before sites).
    source
        The bucket (default: the public gallery on AWS).
    jump_metadata
        Folder with ``well.csv.gz``, ``plate.csv.gz`` and ``orf.csv.gz`` of jump-cellpainting/datasets
        (default: ``raw/metadata/jump``); JUMP only.
    fields
        Rohban only: a normalised image table to plan from instead of the gallery's LoadData tables and
        platemaps, e.g. the reference's per-image table read by
        :func:`image2reg.data.metadata.read_rohban_metadata` (its images are found by file name under
        each plate's folder; it names no illumination functions).
    progress_bar
        Show a progress bar over plates.

    Raises
    ------
    DownloadError
        When the gallery cannot be reached, or a plate's tables or images cannot be found there.
    ValueError
        On an unknown dataset, subset key or plate, or a subset that selects nothing.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}' (known: {', '.join(DATASETS)})")
    subset = dict(subset or {})
    unknown = sorted(set(subset) - set(_SUBSET_KEYS))
    if unknown:
        raise ValueError(f"unknown subset keys {unknown} (known: {', '.join(_SUBSET_KEYS)})")
    plates_wanted = [str(p) for p in subset.get("plates") or []]
    genes_wanted = [str(g) for g in subset.get("genes") or []]
    metadata = read_jump_metadata(jump_metadata or raw.root / "metadata" / "jump") if dataset == "jump" else None
    source = source or GallerySource()
    gallery = DATASETS[dataset]
    source.check(gallery.prefix + "/")

    if fields is not None and dataset != "rohban":
        raise ValueError("a table of fields to plan from is for the rohban dataset; "
                         "JUMP plans from its LoadData tables")
    if fields is not None:
        chosen = _choose_plates(plates_wanted, sorted(fields["Metadata_Plate"].astype(str).unique()), "rohban")
        images = fields[fields["Metadata_Plate"].astype(str).isin(chosen)].copy()
        if "Metadata_Batch" not in images:
            images.insert(images.columns.get_loc("Metadata_PathName") + 1, "Metadata_Batch", ROHBAN_BATCH)
    elif metadata is None:
        images = _plan_rohban(source, plates_wanted, progress_bar)
    else:
        images = _plan_jump(source, metadata, plates_wanted, genes_wanted, progress_bar)
    images = select_fields(images, genes=genes_wanted or None, max_fields=subset.get("max_fields"))
    images, files = _locate_objects(source, gallery, images, progress_bar)
    plan = DownloadPlan(dataset, raw, source, images, files)
    logger.info("planned %s", plan.summary())
    return plan


def _plan_rohban(source: GallerySource, plates: Sequence[str], progress_bar: bool) -> pd.DataFrame:
    prefix = ROHBAN.platemaps_prefix(ROHBAN_BATCH)
    barcodes = read_table(source, prefix + "barcode_platemap.csv")
    known = barcodes["Assay_Plate_Barcode"].astype(str).tolist()
    chosen = _choose_plates(plates, known, "rohban")
    names = sorted(barcodes.loc[barcodes["Assay_Plate_Barcode"].astype(str).isin(chosen), "Plate_Map_Name"].unique())
    platemaps = {name: read_table(source, f"{prefix}platemap/{name}.txt") for name in names}
    load_data = [read_load_data(source, ROHBAN, ROHBAN_BATCH, plate)
                 for plate in tqdm(chosen, desc="reading LoadData tables", unit="plate", disable=not progress_bar)]
    table = normalize_rohban_metadata(rohban_gallery_metadata(pd.concat(load_data, ignore_index=True),
                                                              barcodes, platemaps))
    table.insert(table.columns.get_loc("Metadata_PathName") + 1, "Metadata_Batch", ROHBAN_BATCH)
    return table


def _plan_jump(source: GallerySource, metadata: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
               plates: Sequence[str], genes: Sequence[str], progress_bar: bool) -> pd.DataFrame:
    well, plate, orf = metadata
    orf_plates = plate[(plate["Metadata_Source"] == JUMP.source)
                       & (plate.get("Metadata_PlateType", pd.Series("ORF", index=plate.index)) == "ORF")]
    chosen = _choose_plates(plates, orf_plates["Metadata_Plate"].tolist(), "jump")
    if genes:
        # read only the LoadData tables of plates that hold one of the genes
        gene_wells = well.merge(orf[orf["Metadata_Symbol"].isin(genes)][["Metadata_JCP2022"]], on="Metadata_JCP2022")
        gene_plates = set(gene_wells["Metadata_Plate"])
        chosen = [p for p in chosen if p in gene_plates]
        if not chosen:
            raise ValueError(f"none of the genes {list(genes)} is on the chosen {JUMP.source} ORF plates")
    batches = orf_plates.set_index("Metadata_Plate")["Metadata_Batch"]
    load_data = [read_load_data(source, JUMP, batches[p], p)
                 for p in tqdm(chosen, desc="reading LoadData tables", unit="plate", disable=not progress_bar)]
    return normalize_jump_metadata(pd.concat(load_data, ignore_index=True), well, plate, orf)


def _choose_plates(wanted: Sequence[str], known: Sequence[str], dataset: str) -> list[str]:
    if not wanted:
        return sorted(known)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        shown = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
        raise ValueError(f"plates {unknown} are not {dataset} plates (known: {shown})")
    return sorted(set(wanted))


def select_fields(images: pd.DataFrame, genes: Sequence[str] | None = None,
                  max_fields: int | None = None) -> pd.DataFrame:
    """The fields of the given genes (plus the negative control), at most ``max_fields`` of them.

    With ``max_fields``, fields are taken round-robin over conditions, so that every condition gets a
    field before any gets two; within a condition, over wells before sites (site 1 of each well first).
    """
    if genes:
        absent = sorted(set(genes) - set(images["Metadata_Gene"]))
        if len(absent) == len(set(genes)):
            raise ValueError(f"none of the genes {sorted(set(genes))} is in the chosen plates")
        if absent:
            logger.warning("genes not in the chosen plates: %s", ", ".join(absent))
        images = images[images["Metadata_Gene"].isin(genes) | images["Metadata_Control"]]
    if max_fields is not None:
        if int(max_fields) < 1:
            raise ValueError(f"max_fields must be at least 1, got {max_fields}")
        ordered = images.sort_values(["Metadata_Site", "Metadata_Plate", "Metadata_Well"], kind="stable")
        rank = ordered.groupby("Metadata_Gene").cumcount()
        ordered = ordered.assign(_rank=rank).sort_values(["_rank", "Metadata_Gene"], kind="stable")
        images = ordered.head(int(max_fields)).drop(columns="_rank")
    return images.sort_values(["Metadata_Plate", "Metadata_Well", "Metadata_Site"]).reset_index(drop=True)


def _locate_objects(source: GallerySource, gallery: GalleryDataset, images: pd.DataFrame,
                    progress_bar: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find every planned image (and illumination function) in the bucket, with its size."""
    images = images.copy()
    batches = images["Metadata_Batch"]
    image_keys, image_sizes = _find(source, images["Metadata_FileName"], images.get("Metadata_ImageURL"),
                                    [gallery.images_prefix(b, p) for b, p in zip(batches, images["Metadata_Plate"])],
                                    "images", progress_bar)
    images["Metadata_ImageURL"] = [source.url(k) for k in image_keys]
    files = [pd.DataFrame({"key": image_keys, "size": image_sizes, "path": images["Metadata_PathName"].to_numpy(),
                           "kind": "image"})]
    with_illum = images.dropna(subset=["Metadata_IllumPathName"]) if "Metadata_IllumPathName" in images else None
    if with_illum is not None and len(with_illum):
        per_plate = with_illum.drop_duplicates("Metadata_IllumPathName")
        keys, sizes = _find(source, per_plate["Metadata_IllumFileName"], per_plate.get("Metadata_IllumURL"),
                            [gallery.illum_prefix(b, p) for b, p in zip(per_plate["Metadata_Batch"],
                                                                         per_plate["Metadata_Plate"])],
                            "illumination functions", progress_bar)
        images["Metadata_IllumURL"] = images["Metadata_IllumPathName"].map(
            dict(zip(per_plate["Metadata_IllumPathName"], (source.url(k) for k in keys))))
        files.append(pd.DataFrame({"key": keys, "size": sizes, "path": per_plate["Metadata_IllumPathName"].to_numpy(),
                                   "kind": "illum"}))
    return images, pd.concat(files, ignore_index=True)


def _find(source: GallerySource, names: pd.Series, urls: pd.Series | None, prefixes: Sequence[str],
          what: str, progress_bar: bool) -> tuple[list[str], list[int]]:
    """Keys and sizes of objects named by an ``s3://`` URL or, failing that, by file name under a prefix.

    Each folder is listed once. A URL's folder is listed directly; a bare file name is looked up among
    everything under its prefix (which covers imager-specific subfolders) and must be unique there.
    """
    bucket_url = source.url("")
    urls = urls if urls is not None else pd.Series(np.nan, index=names.index)
    direct = [u[len(bucket_url):] if isinstance(u, str) and u.startswith(bucket_url) else None for u in urls]
    folders = [posixpath.dirname(key) + "/" if key else prefix for key, prefix in zip(direct, prefixes)]
    listings = {folder: source.list(folder)
                for folder in tqdm(sorted(set(folders)), desc=f"listing {what}", unit="folder",
                                   disable=not progress_bar)}
    indexes: dict[str, dict[str, list[str]]] = {}
    keys, sizes, missing = [], [], []
    for name, key, folder in zip(names, direct, folders):
        listing = listings[folder]
        if key is None:
            if folder not in indexes:
                indexes[folder] = _index_by_name(listing, folder)
            candidates = indexes[folder].get(name, [])
            if len(candidates) > 1:
                raise DownloadError(f"{name} is ambiguous under {source.url(folder)}: {candidates}")
            key = candidates[0] if candidates else None
        if key is None or key not in listing:
            missing.append(f"{name} (under {source.url(folder)})")
            continue
        keys.append(key)
        sizes.append(listing[key])
    if missing:
        raise DownloadError(f"{len(missing)} {what} not found in {source.describe()}; first: {missing[0]}",
                            [(m, "not found") for m in missing])
    return keys, sizes


def _index_by_name(listing: Mapping[str, int], prefix: str) -> dict[str, list[str]]:
    """File name -> keys. A prefix that ends inside a folder name (``.../images/<plate>``) matches that
    folder or a ``<plate>__<acquisition time>`` one, not the folder of a longer barcode."""
    index: dict[str, list[str]] = {}
    for key in listing:
        if prefix.endswith("/") or key[len(prefix):].startswith(("/", "__")):
            index.setdefault(posixpath.basename(key), []).append(key)
    return index


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadReport:
    """What :func:`download` did."""

    n_files: int
    n_fetched: int
    n_present: int
    bytes_fetched: int
    seconds: float
    image_table: Path


def download(plan: DownloadPlan, *, workers: int = 8, progress_bar: bool = True, attempts: int = 4,
             backoff: float = 0.5) -> DownloadReport:
    """Fetch the files of a plan, then write its image table to ``raw/metadata/images.csv``.

    Resumable: a file whose local size matches the plan is kept; any other (partial, stale) is fetched
    again. Each file is written under a temporary name and renamed when complete and of the planned size.
    Transient failures (dropped connections, timeouts, 5xx, throttling) are retried with exponential
    backoff. The image table is written last, so its presence means every file arrived.

    Parameters
    ----------
    plan
        From :func:`plan_downloads`.
    workers
        Parallel transfers (threads).
    progress_bar
        Show a progress bar in bytes.
    attempts
        Tries per file before giving up on it.
    backoff
        Seconds before the first retry; doubled for each further one.

    Raises
    ------
    DownloadError
        At once when the gallery cannot be reached; after all transfers when any file failed, with a
        summary of which keys failed and why (also in ``DownloadError.failures``).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    started = time.perf_counter()
    root = plan.raw.root
    pending = [f for f in plan.files.itertuples(index=False) if not _complete(root / f.path, f.size)]
    present = len(plan.files) - len(pending)
    logger.info("%d of %d files already present in %s", present, len(plan.files), root)
    fetched_bytes = 0
    if pending:
        plan.source.check()
        _remove_stale_temporaries({(root / f.path).parent for f in pending})
        lock = threading.Lock()
        failures: list[tuple[str, str]] = []
        with tqdm(total=sum(f.size for f in pending), desc=f"downloading {plan.dataset}", unit="B",
                  unit_scale=True, unit_divisor=1024, disable=not progress_bar) as bar:

            def progress(n: int) -> None:
                with lock:
                    bar.update(n)

            def fetch(item) -> None:
                error = _fetch_with_retries(plan.source, item.key, root / item.path, item.size, progress,
                                            attempts, backoff)
                if error is not None:
                    with lock:
                        failures.append((item.key, error))

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                list(pool.map(fetch, pending))
        if failures:
            failures.sort()
            lines = "\n".join(f"  - {key}: {reason}" for key, reason in failures[:20])
            more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
            raise DownloadError(f"{len(failures)} of {len(pending)} files could not be fetched from "
                                f"{plan.source.describe()}; the others are in place and a rerun resumes:\n"
                                f"{lines}{more}", failures)
        fetched_bytes = sum(f.size for f in pending)
    table = write_image_table(plan.images, plan.raw)
    report = DownloadReport(len(plan.files), len(pending), present, fetched_bytes, time.perf_counter() - started, table)
    logger.info("fetched %d files (%.1f MiB) in %.1f s; image table: %s", report.n_fetched,
                report.bytes_fetched / 2**20, report.seconds, table)
    return report


def _complete(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _fetch_with_retries(source: GallerySource, key: str, target: Path, size: int, progress: Callable[[int], None],
                        attempts: int, backoff: float) -> str | None:
    """Fetch one object; the reason it failed, or None."""
    attempt = 1
    while True:
        try:
            source.fetch(key, target, size, progress)
            return None
        except _TransientError as error:
            if attempt >= attempts:
                return f"{error} (gave up after {attempts} attempts)"
            logger.debug("retrying %s after: %s", key, error)
        except _PermanentError as error:
            return str(error)
        except OSError as error:
            return f"cannot write {target}: {error}"
        time.sleep(backoff * 2 ** (attempt - 1))
        attempt += 1


def _remove_stale_temporaries(folders: Iterable[Path]) -> None:
    """Delete the temporary files (``.<name>.<random>.tmp<suffix>``) an interrupted run left behind."""
    for folder in folders:
        for stale in folder.glob(".*.tmp*") if folder.is_dir() else ():
            stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m image2reg.data.cellpainting``: plan and fetch a screen's DNA images into a raw folder."""
    parser = argparse.ArgumentParser(prog="python -m image2reg.data.cellpainting", description=main.__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--raw", required=True, type=Path, help="raw folder, e.g. runs/rohban/raw")
    parser.add_argument("--subset-plates", nargs="+", metavar="PLATE", help="only these plates")
    parser.add_argument("--subset-genes", nargs="+", metavar="GENE", help="only these genes (plus EMPTY)")
    parser.add_argument("--max-fields", type=int, help="at most this many fields, spread over conditions")
    parser.add_argument("--jump-metadata", type=Path,
                        help="folder with well/plate/orf.csv.gz of jump-cellpainting/datasets "
                             "(default: <raw>/metadata/jump)")
    parser.add_argument("--workers", type=int, default=8, help="parallel transfers (default 8)")
    parser.add_argument("--endpoint-url", help="S3-compatible server to use instead of AWS (tests)")
    parser.add_argument("--dry-run", action="store_true", help="plan and print, fetch nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    subset = {key: value for key, value in (("plates", args.subset_plates), ("genes", args.subset_genes),
                                            ("max_fields", args.max_fields)) if value is not None}
    try:
        plan = plan_downloads(args.dataset, RawLayout(args.raw), subset=subset,
                              source=GallerySource(endpoint_url=args.endpoint_url), jump_metadata=args.jump_metadata,
                              progress_bar=not args.no_progress)
        print(plan.summary())
        if not args.dry_run:
            report = download(plan, workers=args.workers, progress_bar=not args.no_progress)
            print(f"{report.n_fetched} files fetched, {report.n_present} already present; image table: "
                  f"{report.image_table}")
    except (DownloadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
