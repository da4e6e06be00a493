"""Field QC: blur and saturation measures, and the flags on hand-made tables and on the synthetic world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from image2reg.config import load_params
from image2reg.data import synthetic
from image2reg.images.qc import field_qc, flag_fields, power_log_log_slope
from image2reg.layout import RawLayout

ROOT = Path(__file__).resolve().parents[1]

#: The rule recommended for params files: robust per-plate blur cut, 0.5 % clipped pixels.
DEFAULT_RULE = {"blur_max_slope": None, "blur_mad_k": 5.0, "saturation_max_fraction": 0.005}


def texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """Grainy bright discs ("nuclei") on a noisy background, as 16-bit counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    nuclei = np.zeros((size, size), bool)
    for y, x in rng.integers(0, size, (12, 2)):
        nuclei |= (yy - y) ** 2 + (xx - x) ** 2 < 12**2
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0)
    scene = 300 + nuclei * 2000 * (1 + 0.8 * grain) + rng.normal(0, 10, (size, size))
    return np.clip(scene, 0, 65535).astype(np.uint16)


def test_blurred_field_has_a_steeper_spectrum_and_a_weaker_laplacian():
    sharp = texture()
    blurred = ndimage.gaussian_filter(sharp.astype(np.float32), 4).astype(np.uint16)
    sharp_qc, blurred_qc = field_qc(sharp), field_qc(blurred)
    assert blurred_qc["power_log_log_slope"] < sharp_qc["power_log_log_slope"] - 1.0
    assert blurred_qc["laplacian_variance"] < 0.5 * sharp_qc["laplacian_variance"]
    assert set(sharp_qc) == {"power_log_log_slope", "laplacian_variance", "saturated_fraction", "saturation_value",
                             "mean_intensity", "p99_intensity"}


def test_slope_matches_the_full_spectrum_and_ignores_scale():
    image = texture(96, seed=3).astype(np.float64)[:, :90]  # odd ring counts, even width
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    ky, kx = np.meshgrid(np.rint(np.fft.fftfreq(96) * 96), np.rint(np.fft.fftfreq(90) * 90), indexing="ij")
    rings = np.floor(np.hypot(ky, kx)).astype(int) + 1
    fitted = np.arange(2, 90 // 8)
    ring_power = np.array([power[rings == r].sum() for r in fitted])
    expected = np.polyfit(np.log(fitted), np.log(ring_power), 1)[0]
    assert power_log_log_slope(image) == pytest.approx(expected, rel=1e-4)
    assert power_log_log_slope(image * 7 + 100) == pytest.approx(expected, rel=1e-4)
    assert np.isnan(power_log_log_slope(np.full((64, 64), 5.0)))


def test_saturated_fraction_counts_pixels_at_the_maximum():
    image = texture(100)
    image.ravel()[:250] = 65535
    assert field_qc(image)["saturated_fraction"] == pytest.approx(250 / 10_000)
    assert field_qc(image)["saturation_value"] == 65535
    # a 12-bit camera in a 16-bit file (Rohban): saturated pixels sit at 4095, never at the dtype's 65535
    twelve_bit = np.minimum(image, 4095)
    assert twelve_bit.dtype == np.uint16 and twelve_bit.max() == 4095
    assert field_qc(twelve_bit)["saturation_value"] == 4095
    assert field_qc(twelve_bit)["saturated_fraction"] == pytest.approx(np.mean(image >= 4095))
    assert field_qc(twelve_bit)["saturated_fraction"] > 0.005  # the flag fires at the default 0.5 %
    # an unsaturated 12-bit field reaches no maximum, whatever its dtype
    assert field_qc(np.minimum(image, 3000))["saturated_fraction"] == 0
    # a known bit depth overrides what the pixels suggest
    assert field_qc(twelve_bit, camera_bits=16)["saturated_fraction"] == 0
    assert field_qc(twelve_bit, saturation_value=4095)["saturated_fraction"] == pytest.approx(np.mean(image >= 4095))
    scaled = image.astype(np.float32) / 65535
    assert field_qc(scaled)["saturated_fraction"] == pytest.approx(250 / 10_000)


def hand_made_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"Metadata_Plate": np.repeat([41749, 41754, 41757], 8),
                          "Metadata_Well": ["b01", "c01", "d01", "e17", "E17", "f02", "g03", "h04"] * 3,
                          "power_log_log_slope": rng.normal(-1.5, 0.05, 24),
                          "saturated_fraction": 0.0})
    table.loc[table["Metadata_Plate"] == 41757, "power_log_log_slope"] -= 0.6  # a plate of lower slopes
    table.loc[9, "power_log_log_slope"] = -2.3
    table.loc[17, "saturated_fraction"] = 0.02
    return table


