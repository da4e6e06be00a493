"""Train / validation / test splits of the nucleus table for the CNN stages, grouped by field of view.

Nuclei of one field of view (``image_path``) share its illumination, focus and neighbourhood, and
the CNN also sees the field around each nucleus; so a field never gives nuclei to two splits of a
fold. Only nuclei of fields that pass QC (``QC_pass``) are used. Every function is deterministic
for its ``seed``.

- :func:`screen_splits`: the specificity screen, one gene against the control (method §4.3);
- :func:`multiclass_splits`: the multi-class model over the impactful genes and the control (§4.4);
- :func:`loto_splits`: leave-one-target-out, train/val/test without one condition (§4.5);
- :func:`min_fields`: how many fields a condition needs for given fold numbers.

They return one row per (fold, nucleus), indexed by the row labels of the nucleus table, with the
columns ``fold``, ``split`` (``"train"``, ``"val"``, ``"test"``, or ``"held_out"`` in LOTO) and
``label`` (an integer class code). Within a fold a nucleus occurs once; the nuclei used are the same
in every fold, so the test parts of the folds partition them.

As in the reference, the control is randomly undersampled nucleus by nucleus, once, before
splitting; the test parts are the folds of a stratified k-fold, and the validation part of each
fold is the first fold of an inner stratified k-fold of the rest, with the reference's numbers of
folds. Unlike the reference, the stratified k-folds (scikit-learn's ``StratifiedKFold``) run over
the table of fields, each labelled with its one condition; that makes them stratified *group*
k-folds that spread every condition's fields evenly over the folds (±1 field). The reference's
``StratifiedGroupKFold`` over nuclei instead assigns fields greedily in order of size (the seed
only breaks ties between fields of equal size), balancing nucleus counts; with uneven field sizes
it packs a condition's small fields into one fold and often leaves a split without the condition
(in most random tables of 6 conditions × 7 fields with 4 folds and 5 inner folds). Here every
condition with at least :func:`min_fields` fields is present in every split of every fold; one with
fewer is a ValueError naming it and its number of fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

logger = logging.getLogger("image2reg")

TRAIN, VAL, TEST, HELD_OUT = "train", "val", "test", "held_out"

#: The nucleus-table columns the splits read: condition, field of view and field QC.
CONDITION, FIELD, QC_PASS = "Metadata_Gene", "image_path", "QC_pass"


def screen_splits(
    nuclei: pd.DataFrame,
    gene: str,
    *,
    control: str = "EMPTY",
    n_folds: int = 4,
    n_inner: int = 5,
    seed: int,
) -> pd.DataFrame:
    """Folds of the binary specificity screen: one gene against the control (method §4.3).

    The control's nuclei are randomly undersampled to the gene's count, then ``n_folds``
    stratified group folds give the test parts, and in each fold the first of ``n_inner``
    stratified group folds of the rest gives the validation part (1/5 = 20 %, as the reference's
    ``test_size=0.2``).

    Two deliberate changes from the reference: (1) its test folds came from an unstratified
    ``GroupKFold`` and its validation part from ``GroupShuffleSplit(test_size=0.2)``, which for a
    gene with few fields can leave a split without the gene and make its balanced accuracy
    meaningless; both are stratified here, and the seed changes the folds (``GroupKFold`` has no
    seed). (2) It undersampled whichever class was larger
    (``RandomUnderSampler(sampling_strategy="majority")``); here only the control is undersampled,
    so the perturbation's nuclei are never discarded; the loss's class weights handle a gene with
    more nuclei than the control.

    Parameters
    ----------
    nuclei
        The nucleus table of stage 01 (``Metadata_Gene``, ``image_path``, ``QC_pass``), with a
        unique index.
    gene
        The perturbation screened.
    control
        The negative-control condition.
    n_folds
        Number of folds (test parts).
    n_inner
        Number of inner folds of each fold's remainder; one of them is the validation part.
    seed
        Seed of the undersampling and of the fold assignment.

    Returns
    -------
    pandas.DataFrame
        ``fold``, ``split`` and ``label`` (1 for the gene, 0 for the control) per (fold, nucleus),
        indexed by the row labels of ``nuclei``.
    """
    _check_fold_numbers(n_folds, n_inner)
    if gene == control:
        raise ValueError(f"the screened gene must differ from the control {control!r}")
    table = _usable_nuclei(nuclei, [gene, control])
    gene_count = int((table[CONDITION] == gene).sum())
    table = _undersample_control(table, control, gene_count, np.random.default_rng(seed))
    splits = _assign_splits(table, n_folds, n_inner, seed)
    splits["label"] = (splits.index.map(table[CONDITION]) == gene).astype(np.int64)
    return splits


def multiclass_splits(
    nuclei: pd.DataFrame,
    genes: Sequence[str],
    *,
    control: str = "EMPTY",
    n_folds: int = 4,
    n_inner: int = 5,
    seed: int,
    undersample_control: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Folds of the multi-class model over the given genes and the control (method §4.4).

    The control's nuclei are randomly undersampled to the count of the largest gene (the
    reference: EMPTY down to the PRKCE count); the genes are not subsampled. ``n_folds``
    stratified group folds give the test parts, and in each fold the first of ``n_inner``
    stratified group folds of the rest gives the validation part.

    Labels come from one encoding for all folds and splits: the sorted class names, control
    included, as scikit-learn's ``LabelEncoder``. The reference fitted an encoder per split, which
    misaligns the codes as soon as a split lacks a class (method §11, quirks 4 and 5).

    Parameters
    ----------
    nuclei
        The nucleus table of stage 01 (``Metadata_Gene``, ``image_path``, ``QC_pass``), with a
        unique index.
    genes
        The perturbations to classify (without the control).
    control
        The negative-control condition, a class of its own.
    n_folds
        Number of folds (test parts).
    n_inner
        Number of inner folds of each fold's remainder; one of them is the validation part.
    seed
        Seed of the undersampling and of the fold assignment.
    undersample_control
        Whether to undersample the control to the largest gene's count.

    Returns
    -------
    splits : pandas.DataFrame
        ``fold``, ``split`` and ``label`` per (fold, nucleus), indexed by the row labels of
        ``nuclei``.
    classes : list of str
        The class names; ``label`` indexes this list.
    """
    _check_fold_numbers(n_folds, n_inner)
    genes = _gene_list(genes, control)
    classes = sorted([*genes, control])
    table = _usable_nuclei(nuclei, classes)
    if undersample_control:
        largest = int(table.loc[table[CONDITION] != control, CONDITION].value_counts().max())
        table = _undersample_control(table, control, largest, np.random.default_rng(seed))
    splits = _assign_splits(table, n_folds, n_inner, seed)
    splits["label"] = pd.Index(classes).get_indexer(splits.index.map(table[CONDITION]))
    return splits, classes


