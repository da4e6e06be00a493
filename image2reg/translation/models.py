"""Translation models: NTK kernel ridge regression (the method's), and plain models to compare with.

Every model maps a few training pairs (image embedding ``x`` → regulatory embedding ``y`` of the
same gene) to a function predicting ``y`` for an unseen ``x``; all output dimensions are fitted at
once. :func:`ntk_kernel` is the neural tangent kernel of a one-hidden-layer ReLU network with bias
(method §7.1):

    u = (x·y + 1) / sqrt((|x|² + 1)(|y|² + 1)),   S = sqrt((|x|² + 1)(|y|² + 1))
    K = S · [(u(π − arccos u) + sqrt(1 − u²)) / π + u(π − arccos u) / π]

and :class:`NtkRegression` solves ``α = (K + reg·I)⁻¹ Y``. Because the training sets are small (tens
of genes), :func:`ntk_predict_many` fits every ridge value of a grid from one eigendecomposition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge


class Translator(Protocol):
    """What the evaluation needs of a model: fit on pairs, predict new rows."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Translator: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def ntk_kernel(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """The one-hidden-layer ReLU NTK (with bias) between the rows of ``x`` (n × d) and ``y`` (m × d)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = x if y is None else np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of columns, got {x.shape[1]} and {y.shape[1]}")
    scale = np.sqrt(np.outer((x * x).sum(axis=1) + 1.0, (y * y).sum(axis=1) + 1.0))
    u = np.clip((x @ y.T + 1.0) / scale, -1.0, 1.0)
    angle = np.pi - np.arccos(u)
    return scale * ((u * angle + np.sqrt(1.0 - u * u)) / np.pi + u * angle / np.pi)


def _check_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be n × d and n × p with n ≥ 1, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    return x, y


class NtkRegression:
    """Kernel ridge regression with :func:`ntk_kernel` (the method's translation model)."""

    def __init__(self, reg: float = 1.0) -> None:
        if reg < 0:
            raise ValueError(f"reg must be non-negative, got {reg}")
        self.reg = float(reg)

    def fit(self, x: np.ndarray, y: np.ndarray) -> NtkRegression:
        self.x_, y = _check_pairs(x, y)
        kernel = ntk_kernel(self.x_) + self.reg * np.eye(len(self.x_))
        self.alpha_ = np.linalg.lstsq(kernel, y, rcond=None)[0] if self.reg == 0 else np.linalg.solve(kernel, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ntk_kernel(x, self.x_) @ self.alpha_


def ntk_predict_many(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                     regs: Sequence[float]) -> np.ndarray:
    """NTK predictions for every ridge value at once: ``len(regs) × n_test × p``.

    One eigendecomposition ``K = V Λ Vᵀ`` of the training kernel gives ``α(reg) = V (Λ + reg)⁻¹ Vᵀ Y``
    for all values; equal to :class:`NtkRegression` per value (a zero ridge uses the pseudo-inverse).
    """
    x_train, y_train = _check_pairs(x_train, y_train)
    eigenvalues, vectors = np.linalg.eigh(ntk_kernel(x_train))
    projected = vectors.T @ y_train  # n × p
    cross = ntk_kernel(x_test, x_train) @ vectors  # m × n
    tolerance = eigenvalues.max() * len(eigenvalues) * np.finfo(np.float64).eps
    out = []
    for reg in regs:
        shifted = eigenvalues + reg
        inverse = np.where(np.abs(shifted) > tolerance, 1.0 / np.where(shifted == 0, 1.0, shifted), 0.0)
        out.append(cross @ (inverse[:, None] * projected))
    return np.stack(out)


class LinearTranslation:
    """Ridge-regularised linear regression (``reg = 0``: ordinary least squares, minimum norm)."""

    def __init__(self, reg: float = 1.0) -> None:
        self.reg = float(reg)

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearTranslation:
        x, y = _check_pairs(x, y)
        self.model_ = Ridge(alpha=self.reg, solver="svd" if self.reg == 0 else "auto").fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(np.atleast_2d(x))


class KernelRidgeTranslation:
    """Plain kernel ridge regression (scikit-learn) with an RBF, linear or polynomial kernel."""

    def __init__(self, reg: float = 1.0, kernel: Literal["rbf", "linear", "poly"] = "rbf",
                 gamma: float | None = None) -> None:
        self.reg, self.kernel, self.gamma = float(reg), kernel, gamma

    def fit(self, x: np.ndarray, y: np.ndarray) -> KernelRidgeTranslation:
        x, y = _check_pairs(x, y)
        self.model_ = KernelRidge(alpha=self.reg, kernel=self.kernel, gamma=self.gamma).fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(np.atleast_2d(x))


class SiTranslation:
    """The "synthetic intervention" baseline: ``w = x · pinv(X_train)``, ``ŷ = w · Y_train``."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> SiTranslation:
        self.x_, self.y_ = _check_pairs(x, y)
        self.pinv_ = np.linalg.pinv(self.x_)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.atleast_2d(x) @ self.pinv_ @ self.y_


def make_model(name: Literal["ntk", "linear", "kernel_ridge", "si"], reg: float = 1.0) -> Translator:
    """A model by name (the params' ``model`` key)."""
    if name == "ntk":
        return NtkRegression(reg)
    if name == "linear":
        return LinearTranslation(reg)
    if name == "kernel_ridge":
        return KernelRidgeTranslation(reg)
    if name == "si":
        return SiTranslation()
    raise ValueError(f"unknown translation model {name!r} (ntk, linear, kernel_ridge, si)")
