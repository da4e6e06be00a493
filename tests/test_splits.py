"""Splits of the nucleus table: grouped by field, stratified, undersampled, deterministic, LOTO, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image2reg.cnn.splits import loto_splits, min_fields, multiclass_splits, screen_splits

GENES = ["GENE_A", "GENE_B", "GENE_C"]


def nucleus_table(fields: dict[str, int], *, sizes: tuple[int, int] = (3, 12), seed: int = 0) -> pd.DataFrame:
    """A nucleus table with ``fields[condition]`` fields of view per condition, each of a random size.

    The index is neither 0..n-1 nor in order, so that tests catch positions used as labels.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for condition, n_fields in fields.items():
        for field in range(n_fields):
            well, site = divmod(field, 4)
            for crop in range(rng.integers(*sizes, endpoint=True)):
                rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"{condition}-{well}", "Metadata_Site": site,
                             "Metadata_Gene": condition, "Metadata_Control": condition == "EMPTY", "QC_pass": True,
                             "image_path": f"/images/{condition}/{well}_{site}.tif", "crop_index": crop})
    table = pd.DataFrame(rows)
    table.index = 1000 + 7 * rng.permutation(len(table))
    return table


@pytest.fixture(scope="module")
def nuclei() -> pd.DataFrame:
    """Three genes (GENE_A the largest) and a control with many more nuclei than any gene."""
    return nucleus_table({"GENE_A": 12, "GENE_B": 8, "GENE_C": 7, "EMPTY": 40}, seed=1)


def check_grouped_partition(splits: pd.DataFrame, nuclei: pd.DataFrame, *, all_folds: bool = True) -> None:
    """No field in two splits of a fold; each fold uses the same nuclei once; with ``all_folds``, the test
    parts of the folds partition them."""
    folds = [part for _, part in splits.groupby("fold")]
    used = set(folds[0].index)
    for part in folds:
        assert part.index.is_unique
        assert set(part.index) == used
        assert (part.groupby(nuclei.loc[part.index, "image_path"].to_numpy())["split"].nunique() == 1).all()
    if not all_folds:
        return
    tests = [part.index[part["split"] == "test"] for part in folds]
    assert sum(len(test) for test in tests) == len(used)
    assert set().union(*tests) == used


def conditions(splits: pd.DataFrame, nuclei: pd.DataFrame) -> pd.Series:
    return pd.Series(nuclei.loc[splits.index, "Metadata_Gene"].to_numpy(), index=splits.index)


def test_min_fields() -> None:
    assert min_fields(4, 5) == 7  # the reference's 4-fold CV with a 5-fold inner split
    assert min_fields(5, 4) == 5  # LOTO
    assert min_fields(4, 2) == 4  # every test fold needs a field
    assert min_fields(2, 2) == 4
    with pytest.raises(ValueError, match="at least 2"):
        min_fields(1, 5)


def test_screen_splits_grouped_balanced_and_labelled(nuclei: pd.DataFrame) -> None:
    splits = screen_splits(nuclei, "GENE_B", seed=0)
    check_grouped_partition(splits, nuclei)
    assert list(splits.columns) == ["fold", "split", "label"]
    assert sorted(splits["fold"].unique()) == [0, 1, 2, 3]
    condition = conditions(splits, nuclei)
    assert set(condition) == {"GENE_B", "EMPTY"}
    assert (splits["label"] == (condition == "GENE_B")).all()
    fold0 = condition[splits["fold"] == 0]
    # the control is undersampled nucleus by nucleus to the gene's count; the gene keeps all its nuclei
    assert (fold0 == "EMPTY").sum() == (fold0 == "GENE_B").sum() == (nuclei["Metadata_Gene"] == "GENE_B").sum()
    assert (splits.groupby(["fold", "split"])["label"].nunique() == 2).all()
    assert splits.groupby(["fold", "split"]).size().unstack().notna().all().all()


def test_screen_splits_keep_a_smaller_control_whole() -> None:
    nuclei = nucleus_table({"GENE_A": 24, "EMPTY": 8})
    counts = nuclei["Metadata_Gene"].value_counts()
    assert counts["GENE_A"] > counts["EMPTY"]
    splits = screen_splits(nuclei, "GENE_A", seed=0)
    assert conditions(splits[splits["fold"] == 0], nuclei).value_counts().equals(counts)


