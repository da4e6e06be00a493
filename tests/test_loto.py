"""LOTO evaluation: the data's checks, held-out fits, permutations and the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from translation_helpers import planted_data, random_data

from image2reg.translation import loto
from image2reg.translation.features import InputSettings
from image2reg.translation.loto import (
    LotoData,
    baseline_ranks,
    loto_predictions,
    loto_ranks,
    model_fit_predict,
    permutation_ranks,
)
from image2reg.translation.metrics import distance_ranks, random_topk, topk_accuracy
from image2reg.translation.statistics import permutation_p_value


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
    shuffled = loto._permuted(data, order)
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


def test_one_shared_regulatory_table_for_every_target():
    from image2reg.translation.loto import shared_regulatory

    data = random_data(n_genes=12, n_targets=4, seed=3)
    table = pd.DataFrame(np.random.default_rng(0).normal(size=(12, 5)), index=data.genes[::-1])  # any row order
    shared = shared_regulatory(data, table)
    expected = table.loc[data.genes].to_numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    for target in data.targets:
        np.testing.assert_allclose(shared.regulatory[target], expected)
    assert shared.image.keys() == data.image.keys() and shared.targets == data.targets
