"""What stage 00 reports: the Gallery plan's subset, a folder screen taken in, the inventory, reference overlaps,
the world's truth and the montage of fields (:mod:`image2reg.data.report`, :mod:`image2reg.data.overview`)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from test_folder_source import folder_params, tiny_screen

from image2reg.config import DownloadParams, load_params
from image2reg.data import report
from image2reg.data.cellpainting import read_image_table
from image2reg.data.folder import FolderScreenError
from image2reg.data.metadata import GeneListError
from image2reg.data.overview import condition_montage
from image2reg.data.synthetic import CONTROL
from image2reg.layout import RawLayout, RunLayout

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_params():
    return load_params(REPO / "params" / "smoke.yml")


def test_the_download_plan_asks_only_for_the_subset_given(monkeypatch, tmp_path):
    calls = {}
    monkeypatch.setattr(report, "plan_downloads", lambda dataset, raw, **kwargs: calls.update(kwargs, dataset=dataset))
    monkeypatch.setattr(report, "read_rohban_metadata", lambda path: pd.DataFrame({"read": [str(path)]}))
    raw = RawLayout(tmp_path / "raw")
    report.gallery_download_plan("jump", DownloadParams(plates=["P1"], genes=[], metadata="m.csv"), raw, tmp_path)
    assert calls["dataset"] == "jump" and calls["subset"] == {"plates": ["P1"]} and calls["fields"] is None
    report.gallery_download_plan("rohban", DownloadParams(max_fields=3, metadata="meta/m.csv"), raw, tmp_path)
    assert calls["subset"] == {"max_fields": 3}
    assert calls["fields"]["read"].tolist() == [str((tmp_path / "meta" / "m.csv").resolve())]


def test_a_folder_screen_is_taken_in_whole_or_not_at_all(tmp_path):
    tiny_screen(tmp_path)
    raw = RawLayout(tmp_path / "raw")
    with pytest.raises(FolderScreenError, match="data.folder.ppi: .*absent.tsv does not exist"):
        report.take_in_folder_screen(folder_params(ppi="absent.tsv"), tmp_path, raw, folds=2)
    assert not raw.root.exists()
    (tmp_path / "ppi.tsv").write_text("protein1\tprotein2\tcost\nGENE1\tGENE2\t0.1\n")
    screen, links = report.take_in_folder_screen(folder_params(ppi="ppi.tsv"), tmp_path, raw, folds=2)
    assert len(screen) == 6 and list(links) == ["ppi"] and links["ppi"].resolve() == tmp_path / "ppi.tsv"
    assert read_image_table(raw)["Metadata_Gene"].value_counts().to_dict() == {"EMPTY": 2, "GENE1": 2, "GENE2": 2}


def test_the_screen_overview_counts_the_fields_and_checks_the_gene_list(smoke_world, smoke_params, tmp_path):
    images = read_image_table(smoke_world)
    overview = report.screen_overview(images, smoke_world, smoke_params.stages.images)
    assert overview.inventory.loc["fields of view", "value"] == str(len(images))
    assert overview.inventory.loc["outlier fields left out (params qc.outlier_*)", "value"] == "0"
    assert overview.per_condition["fields"].sum() == len(images)
    assert overview.screen_genes == smoke_world.screen_genes.read_text().split()

    raw = RawLayout(tmp_path / "raw")
    without = report.screen_overview(images, raw, None)
    assert without.screen_genes is None
    assert "outlier fields left out (params qc.outlier_*)" not in without.inventory.index
    raw.screen_genes.parent.mkdir(parents=True)
    raw.screen_genes.write_text("NOTAGENE\n")
    with pytest.raises(GeneListError, match="1 of 1 listed gene.* not conditions of the screen: NOTAGENE"):
        report.screen_overview(images, raw, None)


def test_reference_overlap_reads_the_lists_of_the_params(tmp_path):
    params = yaml.safe_load((REPO / "params" / "smoke.yml").read_text())
    path = tmp_path / "smoke.yml"
    path.write_text(yaml.safe_dump(params))
    layout = RunLayout("smoke", tmp_path / "runs", tmp_path / "reports")
    conditions = pd.Series(["A", "B", "EMPTY"])
    assert report.reference_overlap(conditions, load_params(path), layout) is None

    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "mine.txt").write_text("A\nC\nB\nD\n")
    params["stages"]["data"]["reference_genes"] = {"mine": "lists/mine.txt"}
    path.write_text(yaml.safe_dump(params))
    table = report.reference_overlap(conditions, load_params(path), layout)
    assert table.to_dict("records") == [{"list": "mine", "n_reference": 4, "n_shared": 2, "missing": "C, D"}]


def test_the_world_truth_of_a_synthetic_world_and_none_for_real_data(smoke_world, tmp_path):
    assert report.read_world_truth(RawLayout(tmp_path / "raw")) is None
    world = report.read_world_truth(smoke_world)
    summary = json.loads(smoke_world.world.read_text())["summary"]
    assert world.summary_table()["synthetic world"].to_dict() == summary
    assert len(world.metadata) == len(read_image_table(smoke_world))
    assert {"gene", "module", "effect_class", "effect_size"} <= set(world.genes.columns)
    assert "kind" in world.ppi


def test_the_montage_shows_the_control_first_in_crops_no_larger_than_the_field(smoke_world):
    world = report.read_world_truth(smoke_world)
    montage = condition_montage(smoke_world, world.metadata, world.genes, CONTROL, field_size=160, n_fields=3)
    assert montage.conditions[0] == (CONTROL, "control") and montage.crop == 160 and montage.n_fields == 3
    assert [label.split()[0] for _, label in montage.conditions[1:]] == ["strong"] * 3 + ["weak"] + ["none"] * 2
    assert len(montage.panels) == len(montage.conditions)
    assert all(0 < len(row) <= 3 and all(im.shape == (160, 160) for im in row) for row in montage.panels)
    small = condition_montage(smoke_world, world.metadata, world.genes, CONTROL, field_size=160, max_crop=64)
    assert small.crop == 64 and small.panels[0][0].shape == (64, 64)


def test_a_reference_runs_lists_or_a_note_for_what_it_has_not_written(tmp_path):
    reference = RunLayout("rohban", tmp_path / "runs", tmp_path / "reports")
    impactful = reference.artifact("screen", "impactful_genes")
    impactful.parent.mkdir(parents=True)
    impactful.write_text("A\nB\n")
    lists = report.reference_gene_lists(reference)
    assert lists["rohban impactful (stage 02)"] == ["A", "B"]
    assert lists["rohban interactome (stage 06)"].startswith("not yet written by dataset 'rohban'")
    embeddings = reference.artifact("regulatory", "regulatory_embeddings")
    embeddings.parent.mkdir(parents=True)
    ad.AnnData(np.zeros((2, 1)), obs=pd.DataFrame(index=["C", "D"])).write_h5ad(embeddings)
    assert report.reference_gene_lists(reference)["rohban interactome (stage 06)"] == ["C", "D"]


def test_reference_overlap_adds_the_lists_of_the_validation_reference(tmp_path):
    params = yaml.safe_load((REPO / "params" / "smoke.yml").read_text())
    params["stages"] = {"data": {"source": "jump"}, "validation": {"reference": "rohban"}}
    path = tmp_path / "smoke.yml"
    path.write_text(yaml.safe_dump(params))
    layout = RunLayout("smoke", tmp_path / "runs", tmp_path / "reports")
    reference = RunLayout("rohban", tmp_path / "runs", tmp_path / "reports")
    reference.artifact("screen", "impactful_genes").parent.mkdir(parents=True)
    reference.artifact("screen", "impactful_genes").write_text("A\nZ\n")
    table = report.reference_overlap(pd.Series(["A", "B"]), load_params(path), layout).set_index("list")
    assert table.loc["rohban impactful (stage 02)", "n_shared"] == 1
    assert table.loc["rohban impactful (stage 02)", "missing"] == "Z"
    assert table.loc["rohban interactome (stage 06)", "missing"].startswith("not yet written")
