"""The inputs of the translation stages, read from the stages before: LOTO image and regulatory embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.translation.features import unit_rows
from image2reg.translation.loto import LotoData


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


def profile_table(profiles: pd.DataFrame, conditions: pd.Series, control: str) -> pd.DataFrame:
    """Mean classical profile of every condition, each feature standardised against the control's nuclei.

    The image side without a CNN: the features of stage 02 (:func:`image2reg.profiling.features.nucleus_profiles`)
    need no training, so every condition's row is a leave-one-target-out embedding as it stands.

    Parameters
    ----------
    profiles
        Nuclei × features (``profiles.parquet`` of stage 02), indexed by nucleus row.
    conditions
        The condition of every nucleus (``Metadata_Gene`` of stage 01's nucleus table), indexed by nucleus row;
        it must cover the rows of ``profiles``.
    control
        The control condition: its nuclei give each feature's mean and SD (an SD of 0 is taken as 1).

    Returns
    -------
    pandas.DataFrame
        Conditions (sorted, the control included) × features. A missing or infinite value is replaced by
        the feature's median over all nuclei before anything is computed; a feature with no finite value is
        dropped.
    """
    missing = profiles.index.difference(conditions.index)
    if len(missing):
        raise KeyError(f"{len(missing)} profile rows have no condition in the nucleus table, e.g. "
                       f"{missing[:3].tolist()}")
    values = profiles.to_numpy(np.float64)
    finite = np.isfinite(values)
    usable = finite.any(axis=0)  # a feature without a single finite value carries nothing
    values, finite, columns = values[:, usable], finite[:, usable], profiles.columns[usable]
    values = np.where(finite, values, np.nanmedian(np.where(finite, values, np.nan), axis=0))
    labels = conditions.loc[profiles.index].astype(str).to_numpy()
    reference = values[labels == control]
    if len(reference) < 2:
        raise ValueError(f"the control {control!r} has {len(reference)} profiled nuclei; at least 2 are needed "
                         "to standardise the features")
    spread = reference.std(axis=0)
    scaled = (values - reference.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    table = pd.DataFrame(scaled, columns=columns).groupby(labels, sort=True).mean()
    table.index.name = "gene"
    return table
