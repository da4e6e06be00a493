"""2-D layouts of embeddings for the reports' scatter plots (UMAP, seeded)."""

from __future__ import annotations

import numpy as np


def umap_2d(values: np.ndarray, n_neighbors: int, seed: int, metric: str = "euclidean") -> np.ndarray:
    """``(n, 2)`` UMAP coordinates of the rows of ``values``, ``n_neighbors`` capped at ``n - 1``.

    Seeded (``random_state``), hence single-threaded and the same on every run.
    """
    import umap  # numba compiles on first import: only when a layout is drawn

    values = np.asarray(values)
    return umap.UMAP(n_neighbors=min(n_neighbors, len(values) - 1), random_state=seed, n_jobs=1,
                     metric=metric).fit_transform(values)
