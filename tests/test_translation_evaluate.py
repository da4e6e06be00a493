"""LOTO evaluation of the translation: ranks, top-k metrics, baselines, permutations and the grid search."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from image2reg.execute import ExecutionParams
from image2reg.translation import evaluate
from image2reg.translation.evaluate import (GRID_COLUMNS, LotoData, baseline_ranks, distance_ranks, grid_ranks,
                                            grid_summary, loto_predictions, loto_ranks, model_fit_predict,
                                            nested_selection, paired_p_value, permutation_p_value, permutation_ranks,
                                            random_ranks, random_topk, reference_grid, selection_score, settings_grid,
                                            target_scores, topk_accuracy, topk_auc)
from image2reg.translation.features import InputSettings, augment_inputs, unit_rows
from image2reg.translation.models import NtkRegression


def random_data(n_genes: int = 30, n_targets: int = 6, d: int = 10, p: int = 6, seed: int = 0,
                shared: bool = True) -> LotoData:
    """Random LOTO data; with ``shared=False`` every target has its own (different) tables."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"G{i:03d}" for i in range(n_genes)])
    targets = rng.choice(genes, n_targets, replace=False).tolist()  # deliberately not sorted
    if shared:
        image = pd.DataFrame(rng.normal(size=(n_genes, d)), index=genes)
        return LotoData.from_shared(genes, targets, image, unit_rows(rng.normal(size=(n_genes, p))))
    image = {t: pd.DataFrame(rng.normal(size=(n_genes, d)), index=genes) for t in targets}
    regulatory = {t: unit_rows(rng.normal(size=(n_genes, p))) for t in targets}
    return LotoData(genes, targets, image, regulatory)