def test_multiclass_splits_stratified_with_one_encoding(nuclei: pd.DataFrame) -> None:
    splits, classes = multiclass_splits(nuclei, GENES, seed=0)
    assert classes == ["EMPTY", "GENE_A", "GENE_B", "GENE_C"]
    check_grouped_partition(splits, nuclei)
    condition = conditions(splits, nuclei)
    assert (splits["label"] == condition.map(classes.index)).all()  # one encoding for every fold and split
    assert (splits.groupby(["fold", "split"])["label"].nunique() == len(classes)).all()
    fold0 = condition[splits["fold"] == 0].value_counts()
    gene_counts = nuclei["Metadata_Gene"].value_counts()
    largest = gene_counts[GENES].max()
    assert fold0["EMPTY"] == largest < gene_counts["EMPTY"]  # the control down to the largest gene
    assert all(fold0[gene] == gene_counts[gene] for gene in GENES)  # the genes are not subsampled
    # stratified over fields: each condition's fields spread evenly over the test parts (±1 field)
    test = splits[splits["split"] == "test"]
    fields = pd.DataFrame({"condition": conditions(test, nuclei), "fold": test["fold"],
                           "field": nuclei.loc[test.index, "image_path"].to_numpy()})
    per_fold = fields.drop_duplicates().groupby(["condition", "fold"]).size().unstack()
    assert (per_fold.max(axis=1) - per_fold.min(axis=1) <= 1).all()


def test_multiclass_splits_can_keep_the_whole_control(nuclei: pd.DataFrame) -> None:
    splits, _ = multiclass_splits(nuclei, GENES, seed=0, undersample_control=False)
    assert splits["fold"].value_counts().eq(len(nuclei)).all()


@pytest.mark.parametrize("seed", range(5))
def test_every_condition_with_enough_fields_is_in_every_split(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fields = {f"GENE{i}": int(rng.integers(min_fields(4, 5), 15)) for i in range(6)} | {"EMPTY": 30}
    nuclei = nucleus_table(fields, sizes=(1, 60), seed=seed)  # very uneven field sizes
    splits, classes = multiclass_splits(nuclei, [name for name in fields if name != "EMPTY"], seed=seed)
    check_grouped_partition(splits, nuclei)
    assert (splits.groupby(["fold", "split"])["label"].nunique() == len(classes)).all()


@pytest.mark.parametrize("make", [
    lambda nuclei, seed: screen_splits(nuclei, "GENE_C", seed=seed),
    lambda nuclei, seed: multiclass_splits(nuclei, GENES, seed=seed)[0],
    lambda nuclei, seed: loto_splits(nuclei, GENES, "GENE_B", seed=seed)[0],
], ids=["screen", "multiclass", "loto"])
def test_splits_are_deterministic_for_a_seed(nuclei: pd.DataFrame, make) -> None:
    first = make(nuclei, 3)
    pd.testing.assert_frame_equal(first, make(nuclei, 3))
    assert not first.equals(make(nuclei, 4))


def test_loto_splits_hold_the_target_out(nuclei: pd.DataFrame) -> None:
    splits, classes = loto_splits(nuclei, GENES, "GENE_A", seed=0)
    assert classes == ["EMPTY", "GENE_B", "GENE_C"]
    assert splits.index.is_unique and (splits["fold"] == 0).all()
    condition = conditions(splits, nuclei)
    held_out = splits["split"] == "held_out"
    assert set(condition[held_out]) == {"GENE_A"} and "GENE_A" not in set(condition[~held_out])
    assert set(splits.index[held_out]) == set(nuclei.index[nuclei["Metadata_Gene"] == "GENE_A"])
    assert (splits.loc[held_out, "label"] == -1).all()
    trained = splits[~held_out]
    assert (trained["label"] == condition[~held_out].map(classes.index)).all()
    check_grouped_partition(trained, nuclei, all_folds=False)
    assert (trained.groupby("split")["label"].nunique() == len(classes)).all()
    largest_left = nuclei["Metadata_Gene"].value_counts()[["GENE_B", "GENE_C"]].max()
    assert (condition[~held_out] == "EMPTY").sum() == largest_left
    field_split = trained.groupby(nuclei.loc[trained.index, "image_path"].to_numpy())["split"].first()
    share = field_split.value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.6, abs=0.1)
    assert share["val"] == pytest.approx(0.2, abs=0.1) and share["test"] == pytest.approx(0.2, abs=0.1)


