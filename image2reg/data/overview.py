"""What stage 00 shows of a dataset: sample fields per condition and, for the synthetic world, its structure.

Stage 00's figures draw what these functions return (:mod:`image2reg.plotting`): the fields of a few
conditions (:func:`montage_conditions`, :func:`montage_fields`, both at once: :func:`condition_montage`) and
the module structure of the single-cell expression (:func:`module_correlation`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats

from image2reg.images.io import ImageReadError, read_field
from image2reg.layout import RawLayout

logger = logging.getLogger("image2reg")


def montage_conditions(genes: pd.DataFrame, control: str,
                       per_class: tuple[tuple[str, int], ...] = (("strong", 3), ("weak", 2), ("none", 2))
                       ) -> list[tuple[str, str]]:
    """``(gene, label)`` pairs to show: the control, then the strongest genes of each effect class of the truth."""
    screen = genes[genes["in_screen"]].sort_values("effect_size", ascending=False)
    picks = [(control, "control")]
    for effect_class, n in per_class:
        chosen = screen[screen["effect_class"] == effect_class].head(n)
        picks += [(g, f"{effect_class} {s:.1f}") for g, s in zip(chosen["gene"], chosen["effect_size"])]
    return picks


def montage_fields(raw: RawLayout, metadata: pd.DataFrame, conditions: list[tuple[str, str]], n_fields: int = 4,
                   crop: int = 192, seed: int = 0) -> list[list[np.ndarray]]:
    """The central ``crop`` × ``crop`` px of up to ``n_fields`` random in-focus fields per condition.

    ``metadata`` is a per-field table with the Rohban columns (``Image_Metadata_*``); the fields are read
    from ``raw.images/<plate>/<file>``.
    """
    rng = np.random.default_rng(seed)
    in_focus = metadata[(metadata["Image_Metadata_QCFlag_isBlurry"] == 0)
                        & (metadata["Image_Metadata_QCFlag_isSaturated"] == 0)]
    panels = []
    for gene, _ in conditions:
        rows = in_focus[in_focus["Image_Metadata_GeneSymbol"] == gene]
        picks = rows.iloc[rng.permutation(len(rows))[:n_fields]]
        images = []
        for plate, name in picks[["Image_Metadata_Plate", "Image_FileName_OrigHoechst"]].itertuples(index=False):
            try:
                image = read_field(raw.images / str(plate) / name)
            except ImageReadError as error:  # a bad field is left out here; stage 01 names and counts it
                logger.warning("montage: %s", error)
                continue
            top = (image.shape[0] - crop) // 2
            images.append(image[top:top + crop, top:top + crop])
        panels.append(images)
    return panels


@dataclass(frozen=True)
class FieldMontage:
    """Fields to show per condition (for :func:`image2reg.plotting.field_montage`)."""

    panels: list[list[np.ndarray]]  #: per condition, up to ``n_fields`` crops of fields
    conditions: list[tuple[str, str]]  #: ``(gene, label)`` of each row
    n_fields: int
    crop: int  #: side of the crops, px


def condition_montage(raw: RawLayout, metadata: pd.DataFrame, genes: pd.DataFrame, control: str, field_size: int,
                      n_fields: int = 4, max_crop: int = 192) -> FieldMontage:
    """Fields of the control and of the strongest genes of each effect class of a synthetic world.

    Parameters
    ----------
    raw
        The raw folder holding the fields.
    metadata
        The world's per-field table (Rohban columns, ``Image_Metadata_*``).
    genes
        The world's genes table (``gene``, ``in_screen``, ``effect_class``, ``effect_size``).
    control
        The negative control's condition.
    field_size
        Side of the fields, px: the crops are the central ``min(max_crop, field_size)`` px.
    n_fields
        Fields per condition.
    max_crop
        The largest crop side, px.

    Returns
    -------
    FieldMontage
        The conditions of :func:`montage_conditions` and the crops of :func:`montage_fields` (seed 0).
    """
    conditions = montage_conditions(genes, control)
    crop = min(max_crop, field_size)
    return FieldMontage(montage_fields(raw, metadata, conditions, n_fields=n_fields, crop=crop), conditions,
                        n_fields, crop)


def module_correlation(cells: ad.AnnData, genes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Spearman ρ between the genes of the single-cell counts, genes ordered by module.

    Returns the genes × genes ρ matrix and the module of each of its rows.
    """
    modules = genes.set_index("gene").loc[cells.var_names, "module"].to_numpy()
    order = np.argsort(modules, kind="stable")
    counts = cells.X.toarray() if hasattr(cells.X, "toarray") else np.asarray(cells.X)
    return stats.spearmanr(counts[:, order]).statistic, modules[order]