def planted_data(related: bool, seed: int, n_genes: int = 60, n_targets: int = 15, d: int = 6,
                 p: int = 8) -> LotoData:
    """Regulatory embeddings ``normalize(X W)``; the image embeddings are ``X`` or, if not related, unrelated noise."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"G{i:03d}" for i in range(n_genes)])
    x = rng.normal(size=(n_genes, d))
    regulatory = unit_rows(x @ rng.normal(size=(d, p)))
    image = x if related else rng.normal(size=(n_genes, d))
    targets = rng.choice(genes, n_targets, replace=False).tolist()
    return LotoData.from_shared(genes, targets, pd.DataFrame(image, index=genes), regulatory)


# ----------------------------------------------------------------------------------------------------------------
# ranks and metrics


def test_distance_ranks_hand_made_with_pessimistic_ties():
    candidates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])  # rows 1 and 3 are the same point
    predictions = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.9], [0.0, 0.0], [0.5, 0.0]])
    truth = np.array([1, 3, 2, 0, 0])
    # (1, 0): its twin ties → rank 1 either way; (0, .9): only row 0 is closer; (0, 0): exact; (.5, 0): rows 1
    # and 3 are at the truth's distance 0.5 and count against it
    np.testing.assert_array_equal(distance_ranks(predictions, candidates, truth), [1, 1, 1, 0, 2])
    constant = np.tile(candidates.mean(axis=0), (4, 1))
    assert (distance_ranks(constant, np.ones((4, 2)), np.arange(4)) == 3).all()  # all tie: worst rank


def test_distance_ranks_match_brute_force_with_duplicated_candidates():
    rng = np.random.default_rng(3)
    candidates = rng.normal(size=(50, 20))
    candidates[10:20] = candidates[0]  # eleven identical rows
    predictions = np.vstack([rng.normal(size=(30, 20)), candidates[:5] + 1e-3, np.tile(candidates[0], (3, 1))])
    truth = rng.integers(0, 50, len(predictions))
    truth[-3:] = [0, 15, 30]
    distances = ((predictions[:, None, :] - candidates[None, :, :]) ** 2).sum(axis=2)
    own = distances[np.arange(len(truth)), truth][:, None]
    expected = (distances <= own).sum(axis=1) - 1
    ranks = distance_ranks(predictions, candidates, truth)
    np.testing.assert_array_equal(ranks, expected)
    assert ranks[-3] == ranks[-2] == 10  # the prediction equals the duplicated point: the 10 twins come first


def test_distance_ranks_refuse_bad_input():
    with pytest.raises(ValueError, match="columns"):
        distance_ranks(np.zeros((2, 3)), np.zeros((4, 2)), [0, 1])
    with pytest.raises(ValueError, match="below the 4 candidates"):
        distance_ranks(np.zeros((2, 2)), np.zeros((4, 2)), [0, 4])
    with pytest.raises(ValueError, match="entries for 2 predictions"):
        distance_ranks(np.zeros((2, 2)), np.zeros((4, 2)), [0])
    with pytest.raises(ValueError, match="finite"):
        distance_ranks(np.full((1, 2), np.nan), np.zeros((4, 2)), [0])


def test_topk_accuracy_and_auc_on_hand_made_ranks():
    ranks = [0, 1, 3, 10]
    accuracy = topk_accuracy(ranks, max_k=5)
    np.testing.assert_allclose(accuracy, [0.25, 0.5, 0.5, 0.75, 0.75])
    assert topk_auc(accuracy, 4) == pytest.approx(0.5)
    assert topk_auc(accuracy, 1) == pytest.approx(0.25)
    assert len(topk_accuracy(ranks)) == 50 and topk_accuracy(ranks)[-1] == 1.0
    with pytest.raises(ValueError, match="exceeds"):
        topk_auc(accuracy, 6)
    with pytest.raises(ValueError, match="max_k"):
        topk_accuracy(ranks, max_k=0)
    with pytest.raises(ValueError, match="non-negative"):
        topk_accuracy([0, -1])
    with pytest.raises(ValueError, match="integers"):
        topk_accuracy([0.5, 1])


def test_selection_score_known_value():
    # acc(1..4) = .25, .5, .5, .75: AUC(2) = .375, AUC(4) = .5
    assert selection_score([0, 1, 3, 10], [2, 4]) == pytest.approx(0.875)
    assert selection_score(pd.Series([0, 0]), [20, 50]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="ks"):
        selection_score([0, 1], [])


def test_random_topk_agrees_with_simulated_random_ranks():
    n = 40
    expected = random_topk(n, 50)
    np.testing.assert_allclose(expected[:3], [1 / 40, 2 / 40, 3 / 40])
    assert (expected[39:] == 1.0).all()
    simulated = random_ranks(n, n_targets=10, repeats=2000, seed=0)
    assert simulated.shape == (2000, 10) and simulated.min() == 0 and simulated.max() == n - 1
    mean_accuracy = np.mean([topk_accuracy(row, 50) for row in simulated], axis=0)
    np.testing.assert_allclose(mean_accuracy, expected, atol=0.015)
    assert topk_auc(expected, 20) == pytest.approx(21 / 80)  # (K + 1) / (2N)


def test_permutation_p_value_formula():
    assert permutation_p_value(0.5, [0.1, 0.5, 0.9]) == pytest.approx(3 / 4)
    assert permutation_p_value(1.0, np.zeros(99)) == pytest.approx(1 / 100)
    with pytest.raises(ValueError, match="non-empty"):
        permutation_p_value(0.5, [])


# ----------------------------------------------------------------------------------------------------------------
# LOTO data and runs


def test_loto_data_validation_names_the_culprit():
    data = random_data(shared=False)
    genes, targets, image, regulatory = data.genes, data.targets, data.image, data.regulatory
    with pytest.raises(ValueError, match="XYZ"):
        LotoData(genes, [*targets, "XYZ"], image, regulatory)
    lacking = {**image, targets[0]: image[targets[0]].drop(index=targets[2])}
    with pytest.raises(ValueError, match=f"target '{targets[0]}' lacks targets \\['{targets[2]}'\\]"):
        LotoData(genes, targets, lacking, regulatory)
    with_nan = {**image, targets[1]: image[targets[1]].copy()}
    with_nan[targets[1]].loc[targets[3], 0] = np.nan
    with pytest.raises(ValueError, match=f"'{targets[1]}' has NaN .* \\['{targets[3]}'\\]"):
        LotoData(genes, targets, with_nan, regulatory)
    with pytest.raises(ValueError, match="one row per gene"):
        LotoData(genes, targets, image, {**regulatory, targets[2]: regulatory[targets[2]][:-1]})
    with pytest.raises(ValueError, match="no regulatory embeddings"):
        LotoData(genes, targets, image, {t: regulatory[t] for t in targets[1:]})
    with pytest.raises(ValueError, match="duplicated targets"):
        LotoData(genes, [*targets, targets[0]], image, regulatory)
    with pytest.raises(ValueError, match="unknown target"):
        data.training_genes("NOPE")
    # rows of genes that are not targets are ignored, even when NaN
    other = next(g for g in genes if g not in targets)
    ignored = {t: table.copy() for t, table in image.items()}
    ignored[targets[0]].loc[other] = np.nan
    LotoData(genes, targets, ignored, regulatory)


def test_profile_table_standardises_against_the_control_and_averages_per_condition():
    from image2reg.translation.inputs import profile_table

    # control nuclei: feature a = 1, 3 (mean 2, SD 1), feature b constant (SD 0 → 1), feature c never finite
    profiles = pd.DataFrame({"a": [1.0, 3.0, 4.0, 6.0, np.nan], "b": [5.0, 5.0, 7.0, 9.0, 6.0],
                             "c": [np.nan, np.inf, np.nan, np.nan, np.nan]}, index=[10, 11, 12, 13, 14])
    conditions = pd.Series(["CTRL", "CTRL", "G1", "G1", "G2", "unused"], index=[10, 11, 12, 13, 14, 15])
    table = profile_table(profiles, conditions, "CTRL")
    assert table.index.tolist() == ["CTRL", "G1", "G2"] and table.columns.tolist() == ["a", "b"]
    # G2's missing a is the median over all nuclei (3.5): (3.5 - 2) / 1
    expected = pd.DataFrame({"a": [0.0, 3.0, 1.5], "b": [0.0, 3.0, 1.0]}, index=table.index)
    pd.testing.assert_frame_equal(table, expected)

    with pytest.raises(KeyError, match="1 profile rows have no condition.*\\[14\\]"):
        profile_table(profiles, conditions.drop(index=14), "CTRL")
    with pytest.raises(ValueError, match="'EMPTY' has 0 profiled nuclei"):
        profile_table(profiles, conditions, "EMPTY")


def test_loto_fit_never_sees_the_held_out_target():
    """A spy fit: training rows are the other targets sorted by name (ids in column 0), T only as the test row."""
    data = random_data(shared=False)
    ids = {gene: float(i) for i, gene in enumerate(data.genes)}
    for target in data.targets:
        data.image[target][0] = [ids[g] for g in data.image[target].index]
        data.regulatory[target][:, 0] = [ids[g] for g in data.genes]
    calls = []

    def spy(x_train, y_train, x_test):
        calls.append((x_train.copy(), y_train.copy(), x_test.copy()))
        return y_train.mean(axis=0)

    loto_predictions(data, spy)
    assert len(calls) == len(data.targets)
    for target, (x_train, y_train, x_test) in zip(data.targets, calls, strict=True):
        others = sorted(t for t in data.targets if t != target)
        assert data.training_genes(target) == others
        np.testing.assert_array_equal(x_train[:, 0], [ids[g] for g in others])
        np.testing.assert_array_equal(y_train[:, 0], [ids[g] for g in others])
        assert ids[target] not in x_train[:, 0] and ids[target] not in y_train[:, 0]
        assert x_test.shape == (1, x_train.shape[1]) and x_test[0, 0] == ids[target]


def test_only_the_held_out_targets_own_inputs_move_its_prediction():
    data = random_data(shared=False)
    fit = model_fit_predict("ntk", 1.0, InputSettings(use_y_train_mean=True, n_neighbors=3, append_neighbors="genes"))
    before = loto_predictions(data, fit)
    target = data.targets[2]
    # T's own regulatory row (T's model) is never a training label, whatever the augmentation
    regulatory = {**data.regulatory, target: data.regulatory[target].copy()}
    regulatory[target][data.position(target)] += 5.0
    after = loto_predictions(LotoData(data.genes, data.targets, data.image, regulatory), fit)
    for t in data.targets:
        np.testing.assert_array_equal(after[t], before[t])
    # T's image embedding in T's table is only its test input
    image = {**data.image, target: data.image[target].copy()}
    image[target].loc[target] += 3.0
    after = loto_predictions(LotoData(data.genes, data.targets, image, data.regulatory), fit)
    assert not np.allclose(after[target], before[target])
    for t in data.targets:
        if t != target:
            np.testing.assert_array_equal(after[t], before[t])


def test_planted_relation_is_found_and_passes_the_permutation_test():
    data = planted_data(related=True, seed=1)
    fit = model_fit_predict("ntk", 1.0)
    ranks = loto_ranks(data, fit)
    assert list(ranks.index) == data.targets
    top5 = topk_accuracy(ranks, 5)[4]
    assert top5 >= 0.8 > 5 * random_topk(len(data.genes), 5)[4]
    null = (permutation_ranks(data, fit, repeats=100, seed=0) < 5).mean(axis=1)
    assert null.shape == (100,)
    assert permutation_p_value(top5, null) < 0.05
    si = loto_ranks(data, model_fit_predict("si"))
    assert (si >= 0).all() and (si < len(data.genes)).all()


def test_unrelated_images_do_not_pass_the_permutation_test():
    data = planted_data(related=False, seed=1)
    fit = model_fit_predict("ntk", 1.0)
    top5 = topk_accuracy(loto_ranks(data, fit), 5)[4]
    null = (permutation_ranks(data, fit, repeats=100, seed=0) < 5).mean(axis=1)
    assert permutation_p_value(top5, null) > 0.05


def test_a_permutation_is_applied_the_same_way_in_every_table():
    data = random_data(shared=False)
    order = np.array([3, 0, 5, 1, 2, 4])
    shuffled = evaluate._permuted(data, order)
    for target in data.targets:
        table, new = data.image[target], shuffled.image[target]
        for i, gene in enumerate(data.targets):
            np.testing.assert_array_equal(new.loc[gene], table.loc[data.targets[order[i]]])
        others = [g for g in table.index if g not in data.targets]
        pd.testing.assert_frame_equal(new.loc[others], table.loc[others])
        assert table is not new


def test_baselines():
    data = random_data(shared=False, seed=5)
    truths = [data.position(t) for t in data.targets]
    mean_all = baseline_ranks(data, "mean_all")
    expected = [distance_ranks(data.regulatory[t].mean(axis=0)[None], data.regulatory[t], [i])[0]
                for t, i in zip(data.targets, truths, strict=True)]
    np.testing.assert_array_equal(mean_all, expected)
    shared = random_data(seed=5)
    vector = shared.regulatory[shared.targets[0]].mean(axis=0)
    np.testing.assert_array_equal(
        baseline_ranks(shared, "mean_all"),
        distance_ranks(np.tile(vector, (len(shared.targets), 1)), shared.regulatory[shared.targets[0]],
                       [shared.position(t) for t in shared.targets]))
    # train_mean: the mean label of the training genes only; the data are such that including T would show
    train_mean = baseline_ranks(data, "train_mean")
    excluded, included = [], []
    for target, truth in zip(data.targets, truths, strict=True):
        embeddings = data.regulatory[target]
        others = [data.position(g) for g in data.training_genes(target)]
        excluded.append(distance_ranks(embeddings[others].mean(axis=0)[None], embeddings, [truth])[0])
        included.append(distance_ranks(embeddings[[*others, truth]].mean(axis=0)[None], embeddings, [truth])[0])
    np.testing.assert_array_equal(train_mean, excluded)
    assert excluded != included and list(mean_all) != excluded
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_ranks(shared, "median")


# ----------------------------------------------------------------------------------------------------------------
# grid search


def slow_grid_ranks(data: LotoData, grid: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """The definition: augment_inputs + NtkRegression for every setting and target."""
    out = np.empty((len(grid), len(data.targets)), dtype=np.int64)
    for i, row in enumerate(grid.to_dict("records")):
        settings = InputSettings(**{k: row[k] for k in GRID_COLUMNS if k != "reg"})
        for j, target in enumerate(data.targets):
            others = data.training_genes(target)
            x_train = data.image[target].loc[others].to_numpy()
            y_train = data.regulatory[target][[data.position(g) for g in others]]
            x_test = data.image[target].loc[[target]].to_numpy()
            train, test = augment_inputs(x_train, y_train, x_test, settings, seed)
            prediction = NtkRegression(row["reg"]).fit(train, y_train).predict(test)
            out[i, j] = distance_ranks(prediction, data.regulatory[target], [data.position(target)])[0]
    return out


SMALL_GRID = {"reg": [1.0, 10.0], "use_y_train_mean": [False, True], "n_neighbors": [0, 2, 5],
              "encoding": ["positional", "gauss"], "sigma": [5.0], "append_neighbors": [None, "images", "genes"]}


@pytest.mark.parametrize("execution", [ExecutionParams(backend="inprocess"),
                                       ExecutionParams(backend="processes", workers=2)], ids=["inprocess", "processes"])
def test_grid_ranks_equal_the_slow_loop(execution):
    data = random_data(n_genes=30, n_targets=6, seed=7, shared=False)
    grid = settings_grid({**SMALL_GRID, "normalize_inputs": [False, True]})
    assert len(grid) == 144
    ranks = grid_ranks(data, grid, seed=3, execution=execution)
    assert ranks.shape == (144, 6) and ranks.dtype == np.int64
    np.testing.assert_array_equal(ranks, slow_grid_ranks(data, grid, seed=3))
    assert len(np.unique(ranks, axis=0)) > 10  # the settings do matter


def test_grid_ranks_share_fits_of_equivalent_settings(monkeypatch):
    data = random_data(n_targets=6, seed=2)
    calls = []
    original = evaluate.ntk_predict_many
    monkeypatch.setattr(evaluate, "ntk_predict_many", lambda *args: calls.append(args[3]) or original(*args))
    # n_training = 5: 0 neighbours makes encoding/sigma/append irrelevant, 100 neighbours means all 5
    grid = settings_grid({"reg": [1.0, 5.0], "n_neighbors": [0, 5, 100], "encoding": ["positional", "gauss"],
                          "sigma": [1.0, 5.0], "append_neighbors": [None, "images"]})
    ranks = grid_ranks(data, grid, execution=ExecutionParams(backend="inprocess"))
    # one fit for no neighbours, 2 × 2 × 2 for all neighbours, each with both ridge values
    assert len(calls) == 9 * len(data.targets)
    assert all(regs == (1.0, 5.0) for regs in calls)
    np.testing.assert_array_equal(ranks[grid["n_neighbors"] == 5], ranks[grid["n_neighbors"] == 100])
    no_neighbours = ranks[grid["n_neighbors"] == 0]
    np.testing.assert_array_equal(no_neighbours[grid.loc[grid["n_neighbors"] == 0, "reg"] == 1.0],
                                  np.tile(no_neighbours[0], (8, 1)))


def test_grid_ranks_refuse_unknown_columns():
    with pytest.raises(ValueError, match="unknown grid columns"):
        grid_ranks(random_data(), pd.DataFrame({"reg": [1.0], "n_neighbours": [2]}))


def test_reference_grid_has_the_reference_values():
    grid = reference_grid(38)
    assert len(grid) == 1440 and list(grid.columns) == list(GRID_COLUMNS)
    assert not grid.astype(str).duplicated().any()
    assert set(grid["reg"]) == {1, 5, 10, 50, 100}
    assert set(grid["use_y_train_mean"]) == {False, True}
    assert set(grid["n_neighbors"]) == {0, 38}
    assert set(grid["n_encodings"]) == {2, 5, 10, 20}
    assert set(grid["encoding"]) == {"positional", "gauss"}
    assert set(grid["sigma"]) == {1, 5, 10}
    assert set(grid["append_neighbors"]) == {None, "images", "genes"}
    assert not grid["normalize_inputs"].any()
    with pytest.raises(ValueError, match="n_training"):
        reference_grid(0)


def test_settings_grid_validates():
    grid = settings_grid({"sigma": [1, 2], "reg": [3]})
    assert list(grid["sigma"]) == [1.0, 2.0] and list(grid["reg"]) == [3.0, 3.0]
    assert list(grid["n_neighbors"]) == [0, 0] and list(grid["append_neighbors"]) == [None, None]
    with pytest.raises(ValueError, match="unknown settings"):
        settings_grid({"n_neighbours": [1]})
    with pytest.raises(ValueError, match="no values"):
        settings_grid({"reg": []})
    with pytest.raises(ValueError, match="row 1"):
        settings_grid({"encoding": ["gauss", "fourier"]})
    with pytest.raises(ValueError, match="reg"):
        settings_grid({"reg": [-1.0]})


def test_nested_selection_hand_made():
    ranks = np.array([[0, 5, 5, 0],
                      [1, 0, 0, 9],
                      [9, 0, 9, 0]])
    # with ks = [2] the score of a setting is the mean of its top-1 and top-2 accuracies on the other targets:
    # T0: .33 / .67 / .67 → setting 1 (tie, lowest row); T1: .67 / .5 / .33 → 0; T2: .67 / .5 / .67 → 0 (tie);
    # T3: .33 / .83 / .33 → 1
    result = nested_selection(ranks, ["a", "b", "c", "d"], [2])
    assert list(result.columns) == ["target", "setting", "rank"]
    assert list(result["target"]) == ["a", "b", "c", "d"]
    assert list(result["setting"]) == [1, 0, 0, 1]
    assert list(result["rank"]) == [1, 5, 5, 9]
    with pytest.raises(ValueError, match="3 targets named for 4 columns"):
        nested_selection(ranks, ["a", "b", "c"], [2])


def test_grid_summary_sorts_best_first():
    grid = settings_grid({"reg": [1.0, 5.0, 10.0]})
    ranks = np.array([[30, 40, 3], [0, 1, 2], [0, 60, 0]])
    summary = grid_summary(grid, ranks, [20, 50])
    assert list(summary["setting"]) == [1, 2, 0] and list(summary.index) == [1, 2, 0]
    for _, row in summary.iterrows():
        accuracy = topk_accuracy(ranks[row["setting"]], 50)
        assert row["auc_20"] == pytest.approx(topk_auc(accuracy, 20))
        assert row["auc_50"] == pytest.approx(topk_auc(accuracy, 50))
        assert row["score"] == pytest.approx(selection_score(ranks[row["setting"]], [20, 50]))
        assert row["top1"] == accuracy[0] and row["top5"] == accuracy[4] and row["top10"] == accuracy[9]
    assert "auc_10" in grid_summary(grid, ranks, [10]).columns
    with pytest.raises(ValueError, match="rows for 3 settings"):
        grid_summary(grid, ranks[:2], [20])


def test_target_scores_add_up_to_the_top_k_accuracy_and_area():
    ranks = np.array([0, 3, 4, 9, 60])
    assert target_scores(ranks, "top5").tolist() == [1, 1, 1, 0, 0]
    assert target_scores(ranks, "auc10").tolist() == [10, 7, 6, 1, 0]
    accuracy = topk_accuracy(ranks, 10)
    assert target_scores(ranks, "top5").mean() == pytest.approx(accuracy[4])
    assert target_scores(ranks, "auc10").mean() / 10 == pytest.approx(topk_auc(accuracy, 10))
    for bad in ("top", "auc0", "mrr5", "top-3"):
        with pytest.raises(ValueError, match="metric must be 'top<K>' or 'auc<K>'"):
            target_scores(ranks, bad)


def test_paired_p_value_on_hand_counted_sign_patterns():
    # five targets, each a hit for the method and a miss for the baseline: only 1 of the 32 patterns ties
    assert paired_p_value([0, 1, 2, 3, 4], [50, 60, 70, 80, 90], "top5") == pytest.approx(1 / 32)
    # differences +1, +1, −1: sums over the 8 patterns are 3, 1, 1, 1, −1, −1, −1, −3, so 4 reach 1
    assert paired_p_value([0, 0, 50], [50, 50, 0], "top5") == pytest.approx(0.5)
    # the same rankings: every pattern sums to 0
    assert paired_p_value([3, 7, 20], [3, 7, 20], "auc10") == 1.0
    # worse than the baseline everywhere: every pattern but the all-negative one is at least as good
    assert paired_p_value([50, 50], [0, 0], "top5") == 1.0
    # the area counts how far ahead: ranks 0 against 9 differ by 9 units of auc10 on one target
    assert paired_p_value([0, 5], [9, 5], "auc10") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same targets: 2 against 3"):
        paired_p_value([0, 1], [0, 1, 2], "top5")


def test_paired_p_value_samples_patterns_for_many_targets_deterministically():
    better = np.zeros(30, dtype=int)
    worse = np.full(30, 80)
    p = paired_p_value(better, worse, "top10", repeats=2000, seed=1)
    assert p == pytest.approx(1 / 2001)  # 2⁻³⁰: no random pattern reaches it
    method, baseline = np.array([0] * 16 + [80] * 14), np.array([80] * 16 + [0] * 14)
    first = paired_p_value(method, baseline, "top10", repeats=2000, seed=1)
    assert first == paired_p_value(method, baseline, "top10", repeats=2000, seed=1)
    # +1 sixteen times and −1 fourteen times: P(sum of 30 random signs ≥ 2) = P(Binomial(30, ½) ≥ 16) = 0.428
    assert first == pytest.approx(0.428, abs=0.03)


def _tail_at_least(hits: int, n: int, p: float) -> float:
    """P(X ≥ hits) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, h) * p**h * (1 - p) ** (n - h) for h in range(hits, n + 1))


