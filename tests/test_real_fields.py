"""Real fields of view through the project's reader, segmenter and nucleus filters.

Known answers from CellProfiler's own analysis of the same JUMP field (cpg0000 pilot plate
BR00117006, well A01, site 1, Hoechst ``-ch5``, an LZW-compressed 16-bit TIFF): its nucleus count in the
per-image table and its nucleus outlines. Skipped when ``../shared`` is absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO, real_file
from PIL import Image

from image2reg.config import load_params
from image2reg.images.io import ImageReadError, bit_depth, read_field
from image2reg.images.nuclei import filter_nuclei, measure_nuclei
from image2reg.images.pipeline import segmenter
from image2reg.images.segmentation import labels_from_outlines, match_labels

JUMP_DNA = "cytodataframe/tests/data/cytotable/JUMP_plate_BR00117006/images/orig/r01c01f01p01-ch5sk1fk1fl1.tiff"
JUMP_OUTLINES = ("cytodataframe/tests/data/cytotable/JUMP_plate_BR00117006/images/outlines/"
                 "r01c01f01p01-ch5sk1fk1fl1_nuclei_outlines.png")
JUMP_CP_TABLE = "cytodataframe/tests/data/cytotable/JUMP_plate_BR00117006/BR00117006_shrunken.parquet"
HT29_DNA = "cellprofiler_examples/ExampleHuman/images/AS_09125_050116030001_D03f00d0.tif"


def jump_images_params():
    return load_params(REPO / "params" / "jump.yml").stages.images


def test_the_reader_decodes_the_lzw_jump_field():
    path = real_file(JUMP_DNA)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW  # the gallery's format, as published
    image = read_field(path)
    assert image.shape == (1080, 1080) and image.dtype == np.uint16
    assert bit_depth(image) == 16 and image.max() == 65535


def test_the_jump_field_segments_like_cellprofiler():
    image = read_field(real_file(JUMP_DNA))
    cp_count = int(pd.read_parquet(real_file(JUMP_CP_TABLE), columns=["Image_Count_Nuclei"])
                   ["Image_Count_Nuclei"].dropna().iloc[0])
    cp_regions = labels_from_outlines(np.asarray(Image.open(real_file(JUMP_OUTLINES))))
    assert cp_count == cp_regions.max() == 188

    params = jump_images_params()
    labels = segmenter(params)(image.astype(np.float32), None)
    n_ours = int(labels.max())
    assert abs(n_ours - cp_count) <= 0.15 * cp_count, f"{n_ours} nuclei against CellProfiler's {cp_count}"

    scores = match_labels(cp_regions, labels, iou_threshold=0.5)
    assert scores["tp"] >= 0.8 * cp_count, scores  # CellProfiler's nuclei matched one-to-one at IoU >= 0.5

    table = measure_nuclei(labels, image.astype(np.float32))
    reasons = filter_nuclei(table, **params.filters.model_dump())
    kept = float((reasons == "").mean())
    # the reference's filters (area 400-4000 px, ...) keep most nuclei of a 20x U2OS field, not all
    assert 0.4 <= kept <= 0.95, reasons.value_counts()


def test_a_second_real_dna_field_goes_through_reader_and_segmenter():
    image = read_field(real_file(HT29_DNA))  # HT29 cells, 8-bit PackBits TIFF of another screen
    assert image.shape == (512, 512) and image.dtype == np.uint8 and bit_depth(image) == 8
    labels = segmenter(jump_images_params())(image.astype(np.float32), None)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert labels.max() > 20  # a crowded field: many nuclei, whatever the diameter prior merges


def test_unreadable_fields_name_the_file(tmp_path):
    missing = tmp_path / "absent.tif"
    with pytest.raises(ImageReadError, match="absent.tif"):
        read_field(missing)
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, np.arange(256 * 256, dtype=np.uint16).reshape(256, 256), compression="lzw")
    assert read_field(whole)[1, 0] == 256
    truncated = tmp_path / "truncated.tif"
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.ones((256, 256), np.uint16))
    truncated.write_bytes(raw.read_bytes()[:40_000])
    with pytest.raises(ImageReadError, match="truncated.tif"):
        read_field(truncated)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.ones((3, 32, 32), np.uint16), photometric="minisblack")
    with pytest.raises(ImageReadError, match="stack.tif.*shape"):
        read_field(stack)
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.tif"):
        read_field(text)


def test_a_missing_codec_is_named_with_its_fix(tmp_path, monkeypatch):
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint16), compression="lzw")

    def no_codec(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile, "imread", no_codec)
    with pytest.raises(ImageReadError, match=r"lzw.tif.*pip install imagecodecs"):
        read_field(path)


def test_bit_depth_is_read_off_the_pixels():
    assert bit_depth(np.array([[0, 4095]], np.uint16)) == 12
    assert bit_depth(np.array([[0, 4096]], np.uint16)) == 14
    assert bit_depth(np.array([[0, 65535]], np.uint16)) == 16
    assert bit_depth(np.array([[0, 255]], np.uint8)) == 8
    assert bit_depth(np.array([[0.5]], np.float32)) is None
