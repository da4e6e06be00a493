"""What stage 01 reports: field counts, flagged fields, flags and segmentation against the truth, illumination
(:mod:`image2reg.images.report`), on the smoke world and on tables whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from image2reg.config import load_params
from image2reg.data.cellpainting import read_image_table
from image2reg.images import report
from image2reg.images.pipeline import field_inputs, overall_f1
from image2reg.layout import RawLayout, artifact_name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params" / "smoke.yml").stage("images")


@pytest.fixture(scope="module")
def qc(smoke_stage01):
    return pd.read_parquet(smoke_stage01 / artifact_name("images", "images"))


def test_field_counts_and_largest_conditions():
    fields = pd.DataFrame({"Metadata_Gene": ["A", "B", "B", "C", "C", "C"], "Metadata_Plate": [1, 1, 2, 2, 2, 2]})
    assert report.field_counts(fields) == {"fields": 6, "conditions": 3, "plates": 2}
    assert report.largest_conditions(fields, n=2) == ["C", "B"]
    assert report.largest_conditions(fields, n=10) == ["C", "B", "A"]


def test_flagged_fields_are_those_failing_qc_or_unread():
    qc = pd.DataFrame({column: range(4) for column in report.FLAGGED_COLUMNS})
    qc = qc.assign(QC_pass=[True, False, True, False], error=["", "", "OSError: x", ""], other=0)
    table = report.flagged_fields(qc)
    assert table.index.tolist() == [1, 2, 3] and table.columns.tolist() == report.FLAGGED_COLUMNS
    assert report.flagged_fields(qc, n=1).index.tolist() == [1]


def test_flags_are_compared_with_the_truth_by_file_name(tmp_path):
    raw = RawLayout(tmp_path / "raw")
    qc = pd.DataFrame({"image_path": [f"/x/{plate}/f{k}.tif" for k, plate in enumerate("aabb")],
                       "QC_blurry": [True, True, False, False], "QC_saturated": [False, False, False, True]})
    assert report.flags_against_truth(qc, raw) is None  # real data: no world
    raw.image_metadata.parent.mkdir(parents=True)
    raw.world.parent.mkdir(parents=True)
    raw.world.write_text(json.dumps({"summary": {}}))
    pd.DataFrame({"Image_FileName_OrigHoechst": ["f0.tif", "f1.tif", "f2.tif", "f3.tif", "unprocessed.tif"],
                  "Image_Metadata_QCFlag_isBlurry": [1, 0, 1, 0, 1],
                  "Image_Metadata_QCFlag_isSaturated": [0, 0, 0, 1, 1]}).to_csv(raw.image_metadata, index=False)
    table = report.flags_against_truth(qc, raw)
    assert table.to_dict() == {"QC_blurry": {"true fields": 2, "flagged": 2, "flagged and true": 1},
                               "QC_saturated": {"true fields": 1, "flagged": 1, "flagged and true": 1}}


def test_the_smoke_flags_against_the_truth_count_every_field(smoke_world, qc):
    table = report.flags_against_truth(qc, smoke_world)
    assert table.loc["flagged"].tolist() == [int(qc["QC_blurry"].sum()), int(qc["QC_saturated"].sum())]
    assert (table.loc["flagged and true"] <= table.loc[["flagged", "true fields"]].min()).all()


def test_the_illumination_overview_reads_back_the_estimates_with_their_truth(smoke_world, smoke_stage01, params):
    fields = field_inputs(read_image_table(smoke_world), smoke_world, supplied_masks=False)
    overview = report.illumination_overview(fields, smoke_stage01, params, smoke_world)
    plates = sorted(fields["Metadata_Plate"].astype(str).unique())
    assert list(overview.files) == plates and list(overview.functions) == plates
    assert overview.table["kind"].eq("estimated").all()
    assert list(overview.truth) == plates
    for plate in plates:
        r = np.corrcoef(overview.truth[plate].ravel(), overview.functions[plate].ravel())[0, 1]
        assert overview.functions[plate].shape == overview.truth[plate].shape and r > 0.8


def test_segmentation_examples_are_drawn_from_passing_fields(smoke_world, qc, params):
    examples = report.segmentation_examples(qc, field_inputs(read_image_table(smoke_world), smoke_world, False), {},
                                            params, smoke_world, seed=0, n=2)
    passing = qc[qc["QC_pass"]].sample(2, random_state=0)
    assert examples.titles == [f"{g} {w} s{s}" for g, w, s in
                               passing[["Metadata_Gene", "Metadata_Well", "Metadata_Site"]].itertuples(index=False)]
    assert len(examples.images) == len(examples.labels) == len(examples.truth) == 2
    assert all(label.shape == image.shape and label.max() > 0 for image, label in zip(examples.images, examples.labels))
    assert report.segmentation_examples(qc, qc, {}, params, RawLayout(Path("/nonexistent")), seed=0, n=1).truth is None


def test_the_segmentation_score_pools_objects_and_needs_a_world(smoke_world, smoke_stage01, qc, params):
    files = {plate: None for plate in qc["Metadata_Plate"].astype(str).unique()}
    score = report.score_segmentation(qc, smoke_world, files, params, seed=0, n=4)
    tp, fp, fn = (score.scores[key].sum() for key in ("tp", "fp", "fn"))
    assert len(score.scores) == 4 and score.f1 == overall_f1(score.scores)
    assert score.precision == tp / (tp + fp) and score.recall == tp / (tp + fn)
    assert score.f1 == pytest.approx(2 * score.precision * score.recall / (score.precision + score.recall))
    assert score.f1 > 0.5 and 0.5 <= score.mean_iou <= 1
    assert report.score_segmentation(qc, RawLayout(smoke_stage01 / "no_world"), files, params, seed=0) is None
    masks = params.model_copy(update={"segmentation": params.segmentation.model_copy(update={"method": "masks"})})
    assert report.score_segmentation(qc, smoke_world, files, masks, seed=0) is None


def test_images_summary_drops_the_timing_and_adds_the_segmentation_scores():
    counts = {"fields": 4, "failed_fields": 1, "nuclei": 30, "seconds": 12.5}
    assert report.images_summary(counts, None) == {"fields": 4, "failed_fields": 1, "nuclei": 30}
    score = report.SegmentationScore(pd.DataFrame({"f1": [0.8, 0.9]}), f1=0.85, precision=0.9, recall=0.8,
                                     mean_iou=0.7)
    summary = report.images_summary(counts, score)
    assert summary["segmentation_fields"] == 2 and summary["segmentation_f1"] == 0.85 and "seconds" not in summary