def test_accuracy_interval_matches_the_clopper_pearson_closed_forms():
    # no hit: the upper bound solves (1 − p)^n = α/2; every target a hit: the lower bound solves p^n = α/2
    assert evaluate.accuracy_interval([99] * 15, 5) == pytest.approx((0.0, 1 - 0.025 ** (1 / 15)))
    assert evaluate.accuracy_interval([0] * 10, 5) == pytest.approx((0.025 ** (1 / 10), 1.0))
    low, high = evaluate.accuracy_interval([0, 4] + [50] * 13, 5)  # 2 hits of 15

    assert _tail_at_least(2, 15, low) == pytest.approx(0.025, abs=1e-6)  # P(X ≥ 2 | low) = α/2
    assert 1 - _tail_at_least(3, 15, high) == pytest.approx(0.025, abs=1e-6)  # P(X ≤ 2 | high) = α/2
    assert low < 2 / 15 < high
    with pytest.raises(ValueError, match="confidence"):
        evaluate.accuracy_interval([0, 1], 5, confidence=1.0)
    with pytest.raises(ValueError, match="k"):
        evaluate.accuracy_interval([0, 1], 0)


def test_hits_needed_against_random_genes_and_in_the_paired_test():
    needed = evaluate.hits_needed(15, 132, 5)
    # the demo's sizes: 2 hits of 15 are not enough against random genes (p ≈ 0.11), 3 are
    assert _tail_at_least(2, 15, 5 / 132) > 0.05 > _tail_at_least(3, 15, 5 / 132)
    assert needed == {"random": 3, "paired": 5}
    # the paired count agrees with paired_p_value against a baseline that misses every target
    miss = np.full(15, 100)
    for hits in range(16):
        ranks = np.where(np.arange(15) < hits, 0, 100)
        assert (paired_p_value(ranks, miss, "top5") < 0.05) == (hits >= needed["paired"])
    # a test that nothing can pass: top-5 of 4 candidates, or 3 targets in the paired test
    assert evaluate.hits_needed(3, 4, 5) == {"random": None, "paired": None}
    with pytest.raises(ValueError, match="alpha"):
        evaluate.hits_needed(15, 132, 5, alpha=0.0)


