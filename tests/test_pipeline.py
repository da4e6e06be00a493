"""Stage 01 on the smoke world: outputs, accuracy against the truth, resume, bad images, outliers, backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from image2reg.config import load_params
from image2reg.data.cellpainting import read_image_table
from image2reg.execute import ExecutionParams
from image2reg.images import pipeline, store
from image2reg.layout import RawLayout

ROOT = Path(__file__).resolve().parents[1]


def stage_params(**changes):
    params = load_params(ROOT / "params" / "smoke.yml").stage("images")
    changes.setdefault("execution", ExecutionParams(backend="inprocess"))
    return params.model_copy(update=changes)


@pytest.fixture(scope="module")
def world(smoke_world) -> RawLayout:
    return smoke_world


@pytest.fixture(scope="module")
def fields(world) -> pd.DataFrame:
    return pipeline.field_inputs(read_image_table(world), world, supplied_masks=True)


@pytest.fixture(scope="module")
def processed(fields, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("images")
    return out, pipeline.preprocess_images(fields, out, stage_params(), progress_bar=False)


def read_outputs(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    return (pd.read_parquet(out / "nuclei.parquet"), pd.read_parquet(out / "images.parquet"),
            store.open_crops(out)[:])


def test_outputs_are_consistent(processed, fields, world):
    out, summary = processed
    nuclei, images, crops = read_outputs(out)
    dropped = pd.read_parquet(out / "nuclei_dropped.parquet")
    assert summary["fields"] == len(images) == len(fields) and summary["failed_fields"] == 0
    assert summary["nuclei"] == len(nuclei) == len(crops) and summary["nuclei_dropped"] == len(dropped)
    assert list(nuclei["crop_index"]) == list(range(len(nuclei)))
    assert crops.dtype == np.uint8 and crops.shape[1:] == (64, 64)
    assert (crops.reshape(len(crops), -1).max(axis=1) == 255).all()  # every crop holds its nucleus
    assert not nuclei["touches_border"].any() and set(dropped["drop_reason"]) >= {"touches_border"}
    for column in ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Gene", "centroid_y", "image_path"):
        assert nuclei[column].notna().all()
    # the truth counts every nucleus of a field; the kept and dropped ones together should match it
    truth = pd.read_parquet(world.truth / "nuclei.parquet").groupby("file_name").size()
    found = (images.set_index(images["image_path"].map(lambda p: Path(p).name))["n_segmented"])
    assert (found.loc[truth.index] - truth).abs().max() <= 1


def test_flags_match_the_truth_and_reach_the_nuclei(processed, world):
    out, _ = processed
    nuclei, images, _ = read_outputs(out)
    truth = read_image_table(world).set_index("Metadata_FileName")
    names = images["image_path"].map(lambda p: Path(p).name)
    expected = truth.loc[names, "Metadata_QCFlag_isBlurry"].astype(bool).to_numpy()
    assert (images["QC_blurry"].to_numpy() == expected).all()
    assert (images["QC_saturated"].to_numpy()
            == truth.loc[names, "Metadata_QCFlag_isSaturated"].astype(bool).to_numpy()).all()
    failing = set(images.loc[~images["QC_pass"], "image_path"])
    assert failing and (nuclei["QC_pass"] == ~nuclei["image_path"].isin(failing)).all()


def test_segmentation_matches_the_ground_truth(processed, fields, world):
    out, _ = processed
    images = pd.read_parquet(out / "images.parquet")
    passing = images[images["QC_pass"]]
    masks = [world.masks / str(p) / Path(f).name for p, f in zip(passing["Metadata_Plate"], passing["image_path"])]
    illumination = {plate: str(pipeline.illumination_path(out, plate)) for plate in passing["Metadata_Plate"].unique()}
    scores = pipeline.evaluate_segmentation(passing, masks, illumination, stage_params())
    assert pipeline.overall_f1(scores) >= 0.95


def test_supplied_masks_are_used_as_given(fields, tmp_path, world):
    params = stage_params(segmentation=stage_params().segmentation.model_copy(update={"method": "masks"}))
    pipeline.preprocess_images(fields.head(4), tmp_path, params, progress_bar=False)
    nuclei = pd.read_parquet(tmp_path / "nuclei.parquet")
    truth = pd.read_parquet(world.truth / "nuclei.parquet")
    merged = nuclei.assign(file_name=nuclei["image_path"].map(lambda p: Path(p).name)).merge(
        truth, on=["file_name", "label"], suffixes=("", "_truth"))
    assert len(merged) == len(nuclei) > 0 and (merged["area"] == merged["area_truth"]).all()


def test_interrupted_run_resumes_without_redoing_finished_shards(fields, processed, tmp_path, monkeypatch):
    written = []
    real_write = store.write_shard

    def killed_after_two_shards(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt  # a kill: not an error the pipeline may catch
        written.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(store, "write_shard", killed_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        pipeline.preprocess_images(fields, tmp_path, stage_params(), progress_bar=False)
    monkeypatch.setattr(store, "write_shard", real_write)

    seen = []
    real_process = pipeline.process_field
    monkeypatch.setattr(pipeline, "process_field", lambda *a, **k: seen.append(1) or real_process(*a, **k))
    pipeline.preprocess_images(fields, tmp_path, stage_params(), progress_bar=False)
    per_shard = stage_params().shard_size
    assert len(seen) == len(fields) - 2 * per_shard
    for ours, reference in zip(read_outputs(tmp_path), read_outputs(processed[0])):
        if isinstance(ours, pd.DataFrame):
            pd.testing.assert_frame_equal(ours, reference)
        else:
            np.testing.assert_array_equal(ours, reference)


def test_corrupt_and_missing_images_are_reported_and_skipped(fields, tmp_path):
    subset = fields.head(6).copy()
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    subset.loc[subset.index[1], "image_path"] = str(broken)
    subset.loc[subset.index[2], "image_path"] = str(tmp_path / "absent.tif")
    params = stage_params(illumination=stage_params().illumination.model_copy(update={"method": "none"}),
                          max_bad_fraction=0.5)  # 2 of 6 bad: above the default share, which would stop the stage
    summary = pipeline.preprocess_images(subset, tmp_path / "out", params, progress_bar=False)
    images = pd.read_parquet(tmp_path / "out" / "images.parquet").set_index("image_path")
    assert summary["failed_fields"] == 2 and summary["fields"] == 6
    assert images.loc[str(broken), "error"] and "absent.tif" in images.loc[str(tmp_path / "absent.tif"), "error"]
    assert not images.loc[[str(broken), str(tmp_path / "absent.tif")], "QC_pass"].any()
    assert (images.loc[images["error"] == "", "n_segmented"] > 0).all()


def test_outlier_plates_and_wells_are_left_out(fields, tmp_path):
    well = fields["Metadata_Well"].iat[0]
    plate = fields["Metadata_Plate"].iat[0]
    qc = stage_params().qc.model_copy(update={"outlier_wells": [f"{plate}/{well.upper()}"]})
    summary = pipeline.preprocess_images(fields, tmp_path, stage_params(qc=qc), progress_bar=False)
    images = pd.read_parquet(tmp_path / "images.parquet")
    assert summary["outlier_fields_left_out"] == (fields["Metadata_Well"] == well).sum() > 0
    assert well not in set(images["Metadata_Well"])
    with pytest.raises(ValueError, match="not a 'plate/well'"):
        pipeline.preprocess_images(fields, tmp_path / "x",
                                   stage_params(qc=qc.model_copy(update={"outlier_wells": ["b01"]})),
                                   progress_bar=False)


@pytest.mark.slow  # a local Dask cluster
def test_dask_backend_gives_the_same_results(fields, processed, tmp_path):
    params = stage_params(execution=ExecutionParams(backend="dask", workers=2))
    pipeline.preprocess_images(fields, tmp_path, params, progress_bar=False)
    for ours, reference in zip(read_outputs(tmp_path), read_outputs(processed[0])):
        if isinstance(ours, pd.DataFrame):
            pd.testing.assert_frame_equal(ours.drop(columns="image_path"), reference.drop(columns="image_path"))
        else:
            np.testing.assert_array_equal(ours, reference)


def test_published_illumination_falls_back_to_an_estimate_for_plates_without_one(fields, tmp_path, caplog):
    import tifffile

    from image2reg.config import IlluminationParams

    fields = fields.assign(Metadata_Plate=np.where(np.arange(len(fields)) % 2 == 0, "P1", "P2"))  # two plates
    plates = ["P1", "P2"]
    published = tmp_path / "published.tif"
    shape = pipeline.read_field(fields["image_path"].iat[0]).shape
    tifffile.imwrite(published, np.full(shape, 1.0, np.float32))
    with_function = fields.assign(illumination_path=np.where(fields["Metadata_Plate"].astype(str) == plates[0],
                                                             str(published), None))
    base = stage_params()
    params = base.model_copy(update={"illumination": IlluminationParams(
        method="published", max_fields_per_plate=base.illumination.max_fields_per_plate,
        downsample=base.illumination.downsample)})
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="image2reg"):
        used = pipeline.prepare_illumination(with_function, out, params, progress_bar=False)
    assert used[plates[0]] == str(published)
    table = pipeline.illumination_table(used, out)
    assert table.loc[plates[0], "kind"] == "published"
    assert Path(used["P2"]).is_file() and table.loc["P2", "kind"] == "estimated"
    assert "no published illumination function for 1 of 2 plates (P2)" in caplog.text
    # no function named at all: every plate is estimated, nothing is an error
    everything = pipeline.prepare_illumination(fields, tmp_path / "out2", params, progress_bar=False)
    assert set(pipeline.illumination_table(everything, tmp_path / "out2")["kind"]) == {"estimated"}


def test_plate_percentile_scaling_keeps_dna_content_in_the_crops(fields, processed, tmp_path, world):
    from image2reg.images.io import read_field

    out = tmp_path / "plate"
    params = stage_params(crop_scaling="plate_percentile")
    pipeline.preprocess_images(fields, out, params, progress_bar=False)
    scales = json.loads((out / "crop_scales.json").read_text())
    plates = sorted(fields["Metadata_Plate"].astype(str).unique())
    assert sorted(scales) == plates
    # the known answer for one plate: the median of the percentiles of its corrected fields (all, when ≤ 24)
    plate = plates[0]
    group = fields[fields["Metadata_Plate"].astype(str) == plate]
    illumination = pipeline.read_illumination_function(out / "illumination" / f"{plate}.tif")
    expected = np.median([np.percentile(pipeline.corrected_field(read_field(path), illumination), 99.99)
                          for path in group["image_path"]])
    assert len(group) <= pipeline.SCALE_FIELDS and scales[plate] == pytest.approx(expected)
    # the same nuclei, the crops now as bright as their nuclei: a crop's mean is 255 · intensity / scale
    # (nuclei well below the scale, whose pixels are not clipped), where each crop scaled to its own max is not
    nuclei, _, crops = read_outputs(out)
    reference, _, own = read_outputs(processed[0])
    assert len(nuclei) == len(reference)
    brightness = np.array([crop[crop > 0].mean() for crop in crops])
    own_brightness = np.array([crop[crop > 0].mean() for crop in own])
    intensity = nuclei["mean_intensity"].to_numpy()
    scale = nuclei["Metadata_Plate"].astype(str).map(scales).to_numpy()
    unclipped = intensity < 0.8 * scale
    assert unclipped.mean() > 0.8
    np.testing.assert_allclose(brightness[unclipped], 255 * intensity[unclipped] / scale[unclipped], rtol=0.01)
    assert np.corrcoef(brightness[unclipped], intensity[unclipped])[0, 1] > 0.99
    assert np.corrcoef(own_brightness[unclipped], intensity[unclipped])[0, 1] < 0.9
    # a given scale (predict's, from the screen) is used as given
    given = tmp_path / "given"
    pipeline.preprocess_images(fields, given, params, progress_bar=False,
                               intensity_scales={plate: 2 * scales[plate] for plate in plates})
    assert json.loads((given / "crop_scales.json").read_text()) == {plate: 2 * scales[plate] for plate in plates}
