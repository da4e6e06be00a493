"""Phenotypic activity (copairs mAP against the control) and well profiles: known answers, groups, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from image2reg.profiling.activity import ACTIVITY_COLUMNS, phenotypic_activity, well_profiles

DIM = 32
N_CONTROL = 64


def random_ap(n_pos: int, n_neg: int, *, n_perm: int = 20000, seed: int = 0) -> float:
    """Mean average precision of random rankings of ``n_pos`` positives among ``n_neg`` negatives."""
    rng = np.random.default_rng(seed)
    relevant = np.zeros((n_perm, n_pos + n_neg), dtype=bool)
    relevant[:, :n_pos] = True
    relevant = rng.permuted(relevant, axis=1)
    precision = np.cumsum(relevant, axis=1) / np.arange(1, n_pos + n_neg + 1)
    return float(((precision * relevant).sum(axis=1) / n_pos).mean())


def screen(
    shifts: dict[str, float], *, n_profiles: int | dict[str, int] = 8, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Control profiles ~ N(0, I) and, per perturbation, profiles ~ N(shift * u, I) for a random unit ``u``."""
    rng = np.random.default_rng(seed)
    blocks, conditions = [rng.normal(size=(N_CONTROL, DIM))], ["EMPTY"] * N_CONTROL
    for gene, shift in shifts.items():
        count = n_profiles[gene] if isinstance(n_profiles, dict) else n_profiles
        direction = rng.normal(size=DIM)
        direction /= np.linalg.norm(direction)
        blocks.append(rng.normal(size=(count, DIM)) + shift * direction)
        conditions += [gene] * count
    return np.vstack(blocks), conditions


@pytest.fixture(scope="module")
def known() -> pd.DataFrame:
    """One strongly shifted perturbation and four drawn from the control's distribution."""
    shifts = {"STRONG": 10.0, "NULL_A": 0.0, "NULL_B": 0.0, "NULL_C": 0.0, "NULL_D": 0.0}
    return phenotypic_activity(*screen(shifts, seed=3))


def test_shifted_perturbation_is_active_and_control_like_ones_are_not(known: pd.DataFrame) -> None:
    strong = known.loc["STRONG"]
    assert strong["mean_average_precision"] > 0.95
    assert strong["p_value"] == pytest.approx(1 / 10001, rel=1e-3)  # above the whole null
    assert strong["active"] and strong["below_p"]

    nulls = known.drop(index="STRONG")
    expected = random_ap(7, N_CONTROL)  # 7 other replicates among 64 controls: about 0.15
    assert nulls["mean_average_precision"].mean() == pytest.approx(expected, abs=0.05)
    assert (nulls["mean_average_precision"] - expected).abs().max() < 0.15
    assert not nulls["active"].any()
    assert (nulls["corrected_p_value"] > 0.05).all()


def test_invariants(known: pd.DataFrame) -> None:
    assert list(known.columns) == ACTIVITY_COLUMNS
    assert known.index.name == "gene"
    assert sorted(known.index) == ["NULL_A", "NULL_B", "NULL_C", "NULL_D", "STRONG"]  # one row each, no control
    assert known.index[0] == "STRONG"
    assert known["mean_average_precision"].between(0, 1).all()
    assert known["mean_average_precision"].is_monotonic_decreasing
    assert known[["p_value", "corrected_p_value"]].stack().between(0, 1).all()
    assert (known["corrected_p_value"] >= known["p_value"] - 1e-12).all()  # BH never lowers a p-value
    assert (known["n_profiles"] == 8).all()
    assert known["active"].dtype == bool and known["below_p"].dtype == bool


def test_uneven_counts_labels_and_dataframe_input() -> None:
    counts = {"G1": 2, "G2": 5, "G3": 11}
    embeddings, conditions = screen({"G1": 4.0, "G2": 4.0, "G3": 0.0}, n_profiles=counts, seed=1)
    codes = {"EMPTY": -1, "G1": 10, "G2": 20, "G3": 30}  # non-string labels and control work too
    result = phenotypic_activity(pd.DataFrame(embeddings), pd.Series([codes[c] for c in conditions]), control=-1)
    assert sorted(result.index) == [10, 20, 30]
    assert result["n_profiles"].to_dict() == {10: 2, 20: 5, 30: 11}
    assert result["mean_average_precision"].between(0, 1).all()


