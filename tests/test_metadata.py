"""Readers of the real screens' published metadata, checked against counts measured on the real files.

The real files live in ``../shared/data/real`` (skipped when absent); small hand-made tables cover the
errors and drops.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SHARED_DATA, real_file

from image2reg.data.cellpainting import ImageTableError, load_data_fields, normalize_jump_metadata, read_jump_metadata
from image2reg.data.metadata import (
    GeneListError,
    attach_idr_file_names,
    check_gene_list,
    condition_counts,
    gene_overlap,
    genes_to_screen,
    inventory,
    jump_orf_wells,
    overlap_table,
    read_gene_list,
    read_gene_table,
    read_idr_screen,
    read_outlier_list,
    read_rohban_metadata,
)
from image2reg.images.qc import outlier_fields

ROHBAN_METADATA = "image2reg/data/images/metadata/metadata_image_data.csv"
OUTLIERS = "image2reg/data/images/metadata/manually_selected_outliers_from_publication.txt"
LOAD_DATA = "pycytominer/tests/test_data/cell_locations_example_data/test_BR00126114_load_data_with_illum.parquet"


@pytest.fixture(scope="module")
def rohban():
    return read_rohban_metadata(real_file(ROHBAN_METADATA))


@pytest.fixture(scope="module")
def jump_tables():
    return read_jump_metadata(real_file("jump_datasets/metadata"))


def shared_list(name: str) -> list[str]:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"needs ../shared/data/{name}")
    return read_gene_list(path)


# ---------------------------------------------------------------------------------------------
# Rohban
# ---------------------------------------------------------------------------------------------
def test_the_reference_rohban_table_reads_with_its_known_counts(rohban):
    assert len(rohban) == 20_736
    assert sorted(rohban["Metadata_Plate"].unique()) == ["41744", "41749", "41754", "41755", "41756", "41757"]
    assert rohban.groupby("Metadata_Plate").size().eq(3456).all()
    assert rohban["Metadata_ASSAY_WELL_ROLE"].value_counts().to_dict() == {"Treated": 17_550, "Untreated": 1_890,
                                                                            "CTRL": 1_296}
    assert rohban.loc[rohban["Metadata_Control"], "Metadata_Gene"].unique().tolist() == ["EMPTY"]
    assert rohban["Metadata_Control"].sum() == 1_890
    assert rohban["Metadata_ControlType"].value_counts().to_dict() == {"EMPTY": 1_890, "Luciferase": 432,
                                                                        "LacZ": 432, "eGFP": 432}
    assert rohban["Metadata_Gene"].nunique() == 194
    assert int(rohban["Metadata_QCFlag_isBlurry"].sum()) == 17
    assert int(rohban["Metadata_QCFlag_isSaturated"].sum()) == 247
    assert rohban["Metadata_Well"].str.fullmatch(r"[a-p]\d\d").all()
    expected = "images/" + rohban["Metadata_Plate"] + "/" + rohban["Metadata_FileName"]
    assert (rohban["Metadata_PathName"] == expected).all()


def test_the_screened_and_impactful_genes_are_all_in_the_rohban_table(rohban):
    screened = shared_list("rohban_screen_genes.txt")
    impactful = shared_list("rohban_impactful_genes.txt")
    assert len(screened) == 190 and len(impactful) == 41
    genes = check_gene_list(screened, rohban["Metadata_Gene"], "rohban_screen_genes.txt")
    per_gene = rohban[rohban["Metadata_Gene"].isin(genes)].groupby("Metadata_Gene").size()
    assert len(per_gene) == 190 and per_gene.min() == 54 and per_gene.max() == 216
    assert set(impactful) <= set(genes)
    # the 190 are exactly the conditions that are no control construct
    assert set(genes) == set(rohban.loc[rohban["Metadata_ControlType"].isna(), "Metadata_Gene"])


def test_the_publication_outliers_leave_17262_fields(rohban):
    plates, wells = read_outlier_list(real_file(OUTLIERS))
    assert plates == ["41749"] and wells == ["41749/J13", "41755/B01", "41757/E17"]
    left_out = outlier_fields(rohban, plates, wells)
    assert left_out.sum() == 3_456 + 2 * 9  # the whole plate 41749, and two wells of nine fields on other plates
    assert (~left_out).sum() == 17_262  # the reference's count after removing the outliers


def test_the_rohban_inventory_reports_what_the_screen_holds(rohban):
    plates, wells = read_outlier_list(real_file(OUTLIERS))
    table = inventory(rohban, outliers=outlier_fields(rohban, plates, wells)).set_index("what")["value"]
    assert table["fields of view"] == "20736" and table["plates"] == "6"
    assert table["genes (not controls)"] == "190" and table["fields per gene"] == "54–216"
    assert table["control eGFP fields"] == "432" and table["role Untreated fields"] == "1890"
    assert table["published isBlurry flags"] == "17" and table["published isSaturated flags"] == "247"
    assert table["outlier fields left out (params qc.outlier_*)"] == "3474"
    counts = condition_counts(rohban)
    assert counts.loc["EMPTY", "fields"] == 1_890 and counts.loc["EMPTY", "wells"] == 210
    assert counts["fields"].sum() == len(rohban) and counts["plates"].max() == 6
    assert counts.loc["BRAF", "alleles"] != ""


def test_idr_screen_files_name_every_field_and_its_illumination_corrected_file(rohban):
    screens = [real_file(f"idr0033/screens/41744{suffix}.screen") for suffix in ("", "_illum_corrected")]
    idr = read_idr_screen(screens[0])
    assert len(idr) == 384 * 9 and idr["Metadata_Plate"].eq("41744").all()
    assert idr.columns.tolist()[3:] == ["FileName_Hoechst", "FileName_ERSyto", "FileName_ERSytoBleed",
                                        "FileName_PhGolgi", "FileName_Mito"]
    first = idr.iloc[0]
    assert (first["Metadata_Well"], first["Metadata_Site"]) == ("a01", 1)
    assert first["FileName_Hoechst"] == ("taoe005-u2os-72h-cp-a-au00044859_a01_s1_"
                                         "w1506fb051-c2ad-45db-8a52-674278937a31.tif")
    plate = rohban[rohban["Metadata_Plate"] == "41744"]
    named = attach_idr_file_names(plate, screens)
    assert len(named) == 3456
    # the reference's rule: '_illum_corrected' before the first '.' of the original name
    assert (named["Metadata_IllumCorrectedFileName"]
            == named["Metadata_FileName"].str.replace(".", "_illum_corrected.", n=1, regex=False)).all()
    wrong = plate.copy()
    wrong.loc[wrong.index[5], "Metadata_FileName"] = "other.tif"
    with pytest.raises(ImageTableError, match="1 fields have another Hoechst file.*other.tif"):
        attach_idr_file_names(wrong, screens)
    with pytest.raises(ImageTableError, match="not in the IDR screen files.*41754"):
        attach_idr_file_names(rohban[rohban["Metadata_Plate"].isin(["41744", "41754"])], screens)


def test_bad_rohban_rows_are_errors_naming_file_and_row(tmp_path):
    source = real_file(ROHBAN_METADATA)
    table = pd.read_csv(source, dtype=str, nrows=50)
    cases = {
        "plate": (lambda t: t.assign(Image_Metadata_Plate=t["Image_Metadata_Plate"].where(t.index != 7, "99999")),
                  r"bad.csv: 1 rows name a plate that is not a Rohban plate \(first: row 9, plate '99999'"),
        "file": (lambda t: t.assign(Image_FileName_OrigHoechst=t["Image_FileName_OrigHoechst"].where(t.index != 3)),
                 r"bad.csv: 1 rows lack \['Image_FileName_OrigHoechst'\] \(first: row 5"),
        "twice": (lambda t: pd.concat([t, t.iloc[[10]]]), r"bad.csv: 1 fields appear twice"),
        "columns": (lambda t: t.drop(columns="Image_Metadata_Site"),
                    r"bad.csv.*lacks columns \['Image_Metadata_Site'\]"),
    }
    for name, (change, message) in cases.items():
        path = tmp_path / "bad.csv"
        change(table).to_csv(path, index=False)
        with pytest.raises(ImageTableError, match=message):
            read_rohban_metadata(path)


# ---------------------------------------------------------------------------------------------
# JUMP
# ---------------------------------------------------------------------------------------------
def test_jump_orf_wells_have_their_known_counts(jump_tables):
    well, plate, orf = jump_tables
    orf_plates = plate[plate["Metadata_PlateType"] == "ORF"]
    assert len(orf_plates) == 251 and orf_plates["Metadata_Source"].eq("source_4").all()
    assert orf_plates["Metadata_Batch"].nunique() == 13
    reading = jump_orf_wells(*jump_tables)
    wells = reading.table
    assert len(wells) + reading.dropped["n_rows"].sum() == 96_377  # every well on the ORF plates is accounted for
    assert reading.dropped.set_index("reason")["n_rows"].to_dict() == {
        "empty well (JCP2022_999999)": 8_810, "no ORF of orf.csv (compound controls, IDs the table lacks)": 1_672}
    # 14 ORF plates hold no well of orf.csv's ORFs; the other 237 in 13 batches do
    assert wells["Metadata_Plate"].nunique() == 237 and wells["Metadata_Batch"].nunique() == 13
    assert wells["Metadata_Source"].eq("source_4").all()
    negative = wells[wells["Metadata_Control"]]
    assert negative["Metadata_Gene"].eq("EMPTY").all() and len(negative) == 973  # BFP, renamed
    assert wells["Metadata_ControlType"].value_counts().to_dict() == {"eGFP": 2026, "EMPTY": 973, "HcRed": 973,
                                                                       "LUCIFERASE": 973, "LacZ": 973}
    controls = pd.read_csv(real_file("jump_datasets/metadata/perturbation_control.csv"))
    negcon = controls[(controls["Metadata_modality"] == "orf") & (controls["Metadata_pert_type"] == "negcon")]
    assert set(negcon["Metadata_Name"]) == {"BFP", "HcRed", "LUCIFERASE", "LacZ"}
    assert set(negcon["Metadata_Name"]) - {"BFP"} | {"EMPTY"} <= set(wells["Metadata_ControlType"].dropna())


def test_jump_holds_175_of_the_249_interactome_genes_and_33_of_the_41_impactful(jump_tables):
    genes = jump_orf_wells(*jump_tables).table["Metadata_Gene"]
    interactome = read_gene_table(real_file("image2reg/other/all_gene_embeddings_clusters.csv"))
    impactful = shared_list("rohban_impactful_genes.txt")
    assert gene_overlap(genes, interactome)["n_reference"] == 249
    assert gene_overlap(genes, interactome)["n_shared"] == 175
    assert gene_overlap(genes, impactful)["n_shared"] == 33
    assert gene_overlap(interactome, impactful)["n_shared"] == 39
    table = overlap_table(genes, {"interactome": interactome, "impactful": impactful, "run": "not yet written"})
    assert table[["n_reference", "n_shared"]].iloc[:2].values.tolist() == [[249, 175], [41, 33]]
    assert table["missing"].iat[2] == "not yet written" and pd.isna(table["n_shared"].iat[2])


def test_jump_selection_by_batch_and_plate(jump_tables):
    one = jump_orf_wells(*jump_tables, batches=["2021_08_23_Batch12"]).table
    assert one["Metadata_Batch"].eq("2021_08_23_Batch12").all() and one["Metadata_Plate"].nunique() == 11
    plate = jump_orf_wells(*jump_tables, plates=["BR00126706"]).table
    assert plate["Metadata_Plate"].eq("BR00126706").all() and 0 < len(plate) <= 384
    with pytest.raises(ValueError, match=r"batches \['2099_Batch'\] hold no source_4 ORF plate"):
        jump_orf_wells(*jump_tables, batches=["2099_Batch"])
    with pytest.raises(ValueError, match=r"plates \['BR00126114'\] hold no source_4 ORF plate"):
        jump_orf_wells(*jump_tables, plates=["BR00126114"])  # a TARGET2 (compound) plate of an ORF batch


def test_the_real_load_data_table_names_dna_fields_and_their_illumination(jump_tables, caplog):
    load_data = pd.read_parquet(real_file(LOAD_DATA))  # source_4 plate BR00126114, two fields of well A01
    fields = load_data_fields(load_data)
    assert fields[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].values.tolist() == [
        ["BR00126114", "A01", 1], ["BR00126114", "A01", 2]]
    assert fields["Metadata_FileName"].tolist() == ["r01c01f01p01-ch5sk1fk1fl1.tiff", "r01c01f02p01-ch5sk1fk1fl1.tiff"]
    assert fields["Metadata_IllumFileName"].eq("BR00126114_IllumDNA.npy").all()
    assert fields["Metadata_ImageURL"].str.startswith(
        "s3://cellpainting-gallery/cpg0016-jump/source_4/images/2021_08_23_Batch12/images/BR00126114__").all()
    # BR00126114 is a TARGET2 (compound) plate: its fields are no ORF fields, and saying so is not silent
    with caplog.at_level("WARNING", logger="image2reg"):
        assert len(normalize_jump_metadata(load_data, *jump_tables)) == 0
    assert "2 of 2 fields are not in ORF wells" in caplog.text and "BR00126114" in caplog.text
    # the same table on an ORF plate of the batch: every field gets the well's gene
    wells = jump_orf_wells(*jump_tables, plates=["BR00126706"]).table.set_index("Metadata_Well")
    gene_well = wells.index[wells["Metadata_ControlType"].isna()][0]
    named = normalize_jump_metadata(load_data.assign(Metadata_Plate="BR00126706", Metadata_Well=gene_well),
                                    *jump_tables)
    assert len(named) == 2 and named["Metadata_Batch"].eq("2021_08_23_Batch12").all()
    assert named["Metadata_Gene"].eq(wells.loc[gene_well, "Metadata_Gene"]).all()
    assert not named["Metadata_Control"].any()
    no_file = load_data.assign(FileName_OrigDNA=[None, "r01c01f02p01-ch5sk1fk1fl1.tiff"])
    with pytest.raises(ImageTableError,
                       match=r"1 rows lack \['FileName_OrigDNA'\] \(first: row 0.*BR00126114, well A01"):
        load_data_fields(no_file)
    with pytest.raises(ImageTableError,
                       match=r"1 fields appear twice \(first: row 2, plate BR00126114, well A01, site 1"):
        load_data_fields(pd.concat([load_data, load_data.iloc[[0]]], ignore_index=True))
    with pytest.raises(ImageTableError, match=r"plates that the JUMP plate table does not know: \['BR99999999'\]"):
        normalize_jump_metadata(load_data.assign(Metadata_Plate="BR99999999"), *jump_tables)


# ---------------------------------------------------------------------------------------------
# Gene lists
# ---------------------------------------------------------------------------------------------
def test_gene_lists_are_read_and_checked(tmp_path):
    path = tmp_path / "screen_genes.txt"
    path.write_text("# screened\nBRAF\n\nTP53  # the guardian\n")
    assert read_gene_list(path) == ["BRAF", "TP53"]
    assert check_gene_list(["BRAF", "TP53"], ["BRAF", "TP53", "EMPTY"], path) == ["BRAF", "TP53"]
    with pytest.raises(GeneListError, match="1 of 2 listed gene.*not conditions of the screen: TP53"):
        check_gene_list(["BRAF", "TP53"], ["BRAF", "EMPTY"], path)
    with pytest.raises(GeneListError, match="lists the control 'EMPTY'"):
        check_gene_list(["BRAF", "EMPTY"], ["BRAF", "EMPTY"], path)
    path.write_text("BRAF\nTP53\nBRAF\n")
    with pytest.raises(GeneListError, match=r"BRAF \(lines 1, 3\)"):
        read_gene_list(path)
    path.write_text("# nothing\n")
    with pytest.raises(GeneListError, match="lists no gene"):
        read_gene_list(path)


def test_the_gene_list_restricts_what_is_screened(tmp_path):
    conditions = ["EMPTY", "BRAF", "TP53", "KRAS", "LacZ"]
    everything, none_lost = genes_to_screen(conditions, ["LacZ"], None)
    assert everything == ["BRAF", "KRAS", "TP53"] and none_lost == []  # no list: all but control and constructs
    listed = tmp_path / "screen_genes.txt"
    listed.write_text("TP53\nBRAF\nMYC\n")
    genes, without_nuclei = genes_to_screen(conditions, ["LacZ"], listed)
    assert genes == ["BRAF", "TP53"] and without_nuclei == ["MYC"]  # KRAS is not listed, so not screened
    assert genes_to_screen(conditions, ["LacZ"], tmp_path / "absent.txt")[0] == everything
    listed.write_text("TP53\nEMPTY\n")
    with pytest.raises(GeneListError, match="lists the control 'EMPTY'"):
        genes_to_screen(conditions, [], listed)
