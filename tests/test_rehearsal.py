"""A rehearsal of the real JUMP path, end to end through stages 00 and 01, on real files.

A local S3 server (moto) plays the Cell Painting Gallery. It holds, under their real gallery keys of
``cpg0016-jump/source_4``:

- the real LoadData table of source_4 (pycytominer's ``test_BR00126114_load_data_with_illum.parquet``),
- the real LZW-compressed Hoechst field of a JUMP plate (CPJUMP1 ``BR00117006``, well A01, site 1,
  as published by CytoDataFrame's tests), for both fields the table names,
- an illumination function (``<plate>_IllumDNA.npy``) made from that field, as the gallery's are made
  (a smooth, positive field of mean 1).

The LoadData table's plate is BR00126114, a compound (TARGET2) plate of batch 2021_08_23_Batch12;
the rehearsal files it under BR00126708, an ORF plate of the same batch whose well A01 holds an ORF
(TMEM17), because the pipeline keeps ORF wells only. Everything else (well, plate and ORF tables of
jump-cellpainting/datasets, file names, key layout, the image bytes) is the published data.

``python runbook.py --params <rehearsal params>`` then plans, downloads, checks, corrects, segments,
filters and crops, and the stage 01 report shows the real field with its segmentation outlined.
A second rehearsal plans Rohban from the reference's real per-image table (``metadata_image_data.csv``)
with its real file names under the cpg0017 key layout; the bytes of each field are the real JUMP U2OS
Hoechst field above, as no Rohban image is among the real files at hand.

Skipped when ``../shared`` (the real files) or moto is absent.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
import urllib3
import yaml
from conftest import REPO, real_file
from scipy import ndimage

from image2reg.data.cellpainting import JUMP, read_image_table
from image2reg.images.io import read_field
from image2reg.layout import RawLayout

pytestmark = pytest.mark.slow  # real files through stages 00-01 with a local S3 server

BUCKET = "cellpainting-gallery"
BATCH = "2021_08_23_Batch12"
PLATE = "BR00126708"  # an ORF plate of the batch; A01 holds TMEM17
REAL_PLATE = "BR00126114"
LOAD_DATA = "pycytominer/tests/test_data/cell_locations_example_data/test_BR00126114_load_data_with_illum.parquet"
DNA_FIELD = "cytodataframe/tests/data/cytotable/JUMP_plate_BR00117006/images/orig/r01c01f01p01-ch5sk1fk1fl1.tiff"


def gallery_objects() -> dict[str, bytes]:
    """The gallery's objects for one plate: LoadData table, DNA images, illumination function."""
    load_data = pd.read_parquet(real_file(LOAD_DATA))
    for column in [c for c in load_data if c.startswith("PathName_")]:
        load_data[column] = load_data[column].str.replace(REAL_PLATE, PLATE)
    load_data["Metadata_Plate"] = PLATE
    field = real_file(DNA_FIELD).read_bytes()
    objects = {}
    for folder, name in zip(load_data["PathName_OrigDNA"], load_data["FileName_OrigDNA"]):
        objects[folder.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/" + name] = field
    image = read_field(real_file(DNA_FIELD)).astype(np.float64)
    smooth = ndimage.gaussian_filter(np.minimum(image, np.percentile(image, 99)), 60) + 1.0
    buffer = io.BytesIO()
    np.save(buffer, smooth / smooth.mean())
    illum = (load_data["PathName_IllumDNA"].iat[0].removeprefix(f"s3://{BUCKET}/") + "/"
             + load_data["FileName_IllumDNA"].iat[0])
    objects[illum] = buffer.getvalue()
    buffer = io.BytesIO()
    load_data.to_parquet(buffer, index=False)
    objects[f"{JUMP.load_data_prefix(BATCH, PLATE)}load_data_with_illum.parquet"] = buffer.getvalue()
    return objects


def put(endpoint: str, key: str, data: bytes) -> None:
    # public-read, as in the gallery: moto refuses anonymous reads of private objects
    response = urllib3.request("PUT", f"{endpoint}/{BUCKET}/{quote(key)}", body=data,
                               headers={"x-amz-acl": "public-read"})
    assert response.status == 200, response.data


@pytest.fixture(scope="module")
def moto_endpoint():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        assert urllib3.request("PUT", f"{endpoint}/{BUCKET}", headers={"x-amz-acl": "public-read"}).status == 200
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto_gallery(moto_endpoint):
    objects = gallery_objects()
    for key, data in objects.items():
        put(moto_endpoint, key, data)
    return moto_endpoint, objects


def rehearsal_params(endpoint: str) -> dict:
    """params/jump.yml's data and images stages, fetching one plate from the local gallery."""
    jump = yaml.safe_load((REPO / "params" / "jump.yml").read_text())
    data = jump["stages"]["data"]
    data["download"] = {"plates": [PLATE], "genes": None, "max_fields": None, "workers": 2, "endpoint_url": endpoint}
    images = jump["stages"]["images"]
    images["execution"] = {"backend": "processes", "workers": 1}
    clusters = real_file("image2reg/other/all_gene_embeddings_clusters.csv")
    data["reference_genes"] = {"reference interactome": str(clusters)}
    return {"dataset": "rehearsal_jump", "seed": jump["seed"], "folds": jump["folds"],
            "stages": {"data": data, "images": images}}


def run_rehearsal(params_dict: dict, tmp_path: Path) -> tuple[Path, Path]:
    params = tmp_path / f"{params_dict['dataset']}.yml"
    params.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    result = subprocess.run([sys.executable, str(REPO / "runbook.py"), "--params", str(params), "--runs-dir", str(runs),
                             "--reports-dir", str(reports), "--no-html"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # kernels over IPC: no TCP port, and none of ipykernel's "without encryption" warnings in the output
    assert "without encryption" not in result.stdout + result.stderr
    return runs / params_dict["dataset"], reports / params_dict["dataset"]


def test_the_real_jump_path_runs_through_stages_00_and_01(moto_gallery, tmp_path):
    endpoint, objects = moto_gallery
    raw = RawLayout(tmp_path / "runs" / "rehearsal_jump" / "raw")
    (raw.root / "metadata" / "jump").mkdir(parents=True)
    for name in ("well", "plate", "orf"):  # the jump-cellpainting/datasets tables a user downloads once
        shutil.copy(real_file(f"jump_datasets/metadata/{name}.csv.gz"), raw.root / "metadata" / "jump")
    run, reports = run_rehearsal(rehearsal_params(endpoint), tmp_path)

    # downloaded: the real bytes, under the layout the image table names
    images = read_image_table(raw)
    assert len(images) == 2 and images["Metadata_Gene"].eq("TMEM17").all()
    assert images["Metadata_Batch"].eq(BATCH).all() and images["Metadata_Plate"].eq(PLATE).all()
    field_key = next(k for k in objects if k.endswith("r01c01f01p01-ch5sk1fk1fl1.tiff"))
    assert (raw.root / images["Metadata_PathName"].iat[0]).read_bytes() == objects[field_key]
    assert (raw.root / images["Metadata_IllumPathName"].iat[0]).is_file()

    # stage 01: corrected with the published function, segmented, filtered, cropped
    out = run / "01_images"
    qc = pd.read_parquet(out / "images.parquet")
    assert qc["error"].eq("").all() and len(qc) == 2
    assert qc["saturation_value"].eq(65535).all()
    nuclei = pd.read_parquet(out / "nuclei.parquet")
    per_field = nuclei.groupby("image_path").size()
    assert len(per_field) == 2 and per_field.between(80, 180).all()  # of CellProfiler's 188, the filters keep most
    assert nuclei["Metadata_Gene"].eq("TMEM17").all()

    # the reports: stage 00's inventory, stage 01's segmentation overlay of the real field
    data_report = json.loads((reports / "00_data.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in data_report["cells"]
                   for o in c.get("outputs", []))
    assert "fields of view" in text and "TMEM17" in text and "reference interactome" in text
    report = json.loads((reports / "01_images.ipynb").read_text())
    cells = report["cells"]
    heading = next(i for i, c in enumerate(cells)
                   if c["cell_type"] == "markdown" and "## Segmentation" in "".join(c["source"]))
    overlay = next(c for c in cells[heading + 1:] if c["cell_type"] == "code")
    assert any("image/png" in o.get("data", {}) for o in overlay["outputs"])


# ---------------------------------------------------------------------------------------------
# Rohban: the reference's per-image table, the cpg0017 layout
# ---------------------------------------------------------------------------------------------
ROHBAN_METADATA = "image2reg/data/images/metadata/metadata_image_data.csv"
ROHBAN_GENE = "BRAF"


def test_the_real_rohban_metadata_plans_downloads_and_runs_through_stage_01(moto_endpoint, tmp_path):
    from image2reg.data.cellpainting import ROHBAN, ROHBAN_BATCH, select_fields
    from image2reg.data.metadata import read_rohban_metadata

    metadata = real_file(ROHBAN_METADATA)
    table = read_rohban_metadata(metadata)
    table = table[table["Metadata_Plate"] == "41744"]
    planned = select_fields(table, genes=[ROHBAN_GENE], max_fields=4)  # what the plan below will choose
    field = real_file(DNA_FIELD).read_bytes()  # a real U2OS Hoechst field stands in for each Rohban field
    for name in planned["Metadata_FileName"]:
        put(moto_endpoint, f"{ROHBAN.images_prefix(ROHBAN_BATCH, '41744')}/{name}", field)

    rohban = yaml.safe_load((REPO / "params" / "rohban.yml").read_text())
    data = rohban["stages"]["data"]
    data["download"] = {"plates": ["41744"], "genes": [ROHBAN_GENE], "max_fields": 4, "workers": 2,
                        "endpoint_url": moto_endpoint, "metadata": str(metadata)}
    images = rohban["stages"]["images"]
    images["execution"] = {"backend": "processes", "workers": 1}
    run, reports = run_rehearsal({"dataset": "rehearsal_rohban", "seed": 1, "folds": 4,
                                  "stages": {"data": data, "images": images}}, tmp_path)

    raw = RawLayout(run / "raw")
    fetched = read_image_table(raw)
    assert len(fetched) == 4 and set(fetched["Metadata_Gene"]) == {ROHBAN_GENE, "EMPTY"}
    assert fetched["Metadata_FileName"].tolist() == planned.sort_values(
        ["Metadata_Plate", "Metadata_Well", "Metadata_Site"])["Metadata_FileName"].tolist()
    assert {"Metadata_QCFlag_isBlurry", "Metadata_ASSAY_WELL_ROLE", "Metadata_Batch"} <= set(fetched.columns)
    qc = pd.read_parquet(run / "01_images" / "images.parquet")
    assert qc["error"].eq("").all() and len(qc) == 4
    nuclei = pd.read_parquet(run / "01_images" / "nuclei.parquet")
    assert set(nuclei["Metadata_Gene"]) == {ROHBAN_GENE, "EMPTY"} and len(nuclei) > 4 * 80
    report = json.loads((reports / "01_images.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in report["cells"]
                   for o in c.get("outputs", []))
    assert "estimated" in text  # the reference table names no illumination function: estimated per plate
