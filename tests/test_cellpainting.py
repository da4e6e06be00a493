"""Cell Painting Gallery access: planning, resumable download, metadata normalisation, the image table.

The gallery is replaced by a local S3-compatible server holding tiny objects in the real key layout and
file naming of cpg0017 (Rohban) and cpg0016 (JUMP source_4): a small built-in server that can count
requests and inject faults, and moto's server when moto is installed.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import pytest
import tifffile
import urllib3
import yaml

from image2reg.data import synthetic
from image2reg.data.cellpainting import (
    IMAGE_COLUMNS,
    JUMP,
    ROHBAN,
    ROHBAN_BATCH,
    DownloadError,
    GallerySource,
    ImageTableError,
    download,
    main,
    normalize_jump_metadata,
    normalize_rohban_metadata,
    plan_downloads,
    read_image_table,
    write_image_table,
)
from image2reg.layout import RawLayout

BUCKET = "cellpainting-gallery"

# ---------------------------------------------------------------------------------------------
# The gallery in miniature
# ---------------------------------------------------------------------------------------------
ROHBAN_PLATES = {"41744": "au00044859", "41754": "au00044860"}  # barcode -> acquisition id in file names
ROHBAN_PLATEMAP = pd.DataFrame(
    [("a01", "EMPTY", "EMPTY_", "NA", "U2OS", "Untreated", "NA"),
     ("a02", "BRAF", "BRAF_WT.1", "BRDN0000464953", "U2OS", "Treated", "673"),
     ("a03", "BRAF", "BRAF_V600E", "BRDN0000464987", "U2OS", "Treated", "673"),
     ("a04", "Luciferase", "Luciferase_CTRL", "NA", "U2OS", "CTRL", "NA"),
     ("a05", "TP53", "TP53_WT.1", "BRDN0000464908", "U2OS", "Treated", "7157"),
     ("b01", "EMPTY", "EMPTY_", "NA", "U2OS", "Untreated", "NA")],
    columns=["well_position", "gene_name", "pert_name", "broad_sample", "cell_line", "ASSAY_WELL_ROLE", "GeneID"])
JUMP_BATCH = "2021_04_26_Batch1"
JUMP_PLATES = {"BR00117035": "BR00117035__2021-05-02T16_02_51-Measurement1",
               "BR00117036": "BR00117036__2021-05-02T18_01_40-Measurement1"}
JUMP_WELLS = {"A01": "JCP2022_915128", "A02": "JCP2022_900001", "A03": "JCP2022_900002",
              "A04": "JCP2022_915129", "A05": "JCP2022_999999", "B01": "JCP2022_900003"}
SITES = (1, 2)


def tiff_bytes(seed: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(seed).integers(0, 4000, (size, size), dtype=np.uint16))
    return buffer.getvalue()


def npy_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(seed).uniform(0.8, 1.2, (8, 8)))
    return buffer.getvalue()


def csv_bytes(table: pd.DataFrame, sep: str = ",", gzip: bool = False) -> bytes:
    buffer = io.BytesIO()
    table.to_csv(buffer, index=False, sep=sep, compression="gzip" if gzip else None)
    return buffer.getvalue()


def rohban_objects() -> dict[str, bytes]:
    """cpg0017: platemaps, LoadData tables (local paths, as the 2013 analysis wrote them), 2 channels, illum."""
    platemaps = ROHBAN.platemaps_prefix(ROHBAN_BATCH)
    barcodes = pd.DataFrame({"Assay_Plate_Barcode": list(ROHBAN_PLATES), "Plate_Map_Name": "TAORF_REFERENCE_SET"})
    objects = {f"{platemaps}barcode_platemap.csv": csv_bytes(barcodes),
               f"{platemaps}platemap/TAORF_REFERENCE_SET.txt": csv_bytes(ROHBAN_PLATEMAP, sep="\t")}
    for p, (plate, acquisition) in enumerate(ROHBAN_PLATES.items()):
        rows = []
        local = f"/home/ubuntu/bucket/projects/2015_Rohban/{ROHBAN_BATCH}"
        for w, well in enumerate(ROHBAN_PLATEMAP["well_position"]):
            for site in SITES:
                row = {"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": site}
                for channel, number in (("DNA", 1), ("ER", 2)):
                    guid = uuid.uuid5(uuid.NAMESPACE_URL, f"{plate}{well}{site}{number}")
                    name = f"taoe005-u2os-72h-cp-a-{acquisition}_{well}_s{site}_w{number}{guid}.tif"
                    seed = p * 1000 + w * 10 + site * 3 + number
                    objects[f"{ROHBAN.images_prefix(ROHBAN_BATCH, plate)}/{name}"] = tiff_bytes(seed)
                    row |= {f"FileName_Orig{channel}": name, f"PathName_Orig{channel}": f"{local}/images/{plate}",
                            f"FileName_Illum{channel}": f"{plate}_Illum{channel}.npy",
                            f"PathName_Illum{channel}": f"{local}/illum/{plate}"}
                rows.append(row)
        load_data = pd.DataFrame(rows)
        without_illum = load_data[[c for c in load_data if "Illum" not in c]]
        tables = ROHBAN.load_data_prefix(ROHBAN_BATCH, plate)
        if plate == "41744":
            objects[tables + "load_data_with_illum.csv.gz"] = csv_bytes(load_data, gzip=True)
            objects[tables + "load_data.csv.gz"] = csv_bytes(without_illum, gzip=True)
            for channel in ("DNA", "ER"):
                objects[ROHBAN.illum_prefix(ROHBAN_BATCH, plate) + f"{plate}_Illum{channel}.npy"] = npy_bytes(p)
        else:  # only the table without illumination functions
            objects[tables + "load_data.csv"] = csv_bytes(without_illum)
    # a longer barcode sharing the prefix, holding a file of the same name: must not be taken for 41744's
    decoy = next(k for k in objects if k.startswith(ROHBAN.images_prefix(ROHBAN_BATCH, "41744") + "/"))
    objects[decoy.replace("/41744/", "/417440/")] = b"decoy"
    return objects


def jump_objects() -> dict[str, bytes]:
    """cpg0016 source_4: PerkinElmer plate folders with Images/, s3:// LoadData tables (parquet, csv.gz), illum."""
    prefix = JUMP.prefix
    objects = {}
    for p, (plate, folder) in enumerate(JUMP_PLATES.items()):
        images = f"s3://{BUCKET}/{prefix}/images/{JUMP_BATCH}/images/{folder}/Images/"
        illum = f"s3://{BUCKET}/{prefix}/images/{JUMP_BATCH}/illum/{plate}/"
        rows = []
        for w, well in enumerate(JUMP_WELLS):
            if well == "B01" and plate == "BR00117035":
                continue
            r, c = "ABCDEFGHIJKLMNOP".index(well[0]) + 1, int(well[1:])
            for site in SITES:
                row = {"Metadata_Source": JUMP.source, "Metadata_Batch": JUMP_BATCH, "Metadata_Plate": plate,
                       "Metadata_Well": well, "Metadata_Site": str(site)}
                for channel, number in (("DNA", 5), ("ER", 1)):
                    name = f"r{r:02d}c{c:02d}f{site:02d}p01-ch{number}sk1fk1fl1.tiff"
                    seed = p * 1000 + w * 10 + site * 3 + number + 500
                    objects[images[len(f"s3://{BUCKET}/"):] + name] = tiff_bytes(seed)
                    row |= {f"FileName_Orig{channel}": name, f"PathName_Orig{channel}": images,
                            f"FileName_Illum{channel}": f"{plate}_Illum{channel}.npy",
                            f"PathName_Illum{channel}": illum}
                rows.append(row)
        load_data = pd.DataFrame(rows)
        key = JUMP.load_data_prefix(JUMP_BATCH, plate)
        if plate == "BR00117035":
            buffer = io.BytesIO()
            load_data.to_parquet(buffer, index=False)
            objects[key + "load_data_with_illum.parquet"] = buffer.getvalue()
        else:
            objects[key + "load_data_with_illum.csv.gz"] = csv_bytes(load_data, gzip=True)
        for channel in ("DNA", "ER"):
            objects[illum[len(f"s3://{BUCKET}/"):] + f"{plate}_Illum{channel}.npy"] = npy_bytes(p + len(channel))
    return objects