def loto_splits(
    nuclei: pd.DataFrame,
    genes: Sequence[str],
    held_out: str,
    *,
    control: str = "EMPTY",
    n_folds: int = 5,
    n_inner: int = 4,
    seed: int,
    undersample_control: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """One train/val/test split without one condition, whose nuclei are kept apart (method §4.5).

    All nuclei of ``held_out`` get ``split == "held_out"`` and ``label == -1`` (not a class of the
    model): they are embedded by the model trained without them, never trained or validated on.
    The other classes (the remaining genes and the control) are split once: the control is
    undersampled to the largest remaining gene's count, the first of ``n_folds`` stratified group
    folds is the test part and the first of ``n_inner`` stratified group folds of the rest is the
    validation part (reference: 5 and 4, i.e. 60/20/20 %). ``held_out`` may be the control, as
    the reference ran LOTO for every label; then no class is undersampled.

    Parameters
    ----------
    nuclei
        The nucleus table of stage 01 (``Metadata_Gene``, ``image_path``, ``QC_pass``), with a
        unique index.
    genes
        All perturbations of the multi-class model, ``held_out`` among them unless it is the
        control.
    held_out
        The condition left out.
    control
        The negative-control condition, a class of its own.
    n_folds
        Number of stratified group folds the test part is the first of.
    n_inner
        Number of inner folds of the rest; the first is the validation part.
    seed
        Seed of the undersampling and of the split.
    undersample_control
        Whether to undersample the control to the largest remaining gene's count.

    Returns
    -------
    splits : pandas.DataFrame
        ``fold`` (always 0), ``split`` and ``label`` per nucleus, indexed by the row labels of
        ``nuclei``; the held-out nuclei come last.
    classes : list of str
        The class names of the model (sorted, without ``held_out``); ``label`` indexes this list.
    """
    _check_fold_numbers(n_folds, n_inner)
    genes = _gene_list(genes, control)
    if held_out not in genes and held_out != control:
        raise ValueError(f"the held-out condition {held_out!r} is neither one of the genes nor the control")
    classes = sorted(name for name in [*genes, control] if name != held_out)
    if len(classes) < 2:
        raise ValueError(f"leaving out {held_out!r} leaves fewer than two classes to train on")
    table = _usable_nuclei(nuclei, [*classes, held_out])
    is_held_out = table[CONDITION] == held_out
    rest = table[~is_held_out]
    if undersample_control and control in classes:
        largest = int(rest.loc[rest[CONDITION] != control, CONDITION].value_counts().max())
        rest = _undersample_control(rest, control, largest, np.random.default_rng(seed))
    splits = _assign_splits(rest, n_folds, n_inner, seed, n_used=1)
    splits["label"] = pd.Index(classes).get_indexer(splits.index.map(rest[CONDITION]))
    target = pd.DataFrame({"fold": 0, "split": HELD_OUT, "label": -1}, index=table.index[is_held_out])
    logger.info("LOTO without %s: %d held-out nuclei", held_out, len(target))
    return pd.concat([splits, target]), classes


def min_fields(n_folds: int, n_inner: int) -> int:
    """The fewest fields of view per condition that give it nuclei in every split of every fold.

    A condition's fields are spread over the ``n_folds`` test parts evenly (±1 field), so each
    fold's remainder holds at least ``n - ceil(n / n_folds)`` of its ``n`` fields; that must be
    ``n_inner`` or more for the validation part to get one. For the reference's 4 folds with 5
    inner folds this is 7; for LOTO's 5 with 4, it is 5. The split functions refuse conditions
    with fewer fields, so a stage drops (and reports) them beforehand.

    Parameters
    ----------
    n_folds
        Number of folds (test parts).
    n_inner
        Number of inner folds of each fold's remainder.

    Returns
    -------
    int
        The minimum number of fields of view per condition.
    """
    _check_fold_numbers(n_folds, n_inner)
    return max(n_folds, -(-n_inner * n_folds // (n_folds - 1)))


def _check_fold_numbers(n_folds: int, n_inner: int) -> None:
    if n_folds < 2 or n_inner < 2:
        raise ValueError(f"n_folds and n_inner must be at least 2, got {n_folds} and {n_inner}")


def _gene_list(genes: Iterable[str], control: str) -> list[str]:
    """The genes as a list without repeats, checked against the control."""
    if isinstance(genes, str):
        raise ValueError(f"genes must be a list of gene names, not the string {genes!r}")
    genes = list(dict.fromkeys(genes))
    if not genes:
        raise ValueError("no genes given")
    if control in genes:
        raise ValueError(f"the control {control!r} is a class of its own; do not list it among the genes")
    return genes


def _usable_nuclei(nuclei: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """The QC-passing nuclei of the conditions (condition and field columns only), in table order."""
    missing = sorted({CONDITION, FIELD, QC_PASS} - set(nuclei.columns))
    if missing:
        raise ValueError(f"the nucleus table lacks the columns {missing}")
    if not nuclei.index.is_unique:
        raise ValueError("the nucleus table's index must be unique: the splits refer to its rows by label")
    unknown = sorted(set(conditions) - set(nuclei[CONDITION]))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}: not in the nucleus table's {CONDITION} column")
    table = nuclei.loc[nuclei[QC_PASS].astype(bool) & nuclei[CONDITION].isin(conditions), [CONDITION, FIELD]]
    failed = sorted(set(conditions) - set(table[CONDITION]))
    if failed:
        raise ValueError(f"conditions {failed} have no nuclei in fields that pass QC")
    return table


def _undersample_control(table: pd.DataFrame, control: str, size: int, rng: np.random.Generator) -> pd.DataFrame:
    """Keep ``size`` random control nuclei (all if fewer) and every other nucleus, in table order."""
    is_control = (table[CONDITION] == control).to_numpy()
    n_control = int(is_control.sum())
    if n_control <= size:
        return table
    keep = ~is_control
    keep[rng.choice(np.flatnonzero(is_control), size=size, replace=False)] = True
    logger.info("control %s undersampled from %d to %d nuclei", control, n_control, size)
    return table[keep]


def _assign_splits(
    table: pd.DataFrame, n_folds: int, n_inner: int, seed: int, n_used: int | None = None
) -> pd.DataFrame:
    """``fold`` and ``split`` of every nucleus of ``table`` for the first ``n_used`` folds (all by default)."""
    fields = table.groupby(FIELD, sort=True)[CONDITION].agg(["first", "nunique"])
    mixed = fields.index[fields["nunique"] > 1]
    if len(mixed):
        raise ValueError(f"{len(mixed)} fields of view hold nuclei of several conditions, e.g. {mixed[0]!r}")
    field_class = fields["first"].to_numpy()
    n_fields = fields["first"].value_counts().sort_index()
    needed = min_fields(n_folds, n_inner)
    too_few = n_fields[n_fields < needed]
    if len(too_few):
        listed = ", ".join(f"{name} has {count}" for name, count in too_few.items())
        raise ValueError(f"too few fields of view that pass QC for {n_folds} folds with {n_inner} inner folds "
                         f"(at least {needed} per condition): {listed}")
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    inner = StratifiedKFold(n_splits=n_inner, shuffle=True, random_state=seed)
    field_of_nucleus = fields.index.get_indexer(table[FIELD])
    folds = []
    for fold, (rest, test) in enumerate(outer.split(field_class, field_class)):
        if fold == n_used:
            break
        _, val = next(inner.split(rest, field_class[rest]))
        field_split = np.full(len(fields), TRAIN, dtype=object)
        field_split[test] = TEST
        field_split[rest[val]] = VAL
        split = field_split[field_of_nucleus]
        folds.append(pd.DataFrame({"fold": fold, "split": split}, index=table.index))
        logger.info("fold %d: %s nuclei", fold, {name: int((split == name).sum()) for name in (TRAIN, VAL, TEST)})
    return pd.concat(folds)
