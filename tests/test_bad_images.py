"""Bad images, one policy everywhere: a missing, truncated, corrupt or wrong-shape field is named once in the
log, recorded in images.parquet's error column and skipped by every step that reads fields (the illumination
estimate included), whatever the illumination method; above ``max_bad_fraction`` the stage stops naming them."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from image2reg.config import load_params
from image2reg.data.cellpainting import read_image_table
from image2reg.execute import ExecutionParams
from image2reg.images import pipeline
from image2reg.images.illumination import estimate_illumination
from image2reg.images.io import (
    LISTED_BAD_FIELDS,
    ImageReadError,
    TooManyBadFieldsError,
    check_bad_fields,
    field_shape,
    read_field,
    read_tiff,
)
from image2reg.images.report import BAD_COLUMNS, bad_fields
from image2reg.images.segmentation import read_mask
from image2reg.layout import RawLayout, artifact_name

REPO = Path(__file__).resolve().parents[1]
METHODS = ("estimate", "none")


def stage_params(method: str = "estimate", max_bad_fraction: float = 0.25, **changes):
    params = load_params(REPO / "params" / "smoke.yml").stage("images")
    illumination = params.illumination.model_copy(update={"method": method, **changes.pop("illumination", {})})
    return params.model_copy(update={"execution": ExecutionParams(backend="inprocess"), "illumination": illumination,
                                     "max_bad_fraction": max_bad_fraction, **changes})


@pytest.fixture
def world(smoke_world, tmp_path) -> RawLayout:
    """A copy of the smoke world's raw folder that a test may break (the shared one stays intact)."""
    shutil.copytree(smoke_world.root, tmp_path / "raw")
    return RawLayout(tmp_path / "raw")


def fields_of(raw: RawLayout) -> pd.DataFrame:
    return pipeline.field_inputs(read_image_table(raw), raw, supplied_masks=False)


