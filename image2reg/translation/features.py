"""Optional input augmentations of the translation's grid search (method §7.3).

Beyond the image embedding itself, a sample's input can carry:

- ``use_y_train_mean``: the mean regulatory embedding of the training genes (the same vector for
  every sample);
- ``n_neighbors = n > 0``: "relaxed synthetic-intervention coefficients": the sample written as a
  combination of its ``n`` nearest training inputs, ``w = x · pinv(X_neighbours)`` (a training sample
  is its own nearest neighbour), on the inputs as they stand at that point, the mean label included
  when used (the reference's ``run_translation_demo.py``, lines 82–103), encoded with random Fourier
  features, either
  positional (``cos/sin(2π σ^{j/m} w)``, ``j < m``, ``2·m·n`` values) or Gaussian
  (``cos/sin(2π w Bᵀ)``, ``B ~ N(0, σ²)`` of ``m × n``, ``2·m`` values), as the reference's ``rff``
  package does;
- ``append_neighbors``: the flattened inputs (``"images"``: each neighbour's image embedding, mean
  label and encoding, as the reference appends its augmented ``X_train`` rows) or regulatory
  embeddings (``"genes"``) of those neighbours;
- ``normalize_inputs``: image embeddings scaled to unit length first (the reference's JUMP option).

The kernel of the translation only sees dot products and norms, so the order of the appended
columns does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class InputSettings:
    """Which augmentations to apply (the defaults: none, the released setting)."""

    use_y_train_mean: bool = False
    n_neighbors: int = 0
    n_encodings: int = 2
    encoding: Literal["positional", "gauss"] = "positional"
    sigma: float = 1.0
    append_neighbors: Literal["images", "genes"] | None = None
    normalize_inputs: bool = False

    def __post_init__(self) -> None:
        if self.n_neighbors < 0 or self.n_encodings < 1 or self.sigma <= 0:
            raise ValueError(f"n_neighbors must be ≥ 0, n_encodings ≥ 1 and sigma > 0, got {self}")
        if self.encoding not in ("positional", "gauss"):
            raise ValueError(f"encoding must be 'positional' or 'gauss', got {self.encoding!r}")
        if self.append_neighbors not in (None, "images", "genes"):
            raise ValueError(f"append_neighbors must be null, 'images' or 'genes', got {self.append_neighbors!r}")


def unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean length (zero rows stay zero)."""
    values = np.asarray(values, dtype=np.float64)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    return values / np.where(norms == 0, 1.0, norms)


def fourier_encoding(weights: np.ndarray, n_encodings: int, encoding: str, sigma: float,
                     seed: int = 0) -> np.ndarray:
    """Random Fourier features of the rows of ``weights`` (samples × n), as the ``rff`` package computes them."""
    weights = np.asarray(weights, dtype=np.float64)
    if encoding == "positional":
        frequencies = 2 * np.pi * sigma ** (np.arange(n_encodings) / n_encodings)
        phases = (weights[..., None] * frequencies).reshape(len(weights), -1)
    elif encoding == "gauss":
        basis = np.random.default_rng(seed).normal(0.0, sigma, size=(n_encodings, weights.shape[1]))
        phases = 2 * np.pi * weights @ basis.T
    else:
        raise ValueError(f"encoding must be 'positional' or 'gauss', got {encoding!r}")
    return np.concatenate([np.cos(phases), np.sin(phases)], axis=1)


def augment_inputs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, settings: InputSettings,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The training and test inputs with the augmentations of ``settings`` appended.

    Parameters
    ----------
    x_train, y_train
        n × d image embeddings and n × p regulatory embeddings of the training genes.
    x_test
        m × d image embeddings to predict.
    settings
        The augmentations; ``n_neighbors`` larger than ``n`` uses all training genes.
    seed
        Seed of the Gaussian encoding's random basis.
    """
    x_train, y_train = np.asarray(x_train, dtype=np.float64), np.asarray(y_train, dtype=np.float64)
    x_test = np.atleast_2d(np.asarray(x_test, dtype=np.float64))
    if settings.normalize_inputs:
        x_train, x_test = unit_rows(x_train), unit_rows(x_test)
    both = np.vstack([x_train, x_test])
    if settings.use_y_train_mean:
        both = np.hstack([both, np.broadcast_to(y_train.mean(axis=0), (len(both), y_train.shape[1]))])
    n_train = len(x_train)
    n = min(settings.n_neighbors, n_train)
    if n == 0:
        return both[:n_train], both[n_train:]
    # as the reference: neighbours and weights on the inputs so far (image embedding, and the mean label
    # when used); a training sample is its own nearest neighbour, a test sample sees the training ones
    train = both[:n_train]
    distances = ((both[:, None, :] - train[None, :, :]) ** 2).sum(axis=2)
    neighbours = np.argsort(distances, axis=1, kind="stable")[:, :n]  # samples × n
    weights = np.einsum("sd,snd->sn", both, np.linalg.pinv(train[neighbours]).transpose(0, 2, 1))
    augmented = np.hstack([both, fourier_encoding(weights, settings.n_encodings, settings.encoding, settings.sigma,
                                                  seed)])
    parts = [augmented]
    if settings.append_neighbors == "images":  # the neighbours' augmented inputs, as the reference appends them
        parts.append(augmented[:n_train][neighbours].reshape(len(both), -1))
    elif settings.append_neighbors == "genes":
        parts.append(y_train[neighbours].reshape(len(both), -1))
    features = np.hstack(parts)
    return features[:n_train], features[n_train:]