def jump_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """well, plate and orf tables of jump-cellpainting/datasets, with rows of other sources and plate types."""
    well = pd.DataFrame([{"Metadata_Source": JUMP.source, "Metadata_Plate": plate, "Metadata_Well": w,
                          "Metadata_JCP2022": j}
                         for plate in JUMP_PLATES for w, j in JUMP_WELLS.items()
                         if not (w == "B01" and plate == "BR00117035")]
                        + [{"Metadata_Source": "source_2", "Metadata_Plate": "1053601756", "Metadata_Well": "A01",
                            "Metadata_JCP2022": "JCP2022_033924"}])
    plate = pd.DataFrame({"Metadata_Source": [JUMP.source, JUMP.source, JUMP.source, "source_2"],
                          "Metadata_Batch": [JUMP_BATCH, JUMP_BATCH, "2021_05_31_Batch2", "20210614_Batch_1"],
                          "Metadata_Plate": [*JUMP_PLATES, "BR00123456", "1053601756"],
                          "Metadata_PlateType": ["ORF", "ORF", "TARGET2", "COMPOUND"]})
    orf = pd.DataFrame({"Metadata_JCP2022": ["JCP2022_915128", "JCP2022_900001", "JCP2022_900002", "JCP2022_915129",
                                             "JCP2022_900003", "JCP2022_900004"],
                        "Metadata_broad_sample": ["ccsbBroad304_99985", "ccsbBroad304_00044", "ccsbBroad304_16001",
                                                  "ccsbBroad304_99988", "ccsbBroad304_01122", "ccsbBroad304_07777"],
                        "Metadata_Name": ["ORF000001", "ORF000002", "ORF000003", "ORF000004", "ORF000005", "ORF000006"],
                        "Metadata_Symbol": ["BFP", "AKT1", "AKT1", "HcRed", "TP53", "MYC"],
                        "Metadata_pert_type": ["negcon", "trt", "trt", "negcon", "trt", "trt"]})
    return well, plate, orf