def victim(raw: RawLayout, k: int = 2) -> Path:
    """The k-th field of the image table (a field with nuclei, sampled by the illumination estimate)."""
    return Path(fields_of(raw)["image_path"].iat[k])


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def other_size(path: Path) -> None:
    image = tifffile.imread(path)
    tifffile.imwrite(path, image[: image.shape[0] // 2])


def colour(path: Path) -> None:
    image = tifffile.imread(path)
    tifffile.imwrite(path, np.stack([image] * 3, axis=-1), photometric="rgb")


def garbage(path: Path) -> None:
    size = path.stat().st_size  # the same size: a check by size alone would not notice
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def run(raw: RawLayout, out: Path, params) -> tuple[dict, pd.DataFrame]:
    summary = pipeline.preprocess_images(fields_of(raw), out, params, progress_bar=False)
    return summary, pd.read_parquet(out / artifact_name("images", "images")).set_index("image_path")


@pytest.mark.parametrize("defect, reason", [
    (truncate, "failed to read"),
    (other_size, r"shape \(80, 160\), not \(160, 160\)"),
    (colour, "not a single-channel field of view"),
    (garbage, "cannot read image"),
])
def test_a_bad_field_is_named_recorded_and_skipped_alike_under_every_illumination_method(world, tmp_path, caplog,
                                                                                          defect, reason):
    bad = victim(world)
    defect(bad)
    outcomes = {}
    for method in METHODS:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="image2reg"):
            summary, images = run(world, tmp_path / method, stage_params(method))
        error = images.loc[str(bad), "error"]
        assert str(bad) in error and re.search(reason, error), error
        assert (images.drop(index=str(bad))["error"] == "").all()
        assert summary["failed_fields"] == 1 and summary["fields"] == len(images) == 18
        assert not images.loc[str(bad), "QC_pass"]
        nuclei = pd.read_parquet(tmp_path / method / artifact_name("images", "nuclei"))
        assert str(bad) not in set(nuclei["image_path"]) and len(nuclei) > 0
        assert caplog.text.count(str(bad)) == 1, caplog.text  # named once, by the step that met it first
        outcomes[method] = (error, summary["failed_fields"], summary["fields"])
    assert outcomes["estimate"] == outcomes["none"]


def test_the_estimate_leaves_the_bad_field_out(world, tmp_path):
    fields = fields_of(world)
    bad = victim(world)
    truncate(bad)
    params = stage_params("estimate")
    run(world, tmp_path / "out", params)
    estimated = tifffile.imread(pipeline.illumination_path(tmp_path / "out", str(fields["Metadata_Plate"].iat[0])))
    good = [read_field(path) for path in fields["image_path"] if path != str(bad)]
    expected = estimate_illumination(good, smoothing_sigma=params.illumination.smoothing_sigma,
                                     downsample=params.illumination.downsample)
    np.testing.assert_array_equal(estimated, expected)


def test_a_resumed_run_finds_and_names_the_bad_field_the_same_way(world, tmp_path, caplog):
    bad = victim(world)
    truncate(bad)
    _, first = run(world, tmp_path / "first", stage_params("estimate"))
    # the estimate is done (its function is on disk), so this time the shard meets the bad file
    shutil.copytree(tmp_path / "first" / artifact_name("images", "illumination"),
                    tmp_path / "second" / artifact_name("images", "illumination"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="image2reg"):
        _, second = run(world, tmp_path / "second", stage_params("estimate"))
    assert caplog.text.count(str(bad)) == 1
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("method", METHODS)
def test_more_bad_fields_than_allowed_stop_the_stage_naming_them(world, tmp_path, method):
    broken = [victim(world, 2), victim(world, 7)]
    truncate(broken[0])
    garbage(broken[1])
    with pytest.raises(TooManyBadFieldsError) as error:
        run(world, tmp_path / "out", stage_params(method, max_bad_fraction=0.1))  # 2 of 18 > 0.1
    message = str(error.value)
    assert "2 of 18 fields" in message and "max_bad_fraction = 0.1" in message
    assert all(str(path) in message for path in broken)
    assert str(tmp_path / "out" / artifact_name("images", "images")) in message
    images = pd.read_parquet(tmp_path / "out" / artifact_name("images", "images")).set_index("image_path")
    assert all(str(path) in images.loc[str(path), "error"] for path in broken)
    # at the limit the stage completes: 2 of 18 is not more than 2/18
    summary, _ = run(world, tmp_path / "at_limit", stage_params(method, max_bad_fraction=2 / 18))
    assert summary["failed_fields"] == 2


def test_the_pool_backend_names_a_bad_field_once_in_this_process(world, tmp_path, caplog):
    bad = victim(world)
    truncate(bad)
    params = stage_params("none", execution=ExecutionParams(backend="processes", workers=2))
    with caplog.at_level(logging.WARNING, logger="image2reg"):  # only this process's log is captured
        summary, images = run(world, tmp_path / "out", params)
    assert caplog.text.count(str(bad)) == 1 and summary["failed_fields"] == 1
    assert str(bad) in images.loc[str(bad), "error"]


def test_a_large_plate_whose_sampled_fields_are_all_bad_is_named(world, tmp_path):
    fields = fields_of(world)
    # two sampled fields of 18 (every 9th): both broken leaves the plate's function nothing to start from
    for path in fields["image_path"].iloc[[0, 9]]:
        truncate(Path(path))
    params = stage_params("estimate", max_bad_fraction=0.5, illumination={"max_fields_per_plate": 2})
    with pytest.raises(ValueError, match=r"none of the 2 fields sampled from plate 90001") as error:
        run(world, tmp_path / "out", params)
    assert fields["image_path"].iat[9] in str(error.value)


def test_a_plate_of_bad_fields_only_gets_no_function_and_its_fields_are_recorded(world, tmp_path):
    fields = fields_of(world).head(3)
    for path in fields["image_path"]:
        garbage(Path(path))
    params = stage_params("estimate", max_bad_fraction=1.0)
    pipeline.preprocess_images(fields, tmp_path, params, progress_bar=False)
    images = pd.read_parquet(tmp_path / artifact_name("images", "images"))
    assert (images["error"] != "").all() and not pipeline.illumination_path(tmp_path, "90001").exists()


def test_good_data_gives_the_same_artifacts_with_no_share_of_bad_fields_allowed(world, tmp_path, smoke_stage01):
    summary, _ = run(world, tmp_path / "out", stage_params("estimate", max_bad_fraction=0.0))
    assert summary["failed_fields"] == 0
    for key in ("images", "nuclei", "nuclei_dropped"):
        ours = pd.read_parquet(tmp_path / "out" / artifact_name("images", key)).drop(columns="image_path")
        reference = pd.read_parquet(smoke_stage01 / artifact_name("images", key)).drop(columns="image_path")
        pd.testing.assert_frame_equal(ours, reference)
    plate = "90001"
    np.testing.assert_array_equal(tifffile.imread(pipeline.illumination_path(tmp_path / "out", plate)),
                                  tifffile.imread(pipeline.illumination_path(smoke_stage01, plate)))


# ---------------------------------------------------------------------------------------------------------
# The pieces: the reader, the shape probe, the check, the report's table
# ---------------------------------------------------------------------------------------------------------
def test_read_field_refuses_another_shape_naming_the_file(tmp_path):
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, np.zeros((20, 30), np.uint16))
    assert read_field(path, shape=(20, 30)).shape == (20, 30)
    with pytest.raises(ImageReadError, match=r"field.tif is a field of shape \(20, 30\), not \(30, 20\)"):
        read_field(path, shape=(30, 20))


def test_field_shape_reads_the_header_only(tmp_path):
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, np.zeros((1, 20, 30), np.uint16))
    assert field_shape(path) == (20, 30)
    truncate(path)  # the pixels are gone, the header is intact
    assert field_shape(path) == (20, 30)
    with pytest.raises(ImageReadError, match="failed to read"):
        read_field(path)
    with pytest.raises(ImageReadError, match="absent.tif"):
        field_shape(tmp_path / "absent.tif")
    (tmp_path / "notes.tif").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.tif"):
        field_shape(tmp_path / "notes.tif")


