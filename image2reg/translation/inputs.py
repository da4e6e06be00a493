"""The inputs of the translation stages, read from the stages before: LOTO image and regulatory embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.translation.evaluate import LotoData
from image2reg.translation.features import unit_rows


def model_block(table: ad.AnnData, model: str) -> pd.DataFrame:
    """The rows of one model of a ``model``/``gene`` AnnData (stages 04, 06) as a genes × dimensions table."""
    rows = (table.obs["model"].astype(str) == model).to_numpy()
    if not rows.any():
        known = sorted(table.obs["model"].astype(str).unique())
        raise KeyError(f"no model {model!r} in the embeddings (models: {known})")
    genes = table.obs.loc[rows, "gene"].astype(str).to_numpy()
    return pd.DataFrame(np.asarray(table.X)[rows], index=pd.Index(genes, name="gene"))


def loto_data(image: ad.AnnData, regulatory: ad.AnnData, genes: Sequence[str], targets: Sequence[str],
              control: str) -> tuple[LotoData, list[str]]:
    """LOTO evaluation data: each target's image embeddings (stage 04) and unit regulatory embeddings (stage 06).

    Parameters
    ----------
    image
        ``gene_embeddings_loto.h5ad`` of stage 04 (obs ``model``, ``gene``).
    regulatory
        ``regulatory_embeddings_loto.h5ad`` of stage 06 (obs ``model``, ``gene``).
    genes
        The interactome's genes: the candidates every prediction is ranked among.
    targets
        The impactful genes.
    control
        The control condition, left out of the image tables (it has no regulatory embedding).

    Returns
    -------
    LotoData, list[str]
        The data of the targets that have both LOTO models, and the targets left out (not in the
        interactome or without a model).
    """
    genes = np.asarray(genes, dtype=str)
    image_models = set(image.obs["model"].astype(str))
    regulatory_models = set(regulatory.obs["model"].astype(str))
    usable = [t for t in targets if t in image_models and t in regulatory_models and t in set(genes)]
    images, embeddings = {}, {}
    for target in usable:
        block = model_block(image, target)
        images[target] = block.drop(index=[control], errors="ignore")
        reg = model_block(regulatory, target)
        missing = sorted(set(genes) - set(reg.index))
        if missing:
            raise ValueError(f"regulatory model {target!r} lacks {len(missing)} interactome genes, e.g. {missing[:3]}")
        embeddings[target] = unit_rows(reg.loc[genes].to_numpy())
    left_out = [t for t in targets if t not in usable]
    return LotoData(genes=genes, targets=sorted(usable), image=images, regulatory=embeddings), left_out
