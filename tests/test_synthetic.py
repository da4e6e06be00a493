"""The synthetic world: determinism, ground truth consistent with images and masks, file formats, resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage, stats

from image2reg.config import SyntheticParams, load_params
from image2reg.data import synthetic
from image2reg.data.raw import MissingRawInputsError, check_raw_inputs, raise_for_missing
from image2reg.layout import RawLayout

ROOT = Path(__file__).resolve().parents[1]
SHARED_PPI = ROOT.parent / "shared" / "data" / "irefindex_v14_miscore_costs.tsv"


def smoke_params(**screen_changes) -> tuple[SyntheticParams, int]:
    params = load_params(ROOT / "params" / "smoke.yml")
    world = params.stage("data").synthetic
    if screen_changes:
        world = world.model_copy(update={"screen": world.screen.model_copy(update=screen_changes)})
    return world, params.seed


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> RawLayout:
    params, seed = smoke_params()
    raw = RawLayout(tmp_path_factory.mktemp("world") / "raw")
    synthetic.synthesize_world(params, raw, seed, progress_bar=False)
    return raw


def test_same_seed_gives_identical_files_and_another_seed_does_not(world, tmp_path):
    params, seed = smoke_params()
    again = RawLayout(tmp_path / "again")
    synthetic.synthesize_world(params, again, seed, progress_bar=False)
    assert tree_digest(again.root) == tree_digest(world.root)

    other = RawLayout(tmp_path / "other")
    synthetic.synthesize_world(params, other, seed + 1, progress_bar=False)
    first = tree_digest(world.root)
    changed = [name for name, digest in tree_digest(other.root).items() if first.get(name) != digest]
    assert any(name.startswith("images/") for name in changed) or set(tree_digest(other.root)) != set(first)


def test_masks_and_truth_tables_agree(world):
    metadata = pd.read_csv(world.image_metadata)
    nuclei = pd.read_parquet(world.truth / "nuclei.parquet")
    for row in metadata.itertuples():
        labels = tifffile.imread(world.masks / str(row.Image_Metadata_Plate) / row.Image_FileName_OrigHoechst)
        truth = nuclei[nuclei["file_name"] == row.Image_FileName_OrigHoechst].set_index("label")
        present = np.unique(labels[labels > 0])
        assert list(present) == list(truth.index) == list(range(1, len(truth) + 1))
        assert row.Image_Count_Nuclei == len(truth)
        area = np.bincount(labels.ravel(), minlength=len(truth) + 1)[1:]
        np.testing.assert_array_equal(area, truth["area"].to_numpy())
        if len(truth):
            centres = np.array(ndimage.center_of_mass(labels > 0, labels, truth.index.to_numpy()))
            np.testing.assert_allclose(centres, truth[["centroid_y", "centroid_x"]].to_numpy(), atol=1e-6)
            # a nucleus touches another exactly when its dilation reaches a foreign label
            for label in truth.index[truth["touching"]][:3]:
                grown = ndimage.binary_dilation(labels == label, structure=ndimage.generate_binary_structure(2, 1))
                assert np.any((labels[grown] != label) & (labels[grown] > 0))


def test_images_show_nuclei_where_the_masks_are(world):
    metadata = pd.read_csv(world.image_metadata)
    fine = metadata[(metadata["Image_Metadata_QCFlag_isBlurry"] == 0)
                    & (metadata["Image_Metadata_QCFlag_isSaturated"] == 0)]
    for row in fine.itertuples():
        name = row.Image_FileName_OrigHoechst
        image = tifffile.imread(world.images / str(row.Image_Metadata_Plate) / name)
        labels = tifffile.imread(world.masks / str(row.Image_Metadata_Plate) / name)
        assert image.dtype == np.uint16 and labels.dtype == np.uint16 and image.shape == labels.shape
        inside = labels > 0
        outside = ~ndimage.binary_dilation(inside, iterations=4)
        if inside.any():
            assert np.median(image[inside]) > 5 * np.median(image[outside])


def test_blurry_and_saturated_fields_are_what_their_flags_say(world):
    metadata = pd.read_csv(world.image_metadata)

    def sharpness(image: np.ndarray) -> float:
        return float(ndimage.laplace(image.astype(np.float32)).var() / image.astype(np.float32).var())

    measures = []
    for row in metadata.itertuples():
        image = tifffile.imread(world.images / str(row.Image_Metadata_Plate) / row.Image_FileName_OrigHoechst)
        measures.append({"blurry": row.Image_Metadata_QCFlag_isBlurry,
                         "saturated": row.Image_Metadata_QCFlag_isSaturated,
                         "sharpness": sharpness(image), "clipped": float(np.mean(image == 65535))})
    measures = pd.DataFrame(measures)
    assert measures["blurry"].sum() >= 1 and measures["saturated"].sum() >= 1
    normal = measures[(measures["blurry"] == 0) & (measures["saturated"] == 0)]
    assert measures.loc[measures["blurry"] == 1, "sharpness"].max() < normal["sharpness"].min()
    assert measures.loc[measures["saturated"] == 1, "clipped"].min() > 0.01
    assert normal["clipped"].max() == 0


def test_gene_effects_follow_the_ground_truth(tmp_path):
    """Per-nucleus phenotypes shift by the gene's effect, and the images express them."""
    params, seed = smoke_params(nuclei_per_field=30, field_size=320, sites_per_well=3)
    raw = RawLayout(tmp_path / "raw")
    synthetic.synthesize_world(params, raw, seed, progress_bar=False)
    genes = pd.read_parquet(raw.truth / "genes.parquet").set_index("gene")
    nuclei = pd.read_parquet(raw.truth / "nuclei.parquet")
    nuclei = nuclei[nuclei["allele"] != "VAR.1"]  # the variant allele has a scaled effect
    control = nuclei[nuclei["gene"] == synthetic.CONTROL]
    for gene, group in nuclei[nuclei["gene"] != synthetic.CONTROL].groupby("gene"):
        expected = genes.loc[gene, [f"shift_{p}" for p in synthetic.PHENOTYPES]].to_numpy(float)
        observed = (group[[f"phenotype_{p}" for p in synthetic.PHENOTYPES]].mean()
                    - control[[f"phenotype_{p}" for p in synthetic.PHENOTYPES]].mean()).to_numpy()
        assert np.linalg.norm(observed - expected) < 0.9, gene  # well offsets + sampling noise
        assert np.isclose(np.linalg.norm(expected), genes.loc[gene, "effect_size"])
    inner = nuclei[~nuclei["border"] & ~nuclei["touching"]]
    assert stats.spearmanr(inner["phenotype_area"], inner["area"]).statistic > 0.8
    assert stats.spearmanr(inner["phenotype_foci"], inner["n_foci"]).statistic > 0.5


