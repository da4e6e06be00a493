"""The stages of the method, in run order: one notebook each (``notebooks/<NN>_<name>.py``).

A stage that runs ``per_fold`` is executed once per fold with ``fold`` injected. ``inputs`` names
the stages whose artifacts it reads: when one of them is redone, this one is redone too.
A ``derived`` stage writes only regenerable artifacts under ``runs/<dataset>/<NN>_<name>/``, so the
runbook may clear them before a rerun with changed inputs; the data stage is not derived because
its folder holds the raw data of real datasets, which is never deleted. ``reference_inputs`` are
inputs read from another dataset's runs when the stage's params name one (``reference: rohban``).
An ``optional`` stage may be left out of a params file: the stages that read it then run without it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    number: str
    name: str
    title: str
    per_fold: bool = False
    inputs: tuple[str, ...] = ()
    derived: bool = True
    reference_inputs: tuple[str, ...] = ()
    optional: bool = False  #: its readers run without it when the params leave it out

    @property
    def id(self) -> str:
        """``NN_name``: the notebook's file stem and the artifact folder's name."""
        return f"{self.number}_{self.name}"


STAGES: tuple[Stage, ...] = (
    Stage("00", "data", "Data: synthesize the demo world or check the raw inputs", derived=False),
    Stage("01", "images", "Image preprocessing: illumination, QC, segmentation, nucleus filters, crops",
          inputs=("data",)),
    Stage("01b", "pretrain", "Self-supervised pretraining of the nucleus encoder on every nucleus (optional)",
          inputs=("images",), optional=True),
    Stage("02", "screen", "Specificity screen: one binary CNN per gene and fold against the control",
          inputs=("images", "pretrain")),
    Stage("03", "embeddings", "Multi-class CNN on the impactful genes: k-fold nucleus and gene embeddings",
          inputs=("images", "pretrain", "screen")),
    Stage("04", "loto", "Leave-one-target-out CNNs: gene perturbation embeddings of unseen targets",
          inputs=("images", "pretrain", "screen")),
    Stage("05", "interactome", "Gene–gene interactome: PPI and expression → prize-collecting Steiner tree",
          inputs=("data", "screen")),
    Stage("06", "regulatory", "Regulatory gene embeddings: graph autoencoder on the interactome",
          inputs=("interactome", "embeddings", "loto")),
    Stage("07", "translation", "Translation: image → regulatory embeddings, LOTO top-k and the grid search",
          inputs=("images", "screen", "loto", "regulatory")),
    Stage("08", "validation", "Validation on a second screen: translation from the impactful genes to new genes",
          inputs=("data", "images", "pretrain", "screen", "interactome", "regulatory"),
          reference_inputs=("screen", "interactome", "regulatory")),
)


def task_label(stage: Stage, fold: int | None) -> str:
    """How reports and logs name one notebook execution: ``02_screen``, ``03_embeddings (fold 1)``."""
    return stage.id if fold is None else f"{stage.id} (fold {fold})"


def stage_by_name(name: str) -> Stage | None:
    """The stage called ``name`` (``data``), by number (``00``) or by id (``00_data``)."""
    for stage in STAGES:
        if name in (stage.name, stage.number, stage.id):
            return stage
    return None
