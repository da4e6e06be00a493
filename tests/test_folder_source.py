"""A lab's own screen from a folder (``data.source: folder``): checks, errors, and a round trip.

The round trip writes the smoke world out as a plain folder of TIFFs and a CSV with the lab's own
column names, runs stages 00–03 on it, and compares the artifacts with those of ``source: synthetic``
for the same seed. A second test runs real fields (the LZW JUMP field and the HT29 field of
``../shared``) through stages 00–01.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import real_file
from test_cnn_stages import cnn_params

from image2reg.config import FolderParams, load_params
from image2reg.data.cellpainting import read_image_table
from image2reg.data.folder import FolderScreenError, link_inputs, read_folder_screen
from image2reg.images import store
from image2reg.layout import RawLayout

REPO = Path(__file__).resolve().parents[1]
COLUMNS = {"file": "image", "plate": "plate_id", "well": "well_id", "site": "field", "perturbation": "target"}


def tiny_screen(folder: Path, genes=("GENE1", "GENE2"), fields_per_gene: int = 2) -> Path:
    """Images and a CSV: the control DMSO and two genes, each in wells of one field."""
    (folder / "img" / "P1").mkdir(parents=True)
    rows = []
    for g, gene in enumerate(("DMSO", *genes)):
        for k in range(fields_per_gene):
            name = f"P1/{gene}_{k}.tif"
            tifffile.imwrite(folder / "img" / name, np.full((32, 32), 100 + g, np.uint16), compression="lzw")
            rows.append({"image": name, "plate_id": "P1", "well_id": f"{'ABCDEFGHIJ'[g]}{k + 1:02d}", "field": 1,
                         "target": gene, "dose": "1uM"})
    pd.DataFrame(rows).to_csv(folder / "screen.csv", index=False)
    return folder


def folder_params(**changes) -> FolderParams:
    return FolderParams.model_validate({"images": "img", "metadata": "screen.csv", "columns": COLUMNS,
                                        "controls": ["DMSO"], **changes})


def test_a_folder_screen_reads_into_the_image_table(tmp_path):
    tiny_screen(tmp_path)
    table = read_folder_screen(folder_params(columns={**COLUMNS, "extra": ["dose"]}), tmp_path, folds=2)
    assert len(table) == 6 and table["Metadata_Control"].sum() == 2
    assert set(table["Metadata_Gene"]) == {"EMPTY", "GENE1", "GENE2"}
    assert table.loc[table["Metadata_Control"], "Metadata_ControlType"].eq("DMSO").all()
    assert table["Metadata_PathName"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()
    assert table["Metadata_dose"].eq("1uM").all()


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "img" / "P1" / "GENE1_1.tif").unlink(),
     r"1 of 6 image files of .*screen.csv under .*img are missing: .*GENE1_1.tif"),
    (lambda f: pd.read_csv(f / "screen.csv").rename(columns={"target": "gene"}).to_csv(f / "screen.csv", index=False),
     r"no column\(s\) \['target'\] named in data.folder.columns; its columns are: image, plate_id, well_id, field, "
     r"gene, dose"),
    (lambda f: pd.concat([pd.read_csv(f / "screen.csv")] * 2).to_csv(f / "screen.csv", index=False),
     r"fields appear twice \(first: plate P1, well A01, site 1\)"),
    (lambda f: pd.read_csv(f / "screen.csv").replace({"DMSO": "dmso"}).to_csv(f / "screen.csv", index=False),
     r"control label\(s\) \['DMSO'\] match no row of column 'target' \(its values: GENE1, GENE2, dmso\)"),
    (lambda f: pd.read_csv(f / "screen.csv").iloc[:-1].to_csv(f / "screen.csv", index=False),
     r"1 gene\(s\) have fewer fields than the run's 2 folds .*GENE2 \(1\)"),
    (lambda f: pd.read_csv(f / "screen.csv").assign(field="one").to_csv(f / "screen.csv", index=False),
     r"column 'field' holds a value that is not a site number \(row 2: 'one'\)"),
    (lambda f: (f / "screen.csv").unlink(), r"no metadata table at .*screen.csv"),
    (lambda f: (f / "genes.txt").write_text("GENE1\nGENE9\n"),
     r"data.folder.gene_list: .*genes.txt: 1 of 2 listed gene\(s\) are not conditions of the screen: GENE9"),
])
def test_bad_folder_screens_are_clear_errors(tmp_path, change, message):
    tiny_screen(tmp_path)
    change(tmp_path)
    (tmp_path / "genes.txt").exists() or (tmp_path / "genes.txt").write_text("GENE1\nGENE2\n")
    with pytest.raises(FolderScreenError, match=message):
        read_folder_screen(folder_params(gene_list="genes.txt"), tmp_path, folds=2)


def test_many_missing_files_are_counted_and_the_first_named(tmp_path):
    tiny_screen(tmp_path, genes=[f"G{i}" for i in range(8)])
    for path in (tmp_path / "img" / "P1").glob("G*.tif"):
        path.unlink()
    with pytest.raises(FolderScreenError, match=r"16 of 18 image files .* are missing: .*G0_0.tif.* \(16 in all\)"):
        read_folder_screen(folder_params(), tmp_path, folds=2)


def test_optional_inputs_are_linked_not_copied(tmp_path):
    tiny_screen(tmp_path)
    (tmp_path / "edges.tsv").write_text("protein1\tprotein2\tcost\nA\tB\t0.1\n")
    (tmp_path / "counts.csv").write_text("cell,A,B\nc1,1,2\n")
    raw = RawLayout(tmp_path / "raw")
    links = link_inputs(folder_params(ppi="edges.tsv", single_cell="counts.csv"), tmp_path, raw)
    assert links["ppi"].is_symlink() and links["ppi"].resolve() == (tmp_path / "edges.tsv").resolve()
    assert links["single_cell"].name == "scrnaseq_counts.csv"
    from image2reg.data.raw import raw_input_path
    assert raw_input_path(raw, "folder", "scrnaseq") == links["single_cell"]  # the CSV form is found
    with pytest.raises(FolderScreenError, match=r"data.folder.gene_sets: .*absent.gmt does not exist"):
        link_inputs(folder_params(gene_sets="absent.gmt"), tmp_path, raw)


def test_stage_00_writes_nothing_when_the_folder_screen_is_wrong(tmp_path, run_cli, capsys):
    tiny_screen(tmp_path / "lab")
    (tmp_path / "lab" / "img" / "P1" / "GENE2_0.tif").unlink()
    params = {"dataset": "lab", "seed": 1, "folds": 2, "stages": {"data": {"source": "folder", "folder": {
        "images": str(tmp_path / "lab" / "img"), "metadata": str(tmp_path / "lab" / "screen.csv"),
        "columns": COLUMNS, "controls": ["DMSO"]}}}}
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yml").write_text(yaml.safe_dump({**params, "dataset": "smoke"}))
    code = run_cli(tmp_path, "--no-html", root=REPO)
    err = capsys.readouterr().err
    assert code != 0 and "FolderScreenError" in err and "GENE2_0.tif" in err
    assert not (tmp_path / "runs" / "smoke" / "raw" / "metadata" / "images.csv").exists()


# ---------------------------------------------------------------------------------------------
# The round trip: the smoke world as a plain folder gives the same stage 01-03 artifacts
# ---------------------------------------------------------------------------------------------
STAGES = ("data", "images", "screen", "embeddings")


def round_trip_params() -> dict:
    params = cnn_params()
    params["stages"] = {name: block for name, block in params["stages"].items() if name in STAGES}
    return params


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, run_cli):
    synthetic = tmp_path_factory.mktemp("as_synthetic")
    (synthetic / "params").mkdir()
    (synthetic / "params" / "smoke.yml").write_text(yaml.safe_dump(round_trip_params(), sort_keys=False))
    assert run_cli(synthetic, "--stages", *STAGES, "--no-html", root=REPO) == 0

    # the same images as a lab would have them: a folder of TIFFs and a CSV of its own
    raw = RawLayout(synthetic / "runs" / "smoke" / "raw")
    images = read_image_table(raw)
    lab = tmp_path_factory.mktemp("lab")
    pd.DataFrame({"image": images["Metadata_Plate"] + "/" + images["Metadata_FileName"],
                  "plate_id": images["Metadata_Plate"], "well_id": images["Metadata_Well"],
                  "field": images["Metadata_Site"], "target": images["Metadata_Gene"]}
                 ).to_csv(lab / "my_screen.csv", index=False)
    params = round_trip_params()
    params["stages"]["data"] = {"source": "folder", "folder": {
        "images": str(raw.images), "metadata": str(lab / "my_screen.csv"), "columns": COLUMNS, "controls": ["EMPTY"]}}
    folder = tmp_path_factory.mktemp("as_folder")
    (folder / "params").mkdir()
    (folder / "params" / "smoke.yml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(folder / "params" / "smoke.yml")
    assert run_cli(folder, "--stages", *STAGES, "--no-html", root=REPO) == 0
    return synthetic / "runs" / "smoke", folder / "runs" / "smoke"


@pytest.mark.slow  # two runs of stages 00-04
def test_the_folder_screen_gives_the_synthetic_runs_cells_and_crops(both_runs):
    synthetic, folder = both_runs
    a, b = synthetic / "01_images", folder / "01_images"
    np.testing.assert_array_equal(store.open_crops(a)[:], store.open_crops(b)[:])
    cells_a, cells_b = pd.read_parquet(a / "nuclei.parquet"), pd.read_parquet(b / "nuclei.parquet")
    measures = [c for c in cells_a.columns if not c.startswith("Metadata_") and c != "image_path"]
    assert measures and set(measures) <= set(cells_b.columns)
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Gene", "Metadata_Control"]
    pd.testing.assert_frame_equal(cells_a[keys + measures], cells_b[keys + measures])


@pytest.mark.slow  # two runs of stages 00-04
def test_the_folder_screen_gives_the_synthetic_runs_screen_and_embeddings(both_runs):
    synthetic, folder = both_runs
    for name in ("specificity.parquet", "screen_results.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(synthetic / "02_screen" / name),
                                      pd.read_parquet(folder / "02_screen" / name))
    assert (synthetic / "02_screen" / "impactful_genes.txt").read_text() == \
        (folder / "02_screen" / "impactful_genes.txt").read_text()
    for name in ("nucleus_embeddings.h5ad", "gene_embeddings.h5ad"):
        x, y = ad.read_h5ad(synthetic / "03_embeddings" / name), ad.read_h5ad(folder / "03_embeddings" / name)
        np.testing.assert_array_equal(np.asarray(x.X), np.asarray(y.X))
        assert list(x.obs_names) == list(y.obs_names)


# ---------------------------------------------------------------------------------------------
# Real fields from a folder
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # stages 00-01 through the runbook
def test_real_fields_from_a_folder_go_through_stages_00_and_01(tmp_path, run_cli):
    jump = real_file("cytodataframe/tests/data/cytotable/JUMP_plate_BR00117006/images/orig/"
                     "r01c01f01p01-ch5sk1fk1fl1.tiff")
    ht29 = real_file("cellprofiler_examples/ExampleHuman/images/AS_09125_050116030001_D03f00d0.tif")
    real = jump.parents[7]
    pd.DataFrame({"file": [str(jump.relative_to(real)), str(ht29.relative_to(real))],
                  "plate": ["BR00117006", "AS_09125"], "well": ["A01", "D03"], "site": [1, 1],
                  "gene": ["EMPTY", "EMPTY"]}).to_csv(tmp_path / "real.csv", index=False)
    params = yaml.safe_load((REPO / "params" / "jump.yml").read_text())
    images = params["stages"]["images"]
    images["illumination"]["method"] = "estimate"
    images["execution"] = {"backend": "inprocess", "workers": None}
    smoke = {"dataset": "smoke", "seed": 1, "folds": 1, "stages": {
        "data": {"source": "folder", "folder": {"images": str(real), "metadata": str(tmp_path / "real.csv"),
                                                "columns": {"file": "file", "plate": "plate", "well": "well",
                                                            "site": "site", "perturbation": "gene"},
                                                "controls": ["EMPTY"]}},
        "images": images}}
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    assert run_cli(tmp_path, "--no-html", root=REPO) == 0
    qc = pd.read_parquet(tmp_path / "runs" / "smoke" / "01_images" / "images.parquet").set_index("Metadata_Plate")
    assert qc["error"].eq("").all()
    assert qc.loc["BR00117006", "saturation_value"] == 65535 and qc.loc["AS_09125", "saturation_value"] == 255
    assert (qc["n_segmented"] > 20).all()
    nuclei = pd.read_parquet(tmp_path / "runs" / "smoke" / "01_images" / "nuclei.parquet")
    assert set(nuclei["Metadata_Plate"]) >= {"BR00117006"}


def test_the_example_params_for_an_own_screen_load_and_name_every_column():
    params = load_params(REPO / "params" / "own_screen.example.yml")
    data = params.stages.data
    assert data.source == "folder" and data.folder.controls == ["EMPTY"]
    assert set(params.stage_names()) >= {"data", "images", "screen", "embeddings", "loto", "interactome",
                                         "regulatory", "translation"}
    text = (REPO / "params" / "own_screen.example.yml").read_text()
    for key in FolderParams.model_fields:  # every key of the folder block is there, commented
        assert f"      {key}:" in text, key


def test_masks_and_a_parquet_table_are_taken_as_given(tmp_path):
    from image2reg.images.pipeline import field_inputs

    tiny_screen(tmp_path)
    pd.read_csv(tmp_path / "screen.csv").to_parquet(tmp_path / "screen.parquet")
    (tmp_path / "labels" / "P1").mkdir(parents=True)
    for image in (tmp_path / "img" / "P1").iterdir():
        tifffile.imwrite(tmp_path / "labels" / "P1" / image.name, np.zeros((32, 32), np.uint16))
    table = read_folder_screen(folder_params(metadata="screen.parquet", masks="labels"), tmp_path, folds=2)
    assert table["Metadata_MaskPathName"].str.startswith(str((tmp_path / "labels").resolve())).all()
    fields = field_inputs(table, RawLayout(tmp_path / "raw"), supplied_masks=True)
    assert [Path(m).name for m in fields["mask_path"]] == [Path(p).name for p in fields["image_path"]]
    (tmp_path / "labels" / "P1" / "GENE1_0.tif").unlink()
    with pytest.raises(FolderScreenError, match=r"1 of 6 mask files under .*labels are missing: .*GENE1_0.tif"):
        read_folder_screen(folder_params(masks="labels"), tmp_path, folds=2)