def test_blur_rules_absolute_and_per_plate():
    table = hand_made_table()
    mad = flag_fields(table, blur_max_slope=None, blur_mad_k=5, saturation_max_fraction=0.005)
    assert list(mad.index[mad["QC_blurry"]]) == [9]  # relative to its own plate, not the others
    absolute = flag_fields(table, blur_max_slope=-1.8, blur_mad_k=None, saturation_max_fraction=0.005)
    assert set(absolute.index[absolute["QC_blurry"]]) == {9} | set(range(16, 24))
    off = flag_fields(table, blur_max_slope=None, blur_mad_k=None, saturation_max_fraction=0.005)
    assert not off["QC_blurry"].any()
    assert list(off.index[off["QC_saturated"]]) == [17]
    assert off["QC_pass"].sum() == 23 and list(off.columns[:4]) == list(table.columns)


def test_outlier_plates_and_wells():
    table = hand_made_table()
    flagged = flag_fields(table, blur_max_slope=None, blur_mad_k=None, saturation_max_fraction=1.0,
                          outlier_plates=[41749], outlier_wells=["41754/B1", "41757/e17"])
    outliers = flagged[flagged["QC_outlier"]]
    assert set(outliers["Metadata_Plate"]) == {41749, 41754, 41757}
    assert (outliers["Metadata_Plate"] == 41749).sum() == 8
    assert outliers.loc[outliers["Metadata_Plate"] != 41749, "Metadata_Well"].str.lower().tolist() == [
        "b01", "e17", "e17"]
    assert (flagged["QC_pass"] == ~flagged["QC_outlier"]).all()


@pytest.mark.parametrize("plates, wells, named", [
    ([], ["41754-b01"], "41754-b01"),
    ([], ["41754/"], "41754/"),
    ([], [("41754", "b01")], "41754"),
    (["41749/b01"], [], "41749/b01"),
    ([""], [], "''"),
])
def test_malformed_outlier_entries_are_named(plates, wells, named):
    with pytest.raises(ValueError, match=named):
        flag_fields(hand_made_table(), blur_max_slope=None, blur_mad_k=None, saturation_max_fraction=1.0,
                    outlier_plates=plates, outlier_wells=wells)


def test_default_rule_finds_the_truth_of_the_synthetic_world(tmp_path):
    params = load_params(ROOT / "params" / "smoke.yml")
    world = params.stage("data").synthetic
    world = world.model_copy(update={"screen": world.screen.model_copy(
        update={"blurry_fraction": 0.1, "saturated_fraction": 0.1, "sites_per_well": 4})})
    raw = RawLayout(tmp_path / "raw")
    synthetic.synthesize_world(world, raw, params.seed, progress_bar=False)
    metadata = pd.read_csv(raw.image_metadata)
    measures = pd.DataFrame([field_qc(tifffile.imread(raw.images / str(plate) / name)) for plate, name in
                             zip(metadata["Image_Metadata_Plate"], metadata["Image_FileName_OrigHoechst"])])
    table = pd.concat([metadata.rename(columns={"Image_Metadata_Plate": "Metadata_Plate",
                                                "Image_Metadata_Well": "Metadata_Well"}), measures], axis=1)
    flagged = flag_fields(table, **DEFAULT_RULE)

    blurry = flagged["Image_Metadata_QCFlag_isBlurry"] == 1
    saturated = flagged["Image_Metadata_QCFlag_isSaturated"] == 1
    assert blurry.sum() >= 3 and saturated.sum() >= 3
    assert flagged.loc[blurry, "QC_blurry"].all()
    assert flagged.loc[saturated, "QC_saturated"].all()
    normal = ~(blurry | saturated)
    assert (~flagged.loc[normal, "QC_pass"]).sum() <= 1
