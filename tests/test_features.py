"""Input augmentations of the translation, against the reference's definitions."""

from __future__ import annotations

import numpy as np

from image2reg.translation.features import InputSettings, augment_inputs


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