def test_a_truncated_mask_is_an_error_naming_it(tmp_path):
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, np.arange(400, dtype=np.uint16).reshape(20, 20))
    truncate(path)
    with pytest.raises(ImageReadError, match="cannot read mask .*mask.tif"):
        read_mask(path, shape=(20, 20))
    with pytest.raises(ImageReadError, match="cannot read image .*mask.tif"):
        read_tiff(path)


def test_plate_shapes_are_the_most_common_header_shape(tmp_path):
    paths = []
    for k, shape in enumerate([(20, 30)] * 4 + [(10, 30), (3, 20, 30)]):
        paths.append(tmp_path / f"f{k}.tif")
        tifffile.imwrite(paths[-1], np.zeros(shape, np.uint16), photometric="minisblack")
    (tmp_path / "broken.tif").write_bytes(b"garbage")
    paths.append(tmp_path / "broken.tif")
    fields = pd.DataFrame({"Metadata_Plate": ["A"] * 6 + ["B"], "image_path": [str(p) for p in paths]})
    assert pipeline.plate_field_shapes(fields) == {"A": (20, 30), "B": None}


def test_check_bad_fields_allows_the_share_and_lists_the_files_beyond_it():
    check_bad_fields({}, 0, 0.0, "images.parquet")
    check_bad_fields({"a.tif": "ImageReadError: a.tif"}, 20, 0.05, "images.parquet")  # 5 % is not more than 5 %
    with pytest.raises(TooManyBadFieldsError, match=r"(?s)1 of 10 fields .*a.tif.*images.parquet"):
        check_bad_fields({"a.tif": "ImageReadError: a.tif"}, 10, 0.05, "images.parquet")
    errors = {f"f{k}.tif": f"ImageReadError: f{k}.tif is bad" for k in range(LISTED_BAD_FIELDS + 5)}
    with pytest.raises(TooManyBadFieldsError) as error:
        check_bad_fields(errors, 100, 0.0, "images.parquet")
    message = str(error.value)
    assert f"f{LISTED_BAD_FIELDS - 1}.tif" in message and f"f{LISTED_BAD_FIELDS}.tif" not in message
    assert "and 5 more" in message
    check_bad_fields(errors, 25, 1.0, "images.parquet")  # 1: never stops


def test_field_errors_always_name_the_file():
    assert pipeline.field_error("/x/a.tif", ValueError("bad shape")) == "ValueError: /x/a.tif: bad shape"
    assert pipeline.field_error("/x/a.tif", ImageReadError("cannot read /x/a.tif")) == \
        "ImageReadError: cannot read /x/a.tif"


def test_bad_fields_lists_every_field_with_an_error():
    qc = pd.DataFrame({column: [f"{column}{k}" for k in range(4)] for column in BAD_COLUMNS})
    qc["error"] = ["", "ImageReadError: b.tif", "", "ValueError: d.tif: x"]
    qc["QC_pass"] = [True, False, False, False]
    table = bad_fields(qc)
    assert list(table.columns) == BAD_COLUMNS and list(table.index) == [0, 1]
    assert list(table["image_path"]) == ["image_path1", "image_path3"]
