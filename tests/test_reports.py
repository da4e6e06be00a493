"""The index page of a run's reports: headline numbers read from the stages' summary.json, stage states,
links; rendered in a real headless browser (Debian's chromium; skipped when absent). And the HTML copies of
the reports: code hidden unless asked for, wide tables whole."""

from __future__ import annotations

import json
import shutil
import subprocess

import nbformat
import pandas as pd
import pytest

from image2reg.layout import RunLayout
from image2reg.reports import headline_numbers, index_html, stage_states, write_index
from image2reg.runbook import _write_html
from image2reg.stages import STAGES, stage_by_name

SUMMARIES = {
    "02_screen": {"screened": 39, "skipped": 0, "impactful": 15, "impactful_genes": ["GENE007", "GENE011"],
                  "chance": 0.5, "specificity_mean": 0.71, "specificity_impactful_mean": 0.8912},
    "03_embeddings": {"classes": 16, "chance": 0.0625, "test_bac_mean": 0.1457, "test_bac_sd": 0.0149,
                      "baseline_bac_mean": 0.2421},
    "05_interactome": {"n_genes": 132, "n_edges": 272, "targets": 15, "targets_covered": 15},
    "06_regulatory": {"test_auc": 0.8645, "test_ap": 0.8391},
    "07_translation": {"targets": 15, "candidates": 132, "top5": 0.1333, "top10": 0.3333, "auc20": 0.2011,
                       "p_random_top5": 0.0721, "p_random_top10": 0.0043, "p_random_auc20": 0.001,
                       "p_mean_all_top5": 0.25, "p_mean_all_top10": 0.03, "mean_all_top5": 0.0},
    "08_validation": {"restricted_top5": 0.1226, "restricted_mean_all_top5": 0.05, "restricted_p_random_top5": 0.002},
}


@pytest.fixture()
def run(tmp_path) -> RunLayout:
    layout = RunLayout("demo", tmp_path / "runs", tmp_path / "reports")
    for stage_id, summary in SUMMARIES.items():
        folder = layout.stage_dir_of(stage_id)
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary))
    for stage in STAGES[:7]:  # 00-06 complete with reports, 07 interrupted, 08 not run
        manifest = layout.manifest(stage)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"status": "complete", "duration_s": 12.5, "finished_at": "2026-12-07 20:00"}))
        report = layout.report(stage)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.with_suffix(".html").write_text("<html></html>")
    layout.manifest(stage_by_name("translation")).write_text(json.dumps({"status": "started"}))
    return layout


def test_headline_numbers_come_from_the_summaries(run):
    rows = {(h.stage, h.what): h for h in headline_numbers(run)}
    assert rows[("02 screen", "impactful genes")].value == "15 of 39 screened"
    assert rows[("03 embeddings", "CNN test balanced accuracy (k-fold)")].value == "0.146 ± 0.015"
    assert "chance 0.062" in rows[("03 embeddings", "CNN test balanced accuracy (k-fold)")].against
    assert rows[("05 interactome", "interactome")].value == "132 genes, 272 edges"
    assert rows[("06 regulatory", "graph autoencoder: link prediction AUC (test edges)")].value == "0.865"
    top10 = rows[("07 translation", "LOTO top-10 accuracy (15 held-out genes, 132 candidates)")]
    assert (top10.value, top10.against, top10.p_value) == ("0.333", "random 0.076", "p = 0.0043")
    assert rows[("07 translation", "top-5 against the mean baseline (paired)")].p_value == "p = 0.25"
    assert rows[("08 validation", "top-5 on new genes (genes of the reference's clusters)")].value == "0.123"


def test_states_follow_the_manifests(run):
    states = {s.stage.name: s for s in stage_states(run, [(stage, None) for stage in STAGES])}
    assert states["data"].state == "complete" and states["data"].report == "00_data.html"
    assert states["translation"].state == "started" and states["translation"].report is None
    assert states["validation"].state == "not run" and states["validation"].duration_s is None


def test_summaries_of_a_small_run_without_some_numbers_still_make_a_page(tmp_path):
    layout = RunLayout("smoke", tmp_path / "runs", tmp_path / "reports")
    folder = layout.stage_dir_of("translation")
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"targets": 3, "candidates": 9, "top5": 0.3333}))  # max_k 5
    rows = headline_numbers(layout)
    assert [h.value for h in rows] == ["0.333"] and rows[0].against == "random 0.556"


def test_an_empty_run_says_so():
    page = index_html("demo", [], [])
    assert "No stage has written its summary yet" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_index_renders_in_a_real_browser_with_its_numbers_and_links(run, tmp_path):
    path = write_index(run, [(stage, None) for stage in STAGES])
    assert path == run.reports / "index.html"
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
                            capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "<svg" in dom and "image2reg · demo" in dom, result.stderr[-1000:]
    for text in ("15 of 39 screened", "0.146 ± 0.015", "132 genes, 272 edges", "0.865", "p = 0.0043",
                 "random 0.076", "0.123", "GENE007"):
        assert text in dom, text
    for stage in STAGES[:7]:
        assert f'href="{stage.id}.html"' in dom
    assert dom.count(">started<") >= 1 and ">not run<" in dom


def test_html_reports_hide_code_unless_asked_and_show_wide_tables_whole(tmp_path):
    notebook = nbformat.v4.new_notebook()
    wide = pd.DataFrame([range(30)], columns=[f"column_{i}" for i in range(30)])
    cell = nbformat.v4.new_code_cell("secret_variable_name = 1")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": wide.to_html()})]
    notebook.cells = [cell]
    report = tmp_path / "07_translation.ipynb"
    nbformat.write(notebook, report)
    _write_html(report)
    page = report.with_suffix(".html").read_text()
    assert "secret_variable_name" not in page and "column_29" in page and "overflow-x: auto" in page
    _write_html(report, show_code=True)
    assert "secret_variable_name" in report.with_suffix(".html").read_text()