def test_loto_splits_can_hold_out_the_control(nuclei: pd.DataFrame) -> None:
    splits, classes = loto_splits(nuclei, GENES, "EMPTY", seed=0)
    assert classes == GENES
    held_out = splits["split"] == "held_out"
    assert set(splits.index[held_out]) == set(nuclei.index[nuclei["Metadata_Gene"] == "EMPTY"])


def test_qc_failing_nuclei_are_not_used(nuclei: pd.DataFrame) -> None:
    failing = nuclei.copy()
    failed_field = failing.loc[failing["Metadata_Gene"] == "GENE_A", "image_path"].iloc[0]
    failing.loc[failing["image_path"] == failed_field, "QC_pass"] = False
    failing.loc[failing.index[:5], "QC_pass"] = False
    excluded = set(failing.index[~failing["QC_pass"]])
    for splits in (screen_splits(failing, "GENE_A", seed=0), multiclass_splits(failing, GENES, seed=0)[0],
                   loto_splits(failing, GENES, "GENE_A", seed=0)[0]):
        assert not excluded & set(splits.index)
    failing.loc[failing["Metadata_Gene"] == "GENE_C", "QC_pass"] = False
    with pytest.raises(ValueError, match="GENE_C.*no nuclei in fields that pass QC"):
        multiclass_splits(failing, GENES, seed=0)


def test_too_few_fields_name_the_condition_and_its_count() -> None:
    nuclei = nucleus_table({"GENE_A": 8, "GENE_B": 6, "EMPTY": 20})
    with pytest.raises(ValueError, match=r"at least 7 per condition\): GENE_B has 6"):
        multiclass_splits(nuclei, ["GENE_A", "GENE_B"], seed=0)
    with pytest.raises(ValueError, match="GENE_B has 6"):
        screen_splits(nuclei, "GENE_B", seed=0)
    assert len(screen_splits(nuclei, "GENE_B", n_folds=3, n_inner=3, seed=0))  # fewer folds suffice


@pytest.mark.parametrize(("call", "message"), [
    (lambda n: screen_splits(n, "GENE_Z", seed=0), r"unknown conditions \['GENE_Z'\]"),
    (lambda n: screen_splits(n, "EMPTY", seed=0), "must differ from the control"),
    (lambda n: multiclass_splits(n, ["GENE_A", "GENE_Z"], seed=0), r"unknown conditions \['GENE_Z'\]"),
    (lambda n: multiclass_splits(n, ["GENE_A", "EMPTY"], seed=0), "do not list it among the genes"),
    (lambda n: multiclass_splits(n, "GENE_A", seed=0), "not the string"),
    (lambda n: multiclass_splits(n, [], seed=0), "no genes"),
    (lambda n: multiclass_splits(n, GENES, control="NONE", seed=0), r"unknown conditions \['NONE'\]"),
    (lambda n: loto_splits(n, GENES, "GENE_Z", seed=0), "neither one of the genes nor the control"),
    (lambda n: loto_splits(n, ["GENE_A"], "EMPTY", seed=0), "fewer than two classes"),
    (lambda n: multiclass_splits(n.drop(columns="QC_pass"), GENES, seed=0), r"lacks the columns \['QC_pass'\]"),
    (lambda n: multiclass_splits(pd.concat([n, n.iloc[:1]]), GENES, seed=0), "index must be unique"),
    (lambda n: multiclass_splits(n, GENES, n_inner=1, seed=0), "at least 2"),
], ids=["screen-unknown", "screen-control", "unknown-gene", "control-listed", "string", "empty", "unknown-control",
        "loto-unknown", "loto-one-class", "missing-column", "duplicate-index", "one-inner-fold"])
def test_clear_errors(nuclei: pd.DataFrame, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(nuclei)


def test_a_field_with_two_conditions_is_refused(nuclei: pd.DataFrame) -> None:
    mixed = nuclei.copy()
    mixed.loc[mixed.index[mixed["Metadata_Gene"] == "GENE_A"][:1], "image_path"] = mixed["image_path"][
        mixed["Metadata_Gene"] == "GENE_B"].iloc[0]
    with pytest.raises(ValueError, match="several conditions"):
        multiclass_splits(mixed, GENES, seed=0)
