"""The linear baseline of the CNN: a logistic regression on classical nucleus profiles (method §4.6).

:func:`baseline_classifier` fits the reference's baseline over the CNN's own splits
(:mod:`image2reg.cnn.splits`), so the CNN and the baseline are scored on the same train / validation /
test nuclei. The preprocessing is an sklearn :class:`~sklearn.pipeline.Pipeline` (median imputation,
standard scaling, clipping), fitted on the training nuclei only and applied unchanged to the others.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from image2reg.cnn.splits import HELD_OUT, TEST, TRAIN, VAL

logger = logging.getLogger("image2reg")

#: Default grid of inverse regularisation strengths for :func:`baseline_classifier`.
C_GRID = (0.01, 0.1, 1.0, 10.0)
#: Standardised features are clipped to ± this, as in the reference.
CLIP = 15.0


def _clip(features: np.ndarray) -> np.ndarray:
    return np.clip(features, -CLIP, CLIP)


def preprocessing() -> Pipeline:
    """Median imputation (0 for a feature with no value), standard scaling, clipping to ± :data:`CLIP`."""
    return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler()), ("clip", FunctionTransformer(_clip))])


def baseline_classifier(
    profiles: pd.DataFrame,
    splits: pd.DataFrame,
    *,
    fold: int | None = None,
    seed: int = 0,
    max_iter: int = 1000,
    c_grid: Sequence[float] = C_GRID,
) -> dict:
    """The reference's linear baseline on nucleus profiles, over one fold of the CNN's splits.

    On the fold's ``train`` nuclei: missing values (NaN, ±inf) of every feature are imputed with
    the feature's training median (0 where a feature has none), a ``StandardScaler`` is fitted, and
    the standardised features are clipped to [-15, 15]; validation, test and held-out nuclei get
    the same imputation, scaling and clipping. A multinomial (for two classes, binary)
    ``LogisticRegression(class_weight="balanced")`` is fitted on ``train`` for every ``C`` of
    ``c_grid``; the one with the best balanced accuracy on ``val`` is kept (ties: the smallest
    ``C``, the strongest regularisation) and scored on ``test``, without refitting on
    train + val. Held-out nuclei (LOTO), when present, get the model's decision values.

    Parameters
    ----------
    profiles
        Numeric features per nucleus (e.g. :func:`nucleus_profiles`); all columns are used.
    splits
        A table of :mod:`image2reg.cnn.splits`: ``fold``, ``split`` and ``label`` per nucleus,
        indexed by the row labels of ``profiles``.
    fold
        The fold to use; ``None`` when the table holds a single fold.
    seed
        Seed of the classifier (``random_state``).
    max_iter
        Iterations of the lbfgs solver.
    c_grid
        Candidate inverse regularisation strengths.

    Returns
    -------
    dict
        ``fold``; ``C``, the chosen strength; ``val_scores``, {C: validation balanced accuracy};
        ``val_balanced_accuracy``, ``test_balanced_accuracy``, ``test_accuracy``;
        ``test_predictions``, a DataFrame indexed by the test nuclei with ``label`` and
        ``predicted``; ``held_out_decision``, a DataFrame of decision values indexed by the
        held-out nuclei (one column per class, or one column, the positive class, for a binary
        model), ``None`` without held-out nuclei; ``classes``, the class labels of the model;
        ``model`` and ``scaler``, the fitted estimators; ``medians``, the imputed values.

    Raises
    ------
    ValueError
        If ``splits`` lacks columns, holds several folds and ``fold`` is None (or lacks ``fold``),
        lacks a split, has nuclei without a profile, or ``train`` holds a single class; or if
        ``profiles`` has non-numeric columns. Each message names what is missing.
    """
    missing = [c for c in ("fold", "split", "label") if c not in splits.columns]
    if missing:
        raise ValueError(f"the split table lacks the columns {missing}")
    folds = sorted(pd.unique(splits["fold"]))
    if fold is None:
        if len(folds) != 1:
            raise ValueError(f"the split table holds {len(folds)} folds {folds}; choose one with fold=")
        fold = folds[0]
    elif fold not in folds:
        raise ValueError(f"fold {fold} is not in the split table, whose folds are {folds}")
    part = splits[splits["fold"] == fold]
    absent = [name for name in (TRAIN, VAL, TEST) if not (part["split"] == name).any()]
    if absent:
        raise ValueError(f"fold {fold} of the split table has no {absent} nuclei")
    non_numeric = [c for c in profiles.columns if not pd.api.types.is_numeric_dtype(profiles[c])]
    if non_numeric:
        raise ValueError(f"the profiles have non-numeric columns {non_numeric}")
    unknown = part.index.difference(profiles.index)
    if len(unknown):
        raise ValueError(f"{len(unknown)} nuclei of the split table have no profile, e.g. {unknown[0]!r}")

    def rows(name: str) -> tuple[np.ndarray, np.ndarray, pd.Index]:
        selected = part[part["split"] == name]
        features = profiles.loc[selected.index].to_numpy(np.float64)
        features[~np.isfinite(features)] = np.nan
        return features, selected["label"].to_numpy(np.int64), selected.index

    x_train, y_train, _ = rows(TRAIN)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the train split of fold {fold} holds a single class {np.unique(y_train).tolist()}")
    prepare = preprocessing().fit(x_train)
    x_train = prepare.transform(x_train)
    x_val, y_val, _ = rows(VAL)
    x_test, y_test, test_index = rows(TEST)
    x_val, x_test = prepare.transform(x_val), prepare.transform(x_test)

    best, val_scores = None, {}
    for c in sorted(float(c) for c in c_grid):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_train, y_train)
        score = _balanced_accuracy(y_val, model.predict(x_val))
        val_scores[c] = score
        if best is None or score > best[0]:
            best = (score, c, model)
    if best is None:
        raise ValueError("c_grid is empty")
    val_score, c, model = best
    predicted = model.predict(x_test)
    result = {
        "fold": int(fold),
        "C": c,
        "val_scores": val_scores,
        "val_balanced_accuracy": val_score,
        "test_balanced_accuracy": _balanced_accuracy(y_test, predicted),
        "test_accuracy": float(accuracy_score(y_test, predicted)),
        "test_predictions": pd.DataFrame({"label": y_test, "predicted": predicted}, index=test_index),
        "held_out_decision": None,
        "classes": model.classes_.tolist(),
        "model": model,
        "scaler": prepare.named_steps["scale"],
        "medians": pd.Series(prepare.named_steps["impute"].statistics_, index=profiles.columns),
    }
    if (part["split"] == HELD_OUT).any():
        x_held, _, held_index = rows(HELD_OUT)
        decision = model.decision_function(prepare.transform(x_held))
        columns = model.classes_.tolist() if decision.ndim == 2 else [model.classes_[1]]
        result["held_out_decision"] = pd.DataFrame(decision.reshape(len(held_index), -1), index=held_index,
                                                   columns=columns)
    logger.info("baseline fold %s: C=%g, val balanced accuracy %.3f, test %.3f",
                fold, c, val_score, result["test_balanced_accuracy"])
    return result


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predicted classes absent from the labels
        return float(balanced_accuracy_score(labels, predicted))
