"""Phenotypic activity of perturbations: mean average precision of their profiles against the control.

Whether a perturbation changes the nuclei at all is the question every later stage presupposes
(only perturbations with a phenotype carry a signal to link to gene regulation). Here it is
answered with the standard *phenotypic activity* score of image-based profiling (Kalinin et al.,
*Nat. Commun.* 2025, the ``copairs`` package), computed on profiles of the CNN embeddings:

1. every profile of a perturbation is a query; it ranks all other profiles of the same
   perturbation (its positives) together with all profiles of the control (its negatives) by
   similarity (cosine by default);
2. the query's average precision (AP) says how far up the ranking its positives are: 1 when
   every replicate is more similar to it than any control profile, about the random
   expectation when replicates and controls are interleaved by chance;
3. a perturbation's mean average precision (mAP) is the mean AP of its queries, its p-value the
   fraction of a permutation null (random rankings of the same numbers of positives and
   negatives) at least as high, and ``corrected_p_value`` the Benjamini–Hochberg correction over
   all scored perturbations; a perturbation is *active* when the corrected p-value is below the
   threshold.

Profiles of two different perturbations are never paired: the score measures the distance to the
control, not to the other perturbations (that would be phenotypic *distinctiveness*). The AP, the
null distributions, the p-values and the FDR correction all come from ``copairs``
(:func:`copairs.map.average_precision`, :func:`copairs.map.mean_average_precision`); this module
only builds its metadata, checks the input and shapes the result.

Profiles are typically the mean embeddings of the nuclei of a well or a field of view
(:func:`well_profiles`), for small sets also single nuclei. They are compared as given: centre or
scale them beforehand (e.g. relative to the control) if the similarity should ignore an offset
common to all profiles, which is large for non-negative CNN features under cosine similarity.

- :func:`phenotypic_activity`: per-perturbation mAP, p-values and activity calls;
- :func:`well_profiles`: nucleus embeddings averaged per well (or any grouping) with their metadata.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from copairs.matching import UnpairedException, assign_reference_index

logger = logging.getLogger("image2reg")

#: Columns of the table :func:`phenotypic_activity` returns, in order (index: ``gene``).
ACTIVITY_COLUMNS = ["mean_average_precision", "p_value", "corrected_p_value", "below_p", "active", "n_profiles"]

# Metadata columns handed to copairs (integer codes only, so any label type works in its SQL joins).
_GENE, _REFERENCE, _GROUP = "Metadata_Gene", "Metadata_Reference_Index", "Metadata_Group"
# Similarities that divide by a row's norm (``correlation``: of the centred row).
_NORMED = {"cosine", "abs_cosine", "correlation"}


def phenotypic_activity(
    embeddings: np.ndarray | pd.DataFrame,
    conditions: Sequence | np.ndarray | pd.Series,
    *,
    control: object = "EMPTY",
    groups: Sequence | np.ndarray | pd.Series | pd.DataFrame | None = None,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
    distance: str = "cosine",
    progress_bar: bool = False,
) -> pd.DataFrame:
    """Phenotypic activity of each perturbation: mAP of its profiles against the control's.

    Every profile of a perturbation is a query whose positives are the other profiles of that
    perturbation and whose negatives are all control profiles; the perturbation's mAP is the mean
    of its queries' average precision, tested against copairs' permutation null. In copairs'
    terms (the activity recipe of its documentation), with a reference index that is the row
    position for a control profile and -1 otherwise::

        pos_sameby = [gene, reference]   # same perturbation; controls never (unique reference)
        pos_diffby = [group] or []       # with ``groups``: replicates from different groups only
        neg_sameby = []                  # any control profile is a negative, whatever its group
        neg_diffby = [gene, reference]   # perturbation x control only (two perturbations share
                                         # reference -1, two controls share the gene)

    Why ``groups`` restricts positives only: nuclei of one well (or plate) share its seeding,
    staining and imaging, so two profiles from one well (e.g. two of its fields) look alike even
    without any phenotype; counting them as replicates would call inactive perturbations active.
    Negatives are not restricted: a well holds one condition, so a same-well restriction would
    leave no negatives, and every control profile is a legitimate contrast.

    A perturbation none of whose profiles has a positive from another group (e.g. all in one
    well) cannot be scored: it gets a row with NaN mAP and p-values, ``below_p`` and ``active``
    False, and a warning is logged; the other perturbations are scored, and the FDR correction
    runs over the scored ones only. If no perturbation can be scored this is a ValueError.

    Parameters
    ----------
    embeddings
        ``(n, d)`` profiles, one row per profile (a DataFrame is used by position).
    conditions
        ``(n,)`` condition of each profile: a perturbation name or ``control``.
    control
        The negative-control condition; it must have at least one profile.
    groups
        Optional ``(n,)`` group of each profile (well, plate, ...), or a DataFrame whose rows
        are combined into one key (e.g. plate and well); positives must come from different
        groups.
    null_size
        Number of random rankings of each permutation null (the smallest p-value is
        ``1 / (null_size + 1)``).
    threshold
        Significance level of ``below_p`` (raw p-value) and ``active`` (corrected p-value).
    seed
        Seed of the permutation nulls; the result is a function of the input and the seed.
    distance
        Similarity of copairs: ``"cosine"``, ``"abs_cosine"``, ``"correlation"``,
        ``"euclidean"``, ``"manhattan"``, ``"chebyshev"`` or a SciPy ``cdist`` metric.
    progress_bar
        Whether to show copairs' progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per perturbation (the control excluded), indexed by ``gene`` (the condition
        labels as given), sorted by ``mean_average_precision`` descending (unscored ones last),
        with the columns ``mean_average_precision``, ``p_value``, ``corrected_p_value`` (BH),
        ``below_p`` (``p_value < threshold``), ``active`` (``corrected_p_value < threshold``)
        and ``n_profiles`` (profiles of the perturbation in the input).

    Raises
    ------
    ValueError
        If the shapes disagree, the embeddings hold NaN or infinite values (or, for a
        norm-based similarity, a zero row), a condition or group is missing, the control is
        absent, there is no perturbation, a perturbation has fewer than 2 profiles, or no
        perturbation has two profiles in different groups.

    Notes
    -----
    copairs caches null distributions under ``~/.copairs`` keyed by the numbers of positives and
    negatives but drawn with a seed that depends on the other configurations of the call, so a
    shared cache makes p-values depend on earlier calls. Each call here uses a throwaway cache
    directory instead, which keeps the result a function of the input and ``seed``. Exact ties
    in similarity rank positives first (copairs' stable sort), which matters only for duplicated
    profiles.
    """
    feats = _embedding_matrix(embeddings)
    n = feats.shape[0]
    labels = _labels(conditions, n, "conditions")
    if distance in _NORMED:
        rows = feats - feats.mean(axis=1, keepdims=True) if distance == "correlation" else feats
        zero = np.flatnonzero(~(np.linalg.norm(rows, axis=1) > 0))
        if zero.size:
            raise ValueError(
                f"{zero.size} profile(s) have zero {'variance' if distance == 'correlation' else 'norm'}"
                f" (first at row {zero[0]}): {distance!r} similarity is undefined for them"
            )

    is_control = labels == control
    if not is_control.any():
        raise ValueError(f"the control {control!r} has no profile among the conditions")
    counts = labels[~is_control].value_counts(sort=False)
    if counts.empty:
        raise ValueError(f"there is no perturbation besides the control {control!r}")
    too_few = counts[counts < 2]
    if not too_few.empty:
        listed = ", ".join(f"{gene!r} ({count})" for gene, count in too_few.items())
        raise ValueError(f"perturbations need at least 2 profiles to pair them; too few: {listed}")

    codes, uniques = pd.factorize(labels)
    meta = pd.DataFrame({_GENE: codes})
    meta = assign_reference_index(meta, pd.Index(np.flatnonzero(is_control.to_numpy())), reference_col=_REFERENCE)
    pos_diffby: list[str] = []
    if groups is not None:
        meta[_GROUP] = pd.factorize(_group_keys(groups, n))[0]
        pos_diffby = [_GROUP]
    columns = [_GENE, _REFERENCE]

    with tempfile.TemporaryDirectory(prefix="copairs-") as cache:
        try:
            ap = average_precision(
                meta, feats, pos_sameby=columns, pos_diffby=pos_diffby, neg_sameby=[], neg_diffby=columns,
                distance=distance, progress_bar=progress_bar,
            )
        except UnpairedException as error:
            raise ValueError(
                "no perturbation has two profiles in different groups, so none can be scored"
                if groups is not None else str(error)
            ) from error
        scores = mean_average_precision(
            ap, sameby=[_GENE], null_size=null_size, threshold=threshold, seed=seed,
            progress_bar=progress_bar, cache_dir=cache,
        )

    table = pd.DataFrame(index=pd.Index(counts.index, name="gene"))
    scored = scores.set_index(uniques[scores[_GENE].to_numpy()])
    for column in ["mean_average_precision", "p_value", "corrected_p_value"]:
        table[column] = scored[column].reindex(table.index).astype(np.float64)
    table["below_p"] = scored["below_p"].reindex(table.index, fill_value=False).astype(bool)
    table["active"] = scored["below_corrected_p"].reindex(table.index, fill_value=False).astype(bool)
    table["n_profiles"] = counts.astype(np.int64)
    unscored = table.index[table["mean_average_precision"].isna()]
    if len(unscored):
        logger.warning(
            "%d perturbation(s) have no two profiles in different groups and are not scored: %s",
            len(unscored), ", ".join(map(repr, unscored)),
        )
    order = np.lexsort((np.arange(len(table)), -table["mean_average_precision"].fillna(-np.inf).to_numpy()))
    return table.iloc[order]


def well_profiles(
    embeddings: np.ndarray | pd.DataFrame,
    obs: pd.DataFrame,
    by: str | Sequence[str] = ("Metadata_Plate", "Metadata_Well"),
    condition: str = "Metadata_Gene",
) -> tuple[np.ndarray, pd.DataFrame]:
    """Average nucleus embeddings per well (or any grouping): the profiles :func:`phenotypic_activity` scores.

    A plain mean per group of ``obs[by]``; each group must hold a single condition.

    Parameters
    ----------
    embeddings
        ``(n, d)`` nucleus embeddings (a DataFrame is used by position).
    obs
        ``n`` rows of nucleus metadata in the order of ``embeddings``, with the ``by`` columns
        and ``condition``.
    by
        The column(s) that define a profile, e.g. plate and well, or plate, well and site for
        one profile per field of view.
    condition
        The column of the perturbation of each nucleus.

    Returns
    -------
    profiles : numpy.ndarray
        ``(m, d)`` mean embedding of each group, sorted by the group keys.
    meta : pandas.DataFrame
        ``m`` rows aligned with ``profiles`` (index 0..m-1): the ``by`` columns, ``condition`` and
        ``n_nuclei`` (nuclei averaged).

    Raises
    ------
    ValueError
        If the lengths disagree, a column is missing, a key or the condition is missing for a
        nucleus, or a group holds more than one condition.
    """
    by = [by] if isinstance(by, str) else list(by)
    feats = _embedding_matrix(embeddings, check_finite=False)
    if len(obs) != feats.shape[0]:
        raise ValueError(f"obs has {len(obs)} rows but there are {feats.shape[0]} embeddings")
    keys = list(dict.fromkeys([*by, condition]))
    missing = [column for column in keys if column not in obs.columns]
    if missing:
        raise ValueError(f"obs lacks the column(s) {missing}")
    table = obs[keys].reset_index(drop=True)
    if table.isna().any(axis=None):
        raise ValueError(f"obs has missing values in {table.columns[table.isna().any()].tolist()}")

    grouped = pd.DataFrame(feats).groupby([table[column] for column in keys], sort=True, observed=True)
    means = grouped.mean()
    meta = means.index.to_frame(index=False)
    mixed = meta[meta.duplicated(by, keep=False)]
    if not mixed.empty:
        first = mixed.iloc[0]
        in_first = mixed.loc[(mixed[by] == first[by]).all(axis=1), condition]
        raise ValueError(
            f"{mixed[by].drop_duplicates().shape[0]} group(s) hold more than one {condition}, e.g. "
            f"{dict(first[by])} with {sorted(map(str, in_first))}"
        )
    meta["n_nuclei"] = grouped.size().to_numpy()
    return means.to_numpy(), meta


def _embedding_matrix(embeddings: np.ndarray | pd.DataFrame, *, check_finite: bool = True) -> np.ndarray:
    """The embeddings as a 2-D float array; NaN or infinite values are a ValueError."""
    feats = np.asarray(embeddings.to_numpy() if isinstance(embeddings, pd.DataFrame) else embeddings)
    if feats.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (profiles, features) array, got shape {feats.shape}")
    feats = feats.astype(np.float64 if feats.dtype == np.float64 else np.float32, copy=False)
    if check_finite and not np.isfinite(feats).all():
        rows = np.flatnonzero(~np.isfinite(feats).all(axis=1))
        raise ValueError(f"embeddings hold NaN or infinite values in {rows.size} row(s), first at row {rows[0]}")
    return feats


def _labels(values: Sequence | np.ndarray | pd.Series, n: int, name: str) -> pd.Series:
    """Per-row labels as a Series on 0..n-1; a wrong length or a missing label is a ValueError."""
    array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values, dtype=object)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"{name} must have one entry per profile ({n}), got shape {array.shape}")
    labels = pd.Series(array)
    if labels.isna().any():
        raise ValueError(f"{name} has {int(labels.isna().sum())} missing value(s)")
    return labels


def _group_keys(groups: Sequence | np.ndarray | pd.Series | pd.DataFrame, n: int) -> pd.Series:
    """One hashable group key per profile; a DataFrame's rows are combined into tuples."""
    if isinstance(groups, pd.DataFrame):
        if len(groups) != n:
            raise ValueError(f"groups must have one row per profile ({n}), got {len(groups)}")
        if groups.isna().any(axis=None):
            raise ValueError("groups has missing values")
        return pd.Series(list(groups.itertuples(index=False, name=None)), dtype=object)
    return _labels(groups, n, "groups")


def field_activity(values: np.ndarray, obs: pd.DataFrame, control: str, seed: int = 0,
                   model: str | None = None) -> pd.DataFrame:
    """Phenotypic activity of each condition from field-of-view profiles.

    Each field's profile is the mean of its nuclei's ``values`` (rows in the order of ``obs``, which has
    ``image_path``, ``Metadata_Gene``, ``Metadata_Plate`` and ``Metadata_Well``), standardised against the
    control's fields; :func:`phenotypic_activity` then retrieves each condition's fields against the
    control's, positive pairs from different wells.

    Embeddings are comparable only within the model that made them. With ``model`` (an ``obs`` column naming
    the model that embedded each nucleus, e.g. the fold model that held its field out), every field is
    standardised against the control fields *of its own model*, so the offsets between separately trained
    embedding spaces do not swamp the conditions' differences; without it (one space, e.g. classical
    features) against all control fields.

    Raises
    ------
    ValueError
        A field embedded by more than one model, or a model without control fields (both named).
    """
    fields, meta = well_profiles(values, obs, by=("image_path",), condition="Metadata_Gene")
    columns = ["Metadata_Plate", "Metadata_Well"] + ([model] if model else [])
    per_field = obs.groupby("image_path", observed=True)
    wells = per_field[columns].first()
    meta = meta.join(wells, on="image_path")
    if model:
        mixed = per_field[model].nunique()
        if (mixed > 1).any():
            raise ValueError(f"field {mixed.index[mixed > 1][0]} holds nuclei of several models ({model})")
    is_control = (meta["Metadata_Gene"] == control).to_numpy()
    scaled = scale_by_control(fields, is_control, meta[model] if model else None, control=control, what="field")
    return phenotypic_activity(scaled, meta["Metadata_Gene"].to_numpy(), control=control,
                               groups=meta[["Metadata_Plate", "Metadata_Well"]], seed=seed)


def scale_by_control(values: np.ndarray, is_control: np.ndarray, spaces: Sequence | pd.Series | None = None,
                     *, control: str = "control", what: str = "row") -> np.ndarray:
    """Standardise rows against the control rows of their own space: ``(x − mean) / SD`` per dimension.

    Embeddings of separately trained models live in spaces of their own: their offsets and scales
    differ, so the rows of one model are comparable only with the same model's rows. Scaling each row
    by the control rows *of its own space* puts every space on the control's footing (the control at 0,
    unit spread per dimension) before rows of several spaces are pooled.

    Parameters
    ----------
    values
        ``(n, d)`` rows (profiles or embeddings).
    is_control
        bool, ``n``: the control's rows.
    spaces
        ``n`` labels of the space each row lives in (e.g. the model that embedded it); None: one space.
    control, what
        The control's name and what a row is, for the error message.

    Returns
    -------
    numpy.ndarray
        float64, ``(n, d)``. A dimension constant over a space's control rows is only centred.

    Raises
    ------
    ValueError
        A space without control rows (named), or mismatched lengths.
    """
    values = np.asarray(values, dtype=np.float64)
    is_control = np.asarray(is_control, dtype=bool)
    if values.ndim != 2 or len(is_control) != len(values):
        raise ValueError(f"values must be (n, d) with one is_control flag per row, got {values.shape} and "
                         f"{len(is_control)} flags")
    labels = np.zeros(len(values), dtype=int) if spaces is None else pd.factorize(pd.Series(spaces).astype(str))[0]
    names = ["all"] if spaces is None else list(pd.unique(pd.Series(spaces).astype(str)))
    scaled = np.empty_like(values)
    for space in np.unique(labels):
        members = labels == space
        reference = values[members & is_control]
        if not len(reference):
            raise ValueError(f"model {names[space]!r} embedded no {what} of the control {control!r}: nothing to "
                             "scale by")
        spread = reference.std(axis=0)
        scaled[members] = (values[members] - reference.mean(axis=0)) / np.where(spread > 0, spread, 1)
    return scaled
