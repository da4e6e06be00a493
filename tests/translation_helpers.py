"""LOTO data for the translation tests: random, and with a planted relation between the two spaces."""

from __future__ import annotations

import numpy as np
import pandas as pd

from image2reg.translation.features import unit_rows
from image2reg.translation.loto import LotoData


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