def test_effect_direction_is_a_function_of_the_latent_program(world):
    genes = pd.read_parquet(world.truth / "genes.parquet")
    screen = genes[genes["impactful"]]
    direction = synthetic.latent(screen) @ synthetic.phenotype_map(synthetic.latent(screen).shape[1], 0).T
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    shifts = screen[[f"shift_{p}" for p in synthetic.PHENOTYPES]].to_numpy()
    np.testing.assert_allclose(shifts, direction * screen[["effect_size"]].to_numpy(), atol=1e-9)
    assert set(genes.loc[genes["in_screen"], "effect_class"]) == {"strong", "weak", "none"}
    assert (genes.loc[genes["effect_class"] == "none", "effect_size"] == 0).all()


def test_omics_carry_the_module_structure():
    params, seed = smoke_params()
    params = params.model_copy(update={"n_cells": 300})
    genes = synthetic.make_genes(params, seed)
    cells = synthetic.make_single_cell(genes, params, seed)
    rho = stats.spearmanr(cells.X.toarray()).statistic
    modules = genes.set_index("gene").loc[cells.var_names, "module"].to_numpy()
    same = modules[:, None] == modules[None, :]
    off_diagonal = ~np.eye(len(modules), dtype=bool)
    assert rho[same & off_diagonal].mean() > rho[~same].mean() + 0.3

    ppi = synthetic.make_ppi(genes, params, seed)
    module_of = genes.set_index("gene")["module"]
    within = module_of[ppi["protein1"]].to_numpy() == module_of[ppi["protein2"]].to_numpy()
    assert ppi.loc[within & (ppi["kind"] == "module"), "cost"].mean() < ppi.loc[ppi["kind"] == "noise", "cost"].mean()
    assert set(ppi["protein1"]) | set(ppi["protein2"]) <= set(genes.loc[genes["in_ppi"], "gene"])