# ---------------------------------------------------------------------------------------------
# A local S3-compatible server
# ---------------------------------------------------------------------------------------------
class FakeS3(ThreadingHTTPServer):
    """ListObjectsV2 (paged), GET/HEAD/PUT object, PUT bucket; logs requests and injects faults per key."""

    daemon_threads = True

    def __init__(self, page_size: int = 7):
        super().__init__(("127.0.0.1", 0), _FakeS3Handler)
        self.objects: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: dict[str, list[int | str]] = {}  # key -> HTTP statuses or "truncate", served first
        self.page_size = page_size
        self.lock = threading.Lock()

    def gets(self, key: str) -> int:
        return self.requests.count(("GET", key))


class _FakeS3Handler(BaseHTTPRequestHandler):
    server: FakeS3
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _route(self) -> tuple[str, str, dict]:
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return bucket, key, {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._send(status, f"<?xml version='1.0'?><Error><Code>{code}</Code></Error>".encode())

    def do_PUT(self) -> None:
        bucket, key, _ = self._route()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            store = self.server.objects.setdefault(bucket, {})
            if key:
                store[key] = body
        self._send(200)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        bucket, key, query = self._route()
        with self.server.lock:
            self.server.requests.append((self.command, key or "?list"))
            store = self.server.objects.get(bucket)
            fault = self.server.faults.get(key, []).pop(0) if self.server.faults.get(key) else None
        if store is None:
            return self._error(404, "NoSuchBucket")
        if not key:
            return self._list(store, query)
        if key not in store:
            return self._error(404, "NoSuchKey")
        body = store[key]
        if fault == "truncate":  # announce the full size, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return None
        if fault is not None:
            return self._error(int(fault), "ServiceUnavailable")
        self._send(200, body, "application/octet-stream")

    def _list(self, store: dict[str, bytes], query: dict) -> None:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        limit = min(int(query.get("max-keys", 1000)), self.server.page_size)
        after = query.get("continuation-token", "")
        entries: list[tuple[str, str]] = []
        for key in sorted(k for k in store if k.startswith(prefix) and k > after):
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter)[0] + delimiter
                if not entries or entries[-1] != ("folder", folder):
                    entries.append(("folder", folder))
            else:
                entries.append(("key", key))
        page, truncated = entries[:limit], len(entries) > limit
        last = page[-1][1] if page else ""
        if page and page[-1][0] == "folder":
            last = page[-1][1] + "\uffff"  # skip the rest of the folder on the next page
        parts = ["<?xml version='1.0' encoding='UTF-8'?>",
                 "<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>",
                 f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>",
                 f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
        for kind, name in page:
            parts.append(f"<Contents><Key>{escape(name)}</Key><Size>{len(store[name])}</Size></Contents>"
                         if kind == "key" else f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        self._send(200, "".join(parts).encode())


@dataclasses.dataclass
class Gallery:
    endpoint: str
    objects: dict[str, bytes]
    fake: FakeS3 | None  # None for moto: no request log, no faults

    def put(self, key: str, data: bytes) -> None:
        # public-read, as in the gallery: moto refuses anonymous reads of private objects
        response = urllib3.request("PUT", f"{self.endpoint}/{BUCKET}/{quote(key)}", body=data,
                                   headers={"x-amz-acl": "public-read"})
        assert response.status == 200, response.data

    def delete(self, key: str) -> None:
        if self.fake is not None:
            del self.fake.objects[BUCKET][key]
        else:
            assert urllib3.request("DELETE", f"{self.endpoint}/{BUCKET}/{quote(key)}").status == 204

    def source(self) -> GallerySource:
        return GallerySource(endpoint_url=self.endpoint)


@pytest.fixture(scope="session", params=["fake", "moto"])
def gallery(request) -> Gallery:
    objects = rohban_objects() | jump_objects()
    if request.param == "fake":
        server = FakeS3()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        stop = server.shutdown
    else:
        moto_server = pytest.importorskip("moto.server")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        stop = server.stop
    try:
        gallery = Gallery(endpoint, objects, server if request.param == "fake" else None)
        assert urllib3.request("PUT", f"{endpoint}/{BUCKET}", headers={"x-amz-acl": "public-read"}).status == 200
        for key, data in objects.items():
            gallery.put(key, data)
        yield gallery
    finally:
        stop()


@pytest.fixture(scope="session")
def jump_metadata(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jump_metadata")
    for name, table in zip(("well", "plate", "orf"), jump_tables()):
        table.to_csv(folder / f"{name}.csv.gz", index=False)
    return folder


def rohban_plan(gallery: Gallery, raw: RawLayout, **subset):
    return plan_downloads("rohban", raw, subset=subset or None, source=gallery.source(), progress_bar=False)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
def test_rohban_plan_lists_only_dna_images_of_the_subset(gallery, tmp_path):
    plan = rohban_plan(gallery, RawLayout(tmp_path / "raw"), plates=["41744"], genes=["BRAF"])
    images = plan.images
    assert list(images.columns[: len(IMAGE_COLUMNS)]) == list(IMAGE_COLUMNS)
    assert set(images["Metadata_Plate"]) == {"41744"}
    assert set(images["Metadata_Gene"]) == {"BRAF", "EMPTY"}  # the negative control comes along
    assert set(images.loc[images["Metadata_Gene"] == "BRAF", "Metadata_Allele"]) == {"WT.1", "V600E"}
    assert images["Metadata_Control"].eq(images["Metadata_Gene"] == "EMPTY").all()
    assert len(images) == 4 * len(SITES)  # a01, a02, a03, b01

    files = plan.files
    image_files = files[files["kind"] == "image"]
    assert image_files["key"].str.contains("_w1").all() and not image_files["key"].str.contains("_w2").any()
    assert (image_files["path"] == "images/41744/" + image_files["key"].str.rsplit("/", n=1).str[1]).all()
    assert list(files.loc[files["kind"] == "illum", "path"]) == ["illum/41744/41744_IllumDNA.npy"]
    assert files["size"].tolist() == [len(gallery.objects[k]) for k in files["key"]]
    assert images["Metadata_ImageURL"].str.startswith(f"s3://{BUCKET}/{ROHBAN.prefix}/images/").all()


def test_rohban_plan_without_illumination_and_max_fields_spread_over_conditions(gallery, tmp_path):
    plan = rohban_plan(gallery, RawLayout(tmp_path / "raw"), plates=["41754"], max_fields=4)
    assert (plan.files["kind"] == "image").all()  # this plate's LoadData table names no illumination
    assert sorted(plan.images["Metadata_Gene"]) == ["BRAF", "EMPTY", "Luciferase", "TP53"]
    assert (plan.images["Metadata_Site"] == 1).all()
    everything = rohban_plan(gallery, RawLayout(tmp_path / "raw"))
    assert len(everything.images) == len(ROHBAN_PLATES) * len(ROHBAN_PLATEMAP) * len(SITES)


def test_jump_plan_reads_parquet_and_csv_load_data_and_fetches_dna_illumination(gallery, tmp_path, jump_metadata):
    plan = plan_downloads("jump", RawLayout(tmp_path / "raw"), source=gallery.source(), jump_metadata=jump_metadata,
                          progress_bar=False)
    images = plan.images
    assert set(images["Metadata_Plate"]) == set(JUMP_PLATES)
    assert "A05" not in set(images["Metadata_Well"])  # no ORF in that well
    assert (images["Metadata_Batch"] == JUMP_BATCH).all() and (images["Metadata_Source"] == JUMP.source).all()
    image_keys = plan.files.loc[plan.files["kind"] == "image", "key"]
    assert image_keys.str.contains("-ch5").all()
    assert image_keys.str.contains("/Images/").all()
    illum = plan.files[plan.files["kind"] == "illum"]
    assert sorted(illum["path"]) == [f"illum/{p}/{p}_IllumDNA.npy" for p in sorted(JUMP_PLATES)]
    assert plan.files["size"].tolist() == [len(gallery.objects[k]) for k in plan.files["key"]]

    genes = plan_downloads("jump", RawLayout(tmp_path / "raw"), subset={"genes": ["TP53"]}, source=gallery.source(),
                           jump_metadata=jump_metadata, progress_bar=False)
    assert set(genes.images["Metadata_Plate"]) == {"BR00117036"}  # the only plate with TP53
    assert set(genes.images["Metadata_Gene"]) == {"TP53", "EMPTY"}


def test_plan_rejects_unknown_subset_keys_plates_and_genes(gallery, tmp_path):
    raw = RawLayout(tmp_path / "raw")
    with pytest.raises(ValueError, match="unknown subset keys"):
        rohban_plan(gallery, raw, wells=["a01"])
    with pytest.raises(ValueError, match="99999"):
        rohban_plan(gallery, raw, plates=["99999"])
    with pytest.raises(ValueError, match="NOTAGENE"):
        rohban_plan(gallery, raw, genes=["NOTAGENE"])


def test_missing_jump_metadata_names_the_files_and_their_source(gallery, tmp_path):
    with pytest.raises(FileNotFoundError, match="well.csv.gz.*jump-cellpainting/datasets"):
        plan_downloads("jump", RawLayout(tmp_path / "raw"), source=gallery.source(), progress_bar=False)


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------
def test_download_is_complete_verified_and_resumable(gallery, tmp_path):
    raw = RawLayout(tmp_path / "raw")
    plan = rohban_plan(gallery, raw, plates=["41744"], genes=["TP53"])
    report = download(plan, workers=4, progress_bar=False)
    assert report.n_fetched == len(plan.files) and report.n_present == 0
    for item in plan.files.itertuples():
        assert (raw.root / item.path).read_bytes() == gallery.objects[item.key]
    assert not [p for p in raw.root.rglob("*") if ".tmp" in p.name]

    table = read_image_table(raw)
    pd.testing.assert_frame_equal(table[list(IMAGE_COLUMNS)], plan.images[list(IMAGE_COLUMNS)])
    assert (table["Metadata_IllumPathName"] == "illum/41744/41744_IllumDNA.npy").all()
    assert all((raw.root / p).is_file() for p in table["Metadata_PathName"])

    mtimes = {p: p.stat().st_mtime_ns for p in raw.root.rglob("*") if p.is_file()}
    requests_before = len(gallery.fake.requests) if gallery.fake else 0
    again = download(plan, workers=4, progress_bar=False)
    assert again.n_fetched == 0 and again.n_present == len(plan.files)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != raw.image_metadata)
    if gallery.fake:
        assert len(gallery.fake.requests) == requests_before  # nothing asked of the server at all

    truncated = raw.root / plan.files["path"].iat[0]
    truncated.write_bytes(truncated.read_bytes()[:10])
    stale = truncated.with_name(f".{truncated.stem}.x1y2.tmp{truncated.suffix}")  # left by a killed run
    stale.write_bytes(b"partial")
    resumed = download(plan, workers=4, progress_bar=False)
    assert resumed.n_fetched == 1 and not stale.exists()
    assert truncated.read_bytes() == gallery.objects[plan.files["key"].iat[0]]
    if gallery.fake:
        fetched = [k for m, k in gallery.fake.requests[requests_before:] if m == "GET" and k != "?list"]
        assert fetched == [plan.files["key"].iat[0]]


def test_changed_and_missing_objects_are_summarised_not_raised_one_by_one(gallery, tmp_path):
    raw = RawLayout(tmp_path / "raw")
    plan = rohban_plan(gallery, raw, plates=["41744"], genes=["BRAF"])
    changed, gone = plan.files["key"].iat[0], plan.files["key"].iat[1]
    gallery.put(changed, tiff_bytes(0, size=12))
    gallery.delete(gone)
    try:
        with pytest.raises(DownloadError) as caught:
            download(plan, workers=4, progress_bar=False)
    finally:
        gallery.put(changed, gallery.objects[changed])
        gallery.put(gone, gallery.objects[gone])
    message = str(caught.value)
    assert "2 of" in message and changed in message and gone in message
    assert "size mismatch" in message and "not found" in message
    assert sorted(k for k, _ in caught.value.failures) == sorted([changed, gone])
    assert not (raw.root / plan.files["path"].iat[0]).exists()
    assert (raw.root / plan.files["path"].iat[2]).is_file()  # the others arrived
    assert not raw.image_metadata.exists()  # written only once everything is in place

    download(plan, workers=4, progress_bar=False)
    assert raw.image_metadata.is_file()


def test_transient_failures_are_retried(gallery, tmp_path):
    if gallery.fake is None:
        pytest.skip("fault injection needs the built-in server")
    raw = RawLayout(tmp_path / "raw")
    plan = rohban_plan(gallery, raw, plates=["41744"], genes=["TP53"], max_fields=1)
    flaky, cut = plan.files["key"].iat[0], plan.files["key"].iat[1]
    gallery.fake.faults[flaky] = [503, 500]
    gallery.fake.faults[cut] = ["truncate"]
    before = {k: gallery.fake.gets(k) for k in (flaky, cut)}
    download(plan, workers=2, progress_bar=False, backoff=0.01)
    assert gallery.fake.gets(flaky) - before[flaky] == 3
    assert gallery.fake.gets(cut) - before[cut] == 2
    assert (raw.root / plan.files["path"].iat[1]).read_bytes() == gallery.objects[cut]


def test_unreachable_gallery_fails_fast_with_a_clear_error(gallery, tmp_path):
    unreachable = GallerySource(endpoint_url="http://127.0.0.1:1")
    started = time.perf_counter()
    with pytest.raises(DownloadError, match=r"cannot reach s3://cellpainting-gallery \(http://127.0.0.1:1\)"):
        plan_downloads("rohban", RawLayout(tmp_path / "raw"), source=unreachable, progress_bar=False)
    plan = rohban_plan(gallery, RawLayout(tmp_path / "raw"), plates=["41744"], max_fields=2)
    with pytest.raises(DownloadError, match="cannot reach"):
        download(dataclasses.replace(plan, source=unreachable), progress_bar=False)
    assert time.perf_counter() - started < 10


def test_command_line_plans_downloads_and_reports_errors(gallery, tmp_path, capsys):
    raw = tmp_path / "raw"
    args = ["--dataset", "rohban", "--raw", str(raw), "--endpoint-url", gallery.endpoint, "--subset-plates", "41744",
            "--max-fields", "3", "--no-progress"]
    assert main([*args, "--dry-run"]) == 0
    assert "3 fields of 3 conditions" in capsys.readouterr().out and not raw.exists()
    assert main(args) == 0
    assert "4 files fetched" in capsys.readouterr().out
    assert len(read_image_table(RawLayout(raw))) == 3
    unreachable = ["--dataset", "rohban", "--raw", str(raw), "--endpoint-url", "http://127.0.0.1:1", "--no-progress"]
    assert main(unreachable) == 1
    assert "error: cannot reach" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------
def test_rohban_normalisation_pools_alleles_and_flags_controls():
    table = pd.DataFrame({
        "ImageNumber": [1, 2, 3, 4],
        "Image_Metadata_Plate": [41744] * 4, "Image_Metadata_Well": ["a01", "a02", "a03", "a04"],
        "Image_Metadata_Site": [1, 1, 1, 1],
        "Image_FileName_OrigHoechst": [f"f{i}.tif" for i in range(4)],
        "Image_Metadata_GeneSymbol": ["EMPTY", "BRAF", "BRAF", "Luciferase"],
        "Image_Metadata_AlleleDesc": ["", "WT.1", "V600E", ""],
        "Image_Metadata_QCFlag_isBlurry": [0, 1, 0, 0],
    })
    normalized = normalize_rohban_metadata(table)
    assert list(normalized.columns[: len(IMAGE_COLUMNS)]) == list(IMAGE_COLUMNS)
    assert normalized["Metadata_Gene"].tolist() == ["EMPTY", "BRAF", "BRAF", "Luciferase"]
    assert normalized["Metadata_Allele"].tolist()[1:3] == ["WT.1", "V600E"]
    assert normalized["Metadata_Allele"].isna().tolist() == [True, False, False, True]
    assert normalized["Metadata_Control"].tolist() == [True, False, False, False]
    assert normalized["Metadata_ControlType"].tolist()[::3] == ["EMPTY", "Luciferase"]
    assert normalized["Metadata_ControlType"].iloc[1:3].isna().all()
    assert normalized["Metadata_Plate"].tolist() == ["41744"] * 4
    assert normalized["Metadata_PathName"].iat[1] == "images/41744/f1.tif"
    assert normalized["Metadata_QCFlag_isBlurry"].tolist() == [0, 1, 0, 0]
    assert normalized["Metadata_ImageNumber"].tolist() == [1, 2, 3, 4]


def test_jump_normalisation_renames_bfp_and_keeps_other_controls_apart():
    well, plate, orf = jump_tables()
    load_data = pd.DataFrame({
        "Metadata_Plate": "BR00117035", "Metadata_Well": ["A01", "A02", "A03", "A04", "A05", "Z99"],
        "Metadata_Site": ["1"] * 6, "FileName_OrigDNA": [f"r01c0{i}f01p01-ch5sk1fk1fl1.tiff" for i in range(1, 7)],
        "PathName_OrigDNA": f"s3://{BUCKET}/{JUMP.prefix}/images/{JUMP_BATCH}/images/x/Images/"})
    normalized = normalize_jump_metadata(load_data, well, plate, orf)
    assert normalized["Metadata_Well"].tolist() == ["A01", "A02", "A03", "A04"]  # A05: no ORF; Z99: no well entry
    assert normalized["Metadata_Gene"].tolist() == ["EMPTY", "AKT1", "AKT1", "HcRed"]
    assert normalized["Metadata_Control"].tolist() == [True, False, False, False]
    assert normalized["Metadata_ControlType"].tolist()[::3] == ["EMPTY", "HcRed"]
    assert normalized["Metadata_ControlType"].iloc[1:3].isna().all()
    assert normalized["Metadata_Allele"].tolist()[1:3] == ["ccsbBroad304_00044", "ccsbBroad304_16001"]
    assert (normalized["Metadata_Batch"] == JUMP_BATCH).all() and (normalized["Metadata_Source"] == JUMP.source).all()
    assert normalized["Metadata_Site"].tolist() == [1] * 4
    assert normalized["Metadata_ImageURL"].str.endswith("Images/r01c01f01p01-ch5sk1fk1fl1.tiff").iat[0]


def test_read_image_table_reads_the_synthetic_world(smoke_world, tmp_path):
    raw = smoke_world
    table = read_image_table(raw)
    written = pd.read_csv(raw.image_metadata)
    assert len(table) == len(written)
    assert list(table.columns[: len(IMAGE_COLUMNS)]) == list(IMAGE_COLUMNS)
    assert table["Metadata_Control"].eq(table["Metadata_Gene"] == synthetic.CONTROL).all()
    assert table["Metadata_Control"].any()
    assert all((raw.root / p).is_file() for p in table["Metadata_PathName"])
    two_alleles = table.groupby("Metadata_Gene")["Metadata_Allele"].nunique()
    assert (two_alleles == 2).any()  # alleles pooled under one gene
    assert "Metadata_QCFlag_isBlurry" in table

    copy = RawLayout(tmp_path / "raw")  # the shared world stays as it is
    write_image_table(table, copy)  # the normalised convention reads back identically
    pd.testing.assert_frame_equal(read_image_table(copy), table)


def test_read_image_table_names_file_and_missing_columns(tmp_path):
    raw = RawLayout(tmp_path / "raw")
    raw.image_metadata.parent.mkdir(parents=True)
    pd.DataFrame({"plate": [1], "well": ["a01"], "Metadata_Gene": ["X"]}).to_csv(raw.image_metadata, index=False)
    with pytest.raises(ImageTableError) as caught:
        read_image_table(raw)
    message = str(caught.value)
    assert str(raw.image_metadata) in message
    assert "Metadata_Plate" in message and "Image_Metadata_Plate" in message and "Image_FileName_OrigHoechst" in message

    table = normalize_rohban_metadata(pd.DataFrame({
        "Image_Metadata_Plate": [1, 1], "Image_Metadata_Well": ["a01", "a01"], "Image_Metadata_Site": [1, 1],
        "Image_FileName_OrigHoechst": ["a.tif", "b.tif"], "Image_Metadata_GeneSymbol": ["EMPTY", "EMPTY"]}))
    table.to_csv(raw.image_metadata, index=False)
    with pytest.raises(ImageTableError, match="appear twice"):
        read_image_table(raw)
    table.assign(Metadata_Site=["1", "two"]).to_csv(raw.image_metadata, index=False)
    with pytest.raises(ImageTableError, match=f"{raw.image_metadata}.*two"):
        read_image_table(raw)
    table.assign(Metadata_Site=[1, 2], Metadata_Gene=["EMPTY", None]).to_csv(raw.image_metadata, index=False)
    with pytest.raises(ImageTableError, match=r"1 rows lack \['Metadata_Gene'\] \(first: row 3"):
        read_image_table(raw)
    with pytest.raises(FileNotFoundError, match="no image table"):
        read_image_table(RawLayout(tmp_path / "elsewhere"))


@pytest.mark.slow  # a local S3 server and stage 00 through the runbook
def test_stage_00_downloads_a_real_screen_then_lists_what_else_is_missing(gallery, tmp_path, capsys):
    """The runbook's data stage on the Rohban layout: images arrive, the omics the interactome stage reads
    are reported missing (without that stage configured they are not required)."""
    from image2reg.runbook import main

    params = {"dataset": "rohban", "seed": 0, "folds": 1,
              "stages": {"data": {"source": "rohban",
                                  "download": {"plates": None, "genes": None, "max_fields": None,
                                               "workers": 2, "endpoint_url": gallery.endpoint}},
                         "interactome": {}}}
    path = tmp_path / "rohban.yml"
    path.write_text(yaml.safe_dump(params))
    code = main(["--params", str(path), "--runs-dir", str(tmp_path / "runs"),
                 "--reports-dir", str(tmp_path / "reports"),
                 "--no-html", "--stages", "data"], root=Path(__file__).resolve().parents[1])
    err = capsys.readouterr().err
    raw = RawLayout(tmp_path / "runs" / "rohban" / "raw")
    images = read_image_table(raw)
    assert code == 1 and "MissingRawInputsError" in err
    assert len(images) and all((raw.root / p).is_file() for p in images["Metadata_PathName"])
    assert "ppi" in err and "GSE146773" in err and "- images:" not in err and "- image_metadata:" not in err