def test_deterministic_for_a_seed_and_independent_of_earlier_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"G1": 3, "G2": 4, "G3": 5, "G4": 6}
    embeddings, conditions = screen({gene: 0.5 for gene in counts}, n_profiles=counts, seed=2)
    subset = np.isin(conditions, ["EMPTY", "G4"])
    sub_embeddings, sub_conditions = embeddings[subset], list(np.asarray(conditions)[subset])

    monkeypatch.setenv("HOME", str(tmp_path / "home_a"))
    fresh = phenotypic_activity(sub_embeddings, sub_conditions, null_size=500, seed=7)
    again = phenotypic_activity(sub_embeddings, sub_conditions, null_size=500, seed=7)
    pd.testing.assert_frame_equal(fresh, again)

    # copairs' default null cache (~/.copairs) would hand the subset the nulls drawn for the full set.
    monkeypatch.setenv("HOME", str(tmp_path / "home_b"))
    phenotypic_activity(embeddings, conditions, null_size=500, seed=7)
    after = phenotypic_activity(sub_embeddings, sub_conditions, null_size=500, seed=7)
    pd.testing.assert_frame_equal(fresh, after)
    assert not (tmp_path / "home_a" / ".copairs").exists() and not (tmp_path / "home_b" / ".copairs").exists()