def test_ppi_locality_links_genes_with_close_programs_inside_a_module():
    params, seed = smoke_params()
    params = params.model_copy(update={"n_genes": 200, "n_modules": 4, "ppi_p_within": 0.2})
    genes = synthetic.make_genes(params, seed)
    z = pd.DataFrame(synthetic.latent(genes), index=genes["gene"])

    def module_edge_distance(locality):
        ppi = synthetic.make_ppi(genes, params.model_copy(update={"ppi_locality": locality}), seed)
        module = ppi[ppi["kind"] == "module"]
        gap = z.loc[module["protein1"]].to_numpy() - z.loc[module["protein2"]].to_numpy()
        return np.linalg.norm(gap, axis=1).mean(), len(module)

    uniform, n_uniform = module_edge_distance(None)
    local, n_local = module_edge_distance(0.5)  # typical program distance inside a module: 0.35·√(2·4) ≈ 1
    assert local < 0.8 * uniform
    assert 0.9 < n_local / n_uniform < 1.1  # as many module edges: only who links to whom changes
    # without locality the table is the one drawn before the option existed (same draws, same edges)
    before = synthetic.make_ppi(genes, params, seed)
    assert before.equals(synthetic.make_ppi(genes, params.model_copy(update={"ppi_locality": None}), seed))


def complex_params(**changes) -> tuple[SyntheticParams, int]:
    params, seed = smoke_params()
    update = {"n_genes": 240, "n_modules": 4, "n_complexes": 5, "complex_spread": 1.0, "module_spread": 0.25,
              "ppi_p_complex": 0.5, "ppi_p_within": 0.03, "ppi_locality": None, **changes}
    return params.model_copy(update=update), seed