def test_power_table_rows_and_their_flat_summary():
    ranks = np.array([0, 4, 7, 60, 90])  # top-5: 2 hits, top-10: 3 hits of 5 targets
    table = evaluate.power_table(ranks, 4, [5, 10])
    assert list(table.index) == ["top5", "top10"]
    assert table.loc["top5", ["hits", "targets"]].tolist() == [2, 5]
    assert table.loc["top10", "accuracy"] == pytest.approx(0.6)
    assert (table.loc["top5", "ci_low"], table.loc["top5", "ci_high"]) == pytest.approx(
        evaluate.accuracy_interval(ranks, 5))
    assert table["needed_random"].isna().all()  # k ≥ 4 candidates: random genes always hit
    assert table.loc["top5", "needed_paired"] == 5  # 5 targets: only all five hits give p = 1/32
    summary = evaluate.power_summary(table)
    assert summary["top5_hits_needed_random"] is None and summary["top10_hits_needed_paired"] == 5
    assert summary["top10_ci_high"] == pytest.approx(table.loc["top10", "ci_high"])
    json.dumps(summary)  # JSON-ready: no numpy or pandas scalars


def test_si_features_follow_the_reference_definition():
    """The reference (run_translation_demo.py L82-137): mean label appended first, neighbours and
    w = x·pinv(X_nbrs) on those inputs, then RFF(w); 'images' appends the neighbours' augmented rows."""
    rng = np.random.default_rng(5)
    x_train, y_train, x_test = rng.normal(size=(6, 4)), rng.normal(size=(6, 3)), rng.normal(size=(1, 4))
    settings = InputSettings(use_y_train_mean=True, n_neighbors=2, n_encodings=2, append_neighbors="images")
    train, test = augment_inputs(x_train, y_train, x_test, settings, seed=0)
    mean = y_train.mean(axis=0)
    rows = np.hstack([np.vstack([x_train, x_test]), np.tile(mean, (7, 1))])  # x ‖ ȳ
    expected = []
    for row in rows:
        nearest = np.argsort(((rows[:6] - row) ** 2).sum(axis=1), kind="stable")[:2]
        w = row @ np.linalg.pinv(rows[:6][nearest])
        phases = np.concatenate([2 * np.pi * w * f for f in (1.0, 1.0)]).reshape(2, 2).T.ravel()
        expected.append((row, nearest, np.concatenate([np.cos(phases), np.sin(phases)])))
    augmented = np.array([np.concatenate([row, code]) for row, _, code in expected])
    for i, (row, nearest, code) in enumerate(expected):
        got = train[i] if i < 6 else test[0]
        assert np.allclose(got[:15], augmented[i])  # x ‖ ȳ ‖ cos, sin of 2 encodings × 2 weights
        assert np.allclose(got[15:], augmented[:6][nearest].ravel())  # the neighbours' augmented rows
    # a training row is its own nearest neighbour: w = (1, 0), so cos(2πw) = 1 and sin(2πw) = 0
    assert np.allclose(train[:, 7:11], 1.0) and np.allclose(train[:, 11:15], 0.0, atol=1e-9)