def test_progress_bars_are_silent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    phenotypic_activity(*screen({"G1": 1.0}), null_size=200)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def well_effect_screen(seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """No phenotype, but a strong well effect: ``WELLY`` has 2 wells x 4 fields, each well with its own offset.

    ``ONE_WELL`` has all its 4 fields in one well; each control field is in a well of its own.
    """
    rng = np.random.default_rng(seed)
    blocks, conditions = [rng.normal(size=(N_CONTROL, DIM))], ["EMPTY"] * N_CONTROL
    wells = [f"C{i}" for i in range(N_CONTROL)]
    # Orthogonal well offsets: nothing shared between wells, so nothing a phenotype would share either.
    offsets = dict(zip(["W1", "W2", "W3"], 8.0 * np.linalg.qr(rng.normal(size=(DIM, 3)))[0].T))
    for gene, well_names in {"WELLY": ["W1", "W1", "W1", "W1", "W2", "W2", "W2", "W2"],
                             "ONE_WELL": ["W3"] * 4}.items():
        blocks.append(np.stack([offsets[well] + rng.normal(size=DIM) for well in well_names]))
        conditions += [gene] * len(well_names)
        wells += well_names
    return np.vstack(blocks), conditions, wells


def test_groups_keep_same_well_similarity_from_counting(caplog: pytest.LogCaptureFixture) -> None:
    embeddings, conditions, wells = well_effect_screen()

    # Without groups the well effect passes for a phenotype: same-well fields rank first.
    ungrouped = phenotypic_activity(embeddings, conditions)
    assert ungrouped.loc["WELLY", "mean_average_precision"] > 0.4 and ungrouped.loc["WELLY", "active"]

    with caplog.at_level(logging.WARNING, logger="image2reg"):
        grouped = phenotypic_activity(embeddings, conditions, groups=wells)
    welly = grouped.loc["WELLY"]
    # Each field keeps only the 4 fields of the other well as replicates, ranked among the controls by chance.
    assert welly["mean_average_precision"] == pytest.approx(random_ap(4, N_CONTROL), abs=0.15)
    assert not welly["active"]

    # A perturbation whose profiles all share one group cannot be scored: a NaN row, not active, a warning.
    one_well = grouped.loc["ONE_WELL"]
    assert np.isnan(one_well[["mean_average_precision", "p_value", "corrected_p_value"]].astype(float)).all()
    assert not one_well["active"] and not one_well["below_p"] and one_well["n_profiles"] == 4
    assert grouped.index[-1] == "ONE_WELL"  # unscored rows last
    assert "ONE_WELL" in caplog.text

    # If no perturbation can be scored, that is an error.
    keep = np.asarray(conditions) != "WELLY"
    with pytest.raises(ValueError, match="different groups"):
        phenotypic_activity(embeddings[keep], np.asarray(conditions)[keep], groups=np.asarray(wells)[keep])


def test_groups_as_a_frame_combine_their_columns() -> None:
    embeddings, conditions = screen({"G1": 3.0}, n_profiles=4, seed=5)
    plates = ["P0"] * N_CONTROL + ["P1", "P1", "P2", "P2"]
    same_name = ["A01"] * N_CONTROL + ["A01", "A01", "A01", "A01"]  # one well name on two plates
    frame = pd.DataFrame({"plate": plates, "well": same_name})
    by_frame = phenotypic_activity(embeddings, conditions, groups=frame)
    by_key = phenotypic_activity(embeddings, conditions, groups=[f"{p}/{w}" for p, w in zip(plates, same_name)])
    pd.testing.assert_frame_equal(by_frame, by_key)
    assert not np.isnan(by_frame.loc["G1", "mean_average_precision"])


def test_well_profiles_average_per_well() -> None:
    obs = pd.DataFrame({
        "Metadata_Plate": ["P2", "P1", "P1", "P2", "P1", "P1"],
        "Metadata_Well": ["B01", "A02", "A01", "B01", "A01", "A02"],
        "Metadata_Gene": ["G1", "EMPTY", "G1", "G1", "G1", "EMPTY"],
    }, index=[50, 10, 40, 20, 30, 60])  # neither 0..n-1 nor sorted: rows are matched by position
    embeddings = np.array([[1.0, 0.0], [2.0, 2.0], [0.0, 4.0], [3.0, 0.0], [2.0, 0.0], [4.0, 6.0]])
    profiles, meta = well_profiles(embeddings, obs)
    assert meta.to_dict("list") == {
        "Metadata_Plate": ["P1", "P1", "P2"],
        "Metadata_Well": ["A01", "A02", "B01"],
        "Metadata_Gene": ["G1", "EMPTY", "G1"],
        "n_nuclei": [2, 2, 2],
    }
    np.testing.assert_allclose(profiles, [[1.0, 2.0], [3.0, 4.0], [2.0, 0.0]])

    fields, field_meta = well_profiles(pd.DataFrame(embeddings), obs.assign(site=[0, 0, 0, 1, 0, 1]),
                                       by=["Metadata_Plate", "Metadata_Well", "site"])
    assert len(fields) == 5 and field_meta["n_nuclei"].sum() == 6


def test_nuclei_to_wells_to_activity() -> None:
    rng = np.random.default_rng(4)
    rows, blocks = [], []
    for gene, shift in {"EMPTY": 0.0, "G1": 3.0, "G2": 0.0}.items():
        for well in range(16 if gene == "EMPTY" else 6):
            blocks.append(rng.normal(size=(10, DIM)) + shift)
            rows += [{"Metadata_Plate": "P1", "Metadata_Well": f"{gene}-{well}", "Metadata_Gene": gene}] * 10
    profiles, meta = well_profiles(np.vstack(blocks), pd.DataFrame(rows))
    assert len(profiles) == 28
    result = phenotypic_activity(profiles, meta["Metadata_Gene"], groups=meta["Metadata_Well"])
    assert result.index.tolist() == ["G1", "G2"]
    assert result.loc["G1", "active"] and not result.loc["G2", "active"]


def test_well_profiles_errors() -> None:
    obs = pd.DataFrame({"Metadata_Plate": ["P1"] * 3, "Metadata_Well": ["A01"] * 3,
                        "Metadata_Gene": ["G1", "G2", "G1"]})
    with pytest.raises(ValueError, match="more than one Metadata_Gene.*'A01'.*G1.*G2"):
        well_profiles(np.zeros((3, 2)), obs)
    with pytest.raises(ValueError, match="obs has 3 rows but there are 2 embeddings"):
        well_profiles(np.zeros((2, 2)), obs)
    with pytest.raises(ValueError, match="lacks the column"):
        well_profiles(np.zeros((3, 2)), obs, by="Metadata_Site")
    with pytest.raises(ValueError, match="missing values"):
        well_profiles(np.zeros((3, 2)), obs.assign(Metadata_Well=["A01", None, "A02"]))


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, list[str]]:
    return screen({"G1": 3.0, "G2": 0.0}, n_profiles=4)


def test_errors(small: tuple[np.ndarray, list[str]]) -> None:
    embeddings, conditions = small
    with pytest.raises(ValueError, match="one entry per profile"):
        phenotypic_activity(embeddings, conditions[:-1])
    with pytest.raises(ValueError, match="2-D"):
        phenotypic_activity(embeddings[:, 0], conditions)
    with pytest.raises(ValueError, match="groups must have one entry per profile"):
        phenotypic_activity(embeddings, conditions, groups=["W"] * 3)
    with pytest.raises(ValueError, match="control 'DMSO' has no profile"):
        phenotypic_activity(embeddings, conditions, control="DMSO")
    with pytest.raises(ValueError, match="no perturbation besides the control"):
        phenotypic_activity(embeddings[:N_CONTROL], conditions[:N_CONTROL])
    with pytest.raises(ValueError, match=r"at least 2 profiles.*'G2' \(1\)"):
        phenotypic_activity(embeddings[:-3], conditions[:-3])
    with pytest.raises(ValueError, match="conditions has 1 missing"):
        phenotypic_activity(embeddings, [*conditions[:-1], None])

    broken = embeddings.copy()
    broken[N_CONTROL + 1, 5] = np.nan
    with pytest.raises(ValueError, match=f"NaN or infinite values in 1 row.*row {N_CONTROL + 1}"):
        phenotypic_activity(broken, conditions)
    broken = embeddings.copy()
    broken[2] = 0.0
    with pytest.raises(ValueError, match="zero norm"):
        phenotypic_activity(broken, conditions)
    phenotypic_activity(broken, conditions, distance="euclidean", null_size=100)  # fine without a norm