def test_complexes_nest_in_modules_and_their_members_share_programs_and_interactions():
    params, seed = complex_params()
    genes = synthetic.make_genes(params, seed)
    assert genes.groupby("complex")["module"].nunique().max() == 1  # a complex lies inside one module
    assert genes["complex"].nunique() > params.n_modules
    z = synthetic.latent(genes)
    i, j = np.triu_indices(len(genes), k=1)
    same_complex = genes["complex"].to_numpy()[i] == genes["complex"].to_numpy()[j]
    same_module = genes["module"].to_numpy()[i] == genes["module"].to_numpy()[j]
    distance = np.linalg.norm(z[i] - z[j], axis=1)
    # programs: complex mates ≈ 0.25·√(2·d) apart, module mates of other complexes ≈ 1.0·√(2·d)
    assert distance[same_complex].mean() < 0.5 * distance[same_module & ~same_complex].mean()

    ppi = synthetic.make_ppi(genes, params, seed)
    complex_of = genes.set_index("gene")["complex"]
    kinds = ppi["kind"].value_counts()
    assert (complex_of[ppi.loc[ppi["kind"] == "complex", "protein1"]].to_numpy()
            == complex_of[ppi.loc[ppi["kind"] == "complex", "protein2"]].to_numpy()).all()
    members = genes[genes["in_ppi"]]
    pairs = members.groupby("complex").size()
    n_complex_pairs = int((pairs * (pairs - 1) // 2).sum())
    module_sizes = members.groupby("module").size()
    n_module_pairs = int((module_sizes * (module_sizes - 1) // 2).sum()) - n_complex_pairs
    assert kinds["complex"] / n_complex_pairs == pytest.approx(0.5, abs=0.08)
    assert kinds["module"] / n_module_pairs == pytest.approx(0.03, abs=0.015)


def test_one_complex_per_module_is_the_world_without_complexes():
    params, seed = smoke_params()
    genes = synthetic.make_genes(params, seed)
    assert (genes["complex"] == genes["module"]).all()
    ppi = synthetic.make_ppi(genes, params, seed)
    assert "complex" not in set(ppi["kind"])
    # ppi_p_complex means nothing without complexes: the same draws, the same table
    assert ppi.equals(synthetic.make_ppi(genes, params.model_copy(update={"ppi_p_complex": 0.9}), seed))


def test_impactful_genes_come_in_groups_of_one_complex_and_one_effect_class():
    params, seed = complex_params()
    params = params.model_copy(update={"screen": params.screen.model_copy(
        update={"targets_per_complex": 3, "n_strong": 6, "n_weak": 4, "n_none": 5})})
    genes = synthetic.make_genes(params, seed)
    screen, _, screened_modules = synthetic.design_screen(genes, params, seed)
    impactful = screen[screen["impactful"]].assign(complex=lambda t: genes.set_index("gene").loc[t["gene"], "complex"]
                                                   .to_numpy())
    assert impactful.groupby("complex")["effect_class"].nunique().max() == 1
    sizes = impactful.groupby(["effect_class", "complex"]).size()
    assert sorted(sizes["strong"]) == [3, 3] and sorted(sizes["weak"]) == [1, 3]  # the weak class ends partial
    assert impactful["module"].isin(screened_modules).all()

    crowded = params.model_copy(update={"screen": params.screen.model_copy(update={"n_strong": 60})})
    with pytest.raises(ValueError, match="too few complexes with 3 eligible genes"):
        synthetic.design_screen(genes, crowded, seed)


def test_file_formats(world):
    metadata = pd.read_csv(world.image_metadata)
    for column in ("Image_Metadata_Plate", "Image_Metadata_Well", "Image_Metadata_Site", "Image_FileName_OrigHoechst",
                   "Image_Metadata_GeneSymbol", "Image_Metadata_AlleleDesc", "Image_Metadata_QCFlag_isBlurry",
                   "Image_Metadata_QCFlag_isSaturated", "Image_Count_Nuclei"):
        assert column in metadata.columns
    assert synthetic.CONTROL in set(metadata["Image_Metadata_GeneSymbol"])
    assert metadata["Image_FileName_OrigHoechst"].str.fullmatch(r"[\w-]+_[a-p]\d{2}_s\d+_w1[0-9A-F]{8}\.tif").all()

    ppi = pd.read_csv(world.ppi / "ppi_costs.tsv", sep="\t")
    assert list(ppi.columns) == ["protein1", "protein2", "cost"]
    assert ppi["cost"].between(0, 1).all() and (ppi["protein1"] == ppi["protein2"]).any()  # self-loops, as iRefIndex
    if SHARED_PPI.is_file():
        real = pd.read_csv(SHARED_PPI, sep="\t", nrows=5)
        assert list(real.columns) == list(ppi.columns) and real.dtypes.equals(ppi.dtypes)

    cells = ad.read_h5ad(world.expression / "scrnaseq_counts.h5ad")
    assert np.issubdtype(cells.X.dtype, np.integer) and cells.X.min() >= 0
    bulk = pd.read_csv(world.expression / "bulk_expression.csv", index_col=0)
    info = pd.read_csv(world.expression / "bulk_sample_info.csv")
    assert bulk.columns.str.fullmatch(r"GENE\d+ \(\d+\)").all()
    assert synthetic.TARGET_LINE in set(info.set_index("DepMap_ID").loc[bulk.index, "stripped_cell_line_name"])

    sets = [line.split("\t") for line in (world.genesets / "genesets.gmt").read_text().splitlines()]
    assert all(len(fields) >= 3 for fields in sets)
    screen_genes = (world.genesets / "screen_genes.txt").read_text().split()
    assert set(screen_genes) == set(metadata["Image_Metadata_GeneSymbol"]) - {synthetic.CONTROL}


def test_interrupted_world_resumes_per_plate(tmp_path, monkeypatch):
    params, seed = smoke_params(n_plates=2)
    reference = RawLayout(tmp_path / "reference")
    synthetic.synthesize_world(params, reference, seed, progress_bar=False)

    raw = RawLayout(tmp_path / "raw")
    real_render = synthetic.render_field
    per_plate = len(pd.read_csv(reference.image_metadata)) // 2
    calls = {"n": 0}

    def crash_in_second_plate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > per_plate:
            raise RuntimeError("killed")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_field", crash_in_second_plate)
    with pytest.raises(RuntimeError, match="killed"):
        synthetic.synthesize_world(params, raw, seed, progress_bar=False)
    assert not raw.root.exists()  # nothing half-written in place

    calls["n"] = -10**6  # no more crashes; count the fields rendered on resume
    synthetic.synthesize_world(params, raw, seed, progress_bar=False)
    assert calls["n"] + 10**6 == per_plate
    assert tree_digest(raw.root) == tree_digest(reference.root)


def test_changed_params_replace_the_world_and_foreign_data_is_never_touched(tmp_path):
    params, seed = smoke_params(n_plates=2)
    raw = RawLayout(tmp_path / "raw")
    synthetic.synthesize_world(params, raw, seed, progress_bar=False)
    smaller, _ = smoke_params(n_plates=1)
    synthetic.synthesize_world(smaller, raw, seed, progress_bar=False)
    assert sorted(p.name for p in raw.images.iterdir()) == ["90001"]
    assert synthetic.read_world_info(raw)["params"]["screen"]["n_plates"] == 1

    foreign = RawLayout(tmp_path / "foreign")
    (foreign.root / "images").mkdir(parents=True)
    keep = foreign.root / "images" / "plate1.tif"
    keep.write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="not synthesized"):
        synthetic.synthesize_world(params, foreign, seed, progress_bar=False)
    assert keep.read_bytes() == b"real data"


def test_screen_larger_than_the_eligible_genes_is_a_clear_error():
    params, seed = smoke_params(n_none=60)
    genes = synthetic.make_genes(params, seed)
    with pytest.raises(ValueError, match="raise n_genes"):
        synthetic.design_screen(genes, params, seed)


def test_missing_real_inputs_are_listed_with_their_source(tmp_path):
    raw = RawLayout(tmp_path / "raw")
    table = check_raw_inputs(raw, "rohban")
    assert not table["present"].any()
    with pytest.raises(MissingRawInputsError) as error:
        raise_for_missing(table, raw, "rohban")
    message = str(error.value)
    assert "GSE146773" in message and "iRefIndex" in message and str(raw.image_metadata) in message

    raw.image_metadata.parent.mkdir(parents=True)
    pd.DataFrame({"Image_Metadata_Plate": [41744, 41744], "Image_Metadata_Well": ["b01", "b01"],
                  "Image_Metadata_Site": [1, 2], "Image_Metadata_GeneSymbol": ["EMPTY", "EMPTY"],
                  "Image_FileName_OrigHoechst": ["a_b01_s1_w1.tif", "a_b01_s2_w1.tif"]}
                 ).to_csv(raw.image_metadata, index=False)
    (raw.images / "41744").mkdir(parents=True)
    (raw.images / "41744" / "a_b01_s1_w1.tif").write_bytes(b"")
    images = check_raw_inputs(raw, "rohban").set_index("key").loc["images"]
    assert not images["present"] and "1 of 2" in images["what"] and "a_b01_s2_w1.tif" in images["what"]

    pd.DataFrame({"plate": [1]}).to_csv(raw.image_metadata, index=False)
    images = check_raw_inputs(raw, "rohban").set_index("key").loc["images"]
    assert not images["present"] and "unreadable image table" in images["what"]


def test_only_inputs_of_the_configured_stages_are_required(tmp_path):
    raw = RawLayout(tmp_path / "raw")
    raw.image_metadata.parent.mkdir(parents=True)
    pd.DataFrame({"Image_Metadata_Plate": [41744], "Image_Metadata_Well": ["b01"], "Image_Metadata_Site": [1],
                  "Image_Metadata_GeneSymbol": ["EMPTY"], "Image_FileName_OrigHoechst": ["a.tif"]}
                 ).to_csv(raw.image_metadata, index=False)
    (raw.images / "41744").mkdir(parents=True)
    (raw.images / "41744" / "a.tif").write_bytes(b"")
    images_only = check_raw_inputs(raw, "jump", stages=["data", "images"])
    assert images_only.set_index("key")["needed"].to_dict() == {
        "image_metadata": True, "scrnaseq": False, "gene_ids": False, "bulk_expression": False,
        "bulk_sample_info": False, "ppi": False, "genesets": False, "screen_genes": False, "images": True}
    raise_for_missing(images_only, raw, "jump")  # the omics are absent, but no configured stage reads them
    with pytest.raises(MissingRawInputsError, match="screen_genes") as error:
        raise_for_missing(check_raw_inputs(raw, "jump", stages=["data", "images", "screen"]), raw, "jump")
    assert "scrnaseq" not in str(error.value)


def test_a_second_screen_keeps_first_screen_effects_and_draws_the_others_from_their_programs(world):
    genes = pd.read_parquet(world.truth / "genes.parquet")
    columns = [f"shift_{p}" for p in synthetic.PHENOTYPES]
    screened = genes.loc[genes["in_screen"], "gene"].tolist()[:3]
    others = genes.loc[~genes["in_screen"], "gene"].tolist()[:5]
    shifts = synthetic.world_shifts(genes, screened + others, (1.0, 2.0), seed=0)
    table = genes.set_index("gene")
    np.testing.assert_allclose(shifts.loc[screened, columns].to_numpy(), table.loc[screened, columns].to_numpy())
    z = synthetic.latent(table.loc[others])
    direction = z @ synthetic.phenotype_map(z.shape[1], 0).T
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    np.testing.assert_allclose(shifts.loc[others, columns].to_numpy(),
                               direction * shifts.loc[others, ["effect_size"]].to_numpy())
    assert shifts.loc[others, "effect_size"].between(1.0, 2.0).all() and not shifts.loc[others, "in_screen"].any()
    # a gene's effect does not depend on which other genes the screen asks for
    alone = synthetic.world_shifts(genes, others[-1:], (1.0, 2.0), seed=0)
    pd.testing.assert_frame_equal(alone, shifts.loc[others[-1:]])
    with pytest.raises(KeyError, match="not genes of the synthetic world: NOPE"):
        synthetic.world_shifts(genes, ["NOPE"], (1.0, 2.0), seed=0)


def test_second_screen_plan_places_every_well_once():
    plan = synthetic.second_screen_plan(["A", "B"], ["C", "D", "E"], train_wells=2, test_wells=1, control_wells=3,
                                        sites_per_well=2, seed=0)
    wells = plan.drop_duplicates(["plate", "well"])
    assert wells.groupby("gene").size().to_dict() == {"A": 2, "B": 2, "C": 1, "D": 1, "E": 1, synthetic.CONTROL: 3}
    assert len(plan) == 2 * len(wells) and plan["file_name"].is_unique
    assert set(plan.loc[plan["gene"].isin(["A", "B"]), "role"]) == {"train"}
    big = synthetic.second_screen_plan([f"G{k}" for k in range(400)], [], train_wells=1, test_wells=1,
                                       control_wells=1, sites_per_well=1, seed=0)
    assert sorted(big["plate"].unique()) == [95001, 95002] and big.groupby("plate")["well"].nunique().max() == 384


def test_second_screen_fields_are_deterministic_and_resume(world, tmp_path):
    from image2reg.images.pipeline import FIELD_COLUMNS

    genes = pd.read_parquet(world.truth / "genes.parquet")
    train = genes.loc[genes["impactful"], "gene"].tolist()[:2]
    test = genes.loc[~genes["in_screen"], "gene"].tolist()[:2]
    shifts = synthetic.world_shifts(genes, train + test, (1.5, 2.0), seed=0)
    plan = synthetic.second_screen_plan(train, test, train_wells=1, test_wells=1, control_wells=1, sites_per_well=2,
                                        seed=0)
    params, _ = smoke_params()
    fields = synthetic.render_second_screen(shifts, plan, params.screen, tmp_path / "a", seed=0, progress_bar=False)
    assert set(FIELD_COLUMNS) <= set(fields.columns) and len(fields) == len(plan) == 10
    assert fields.groupby("Metadata_Role")["Metadata_Gene"].nunique().to_dict() == {"control": 1, "test": 2, "train": 2}
    digest = tree_digest(tmp_path / "a")
    assert len(digest) == 10
    Path(fields["image_path"].iloc[3]).unlink()  # an interrupted run: the missing field is drawn again, the same
    synthetic.render_second_screen(shifts, plan, params.screen, tmp_path / "a", seed=0, progress_bar=False)
    assert tree_digest(tmp_path / "a") == digest
    synthetic.render_second_screen(shifts, plan, params.screen, tmp_path / "b", seed=1, progress_bar=False)
    assert tree_digest(tmp_path / "b") != digest
    image = tifffile.imread(fields["image_path"].iloc[0])
    assert image.shape == (params.screen.field_size,) * 2 and image.max() > 2 * np.median(image)  # nuclei are there
