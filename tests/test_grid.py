"""The grid search of input settings: the fast Gram path equals the definition; grids, nested selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from translation_helpers import random_data

from image2reg.execute import ExecutionParams
from image2reg.translation import grid as grid_module
from image2reg.translation.features import InputSettings, augment_inputs
from image2reg.translation.grid import (
    GRID_COLUMNS,
    grid_ranks,
    grid_summary,
    nested_selection,
    reference_grid,
    settings_grid,
)
from image2reg.translation.loto import LotoData
from image2reg.translation.metrics import distance_ranks, selection_score, topk_accuracy, topk_auc
from image2reg.translation.models import NtkRegression


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
    original = grid_module.ntk_predict_many
    monkeypatch.setattr(grid_module, "ntk_predict_many", lambda *args: calls.append(args[3]) or original(*args))
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