def test_field_activity_finds_the_shifted_condition_from_nucleus_values() -> None:
    from image2reg.profiling.activity import field_activity

    rng = np.random.default_rng(4)
    rows, values = [], []
    for gene, shift in (("EMPTY", 0.0), ("MOVED", 3.0), ("SAME", 0.0)):
        for well in range(4):
            for site in range(3):
                for _ in range(5):  # nuclei of one field
                    rows.append({"image_path": f"{gene}/{well}/{site}.tif", "Metadata_Gene": gene,
                                 "Metadata_Plate": "P1", "Metadata_Well": f"{gene}{well}"})
                    values.append(rng.normal(shift, 1.0, 6))
    activity = field_activity(np.array(values), pd.DataFrame(rows), "EMPTY", seed=0)
    assert activity.loc["MOVED", "active"] and not activity.loc["SAME", "active"]
    assert activity.loc["MOVED", "mean_average_precision"] > 0.9 > activity.loc["SAME", "mean_average_precision"]


def _model_spaces(offset: float, spaces: int = 4) -> tuple[np.ndarray, pd.DataFrame]:
    """Fields of EMPTY, MOVED (shifted) and SAME, each embedded by one of ``spaces`` models whose spaces differ
    by random offsets of norm ``offset`` (as separately trained fold models do); every condition has fields in
    every space."""
    rng = np.random.default_rng(7)
    offsets = rng.normal(size=(spaces, 6))
    offsets *= offset / np.linalg.norm(offsets, axis=1, keepdims=True)
    rows, values = [], []
    for gene, shift in (("EMPTY", 0.0), ("MOVED", 0.8), ("SAME", 0.0)):
        for well in range(4):
            for site in range(4):
                space = (well * 4 + site) % spaces
                for _ in range(5):
                    rows.append({"image_path": f"{gene}/{well}/{site}.tif", "Metadata_Gene": gene,
                                 "Metadata_Plate": "P1", "Metadata_Well": f"{gene}{well}", "model": f"fold-{space}"})
                    values.append(rng.normal(shift, 1.0, 6) + offsets[space])
    return np.array(values), pd.DataFrame(rows)


def test_field_activity_scales_each_field_within_its_own_model_space() -> None:
    from image2reg.profiling.activity import field_activity

    values, obs = _model_spaces(offset=8.0)
    pooled = field_activity(values, obs, "EMPTY", seed=0)  # one control mean for both spaces
    per_model = field_activity(values, obs, "EMPTY", seed=0, model="model")
    assert not pooled.loc["MOVED", "active"]  # the offset between the spaces swamps the shift
    assert per_model.loc["MOVED", "active"] and not per_model.loc["SAME", "active"]
    assert per_model.loc["MOVED", "mean_average_precision"] > pooled.loc["MOVED", "mean_average_precision"] + 0.2
    # one space: the per-model scaling is the pooled one
    same, obs_same = _model_spaces(offset=0.0)
    pd.testing.assert_frame_equal(field_activity(same, obs_same.assign(model="fold-0"), "EMPTY", seed=0,
                                                 model="model"), field_activity(same, obs_same, "EMPTY", seed=0))


def test_field_activity_names_a_model_without_control_fields() -> None:
    from image2reg.profiling.activity import field_activity

    values, obs = _model_spaces(offset=0.0)
    obs.loc[(obs["Metadata_Gene"] == "EMPTY"), "model"] = "fold-0"
    obs.loc[(obs["Metadata_Gene"] != "EMPTY") & (obs["model"] == "fold-0"), "model"] = "fold-2"
    with pytest.raises(ValueError, match="model 'fold-(1|2)' embedded no field of the control 'EMPTY'"):
        field_activity(values, obs, "EMPTY", model="model")
    obs.loc[0, "model"] = "fold-9"  # one nucleus of a field from another model
    with pytest.raises(ValueError, match="holds nuclei of several models"):
        field_activity(values, obs, "EMPTY", model="model")
