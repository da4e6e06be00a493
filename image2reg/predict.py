"""Which gene was perturbed? Rank the interactome's genes for the images of an unseen condition.

``python -m image2reg predict --dataset demo --images <folder of fields>`` runs the trained pipeline of
a dataset on new fields of view (TIFF):

1. stage 01's preprocessing with the dataset's params (QC, illumination estimated from the given
   fields, segmentation, filters, crops) into a work folder;
2. the trained CNN embeds every QC-passing nucleus; their mean is the condition's perturbation
   embedding;
3. the translation (stage 07's params) is fitted on the impactful genes' image embeddings from the
   same CNN and their regulatory embeddings, and predicts the condition's regulatory embedding;
4. every interactome gene is ranked by the distance of its (unit) regulatory embedding to the prediction.

Two sources of models: ``folds`` (default) averages the predictions of stage 03's k fold models,
each paired with the regulatory embeddings of the model on all genes; ``loto:<GENE>`` uses the CNN
and graph autoencoder that never saw ``GENE`` (stages 04, 06), so that images of ``GENE`` itself can
check the pipeline end to end.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.cnn.embed import gene_embeddings
from image2reg.cnn.tasks import embed_nuclei, encoder_spec
from image2reg.config import RunParams, load_params, params_path_for
from image2reg.images.io import ImageReadError, read_field
from image2reg.images.pipeline import illumination_path, preprocess_images
from image2reg.layout import RunLayout, TaskFiles, artifact_name, atomic_path, find_project_root
from image2reg.notebook import impactful_genes
from image2reg.stages import stage_by_name
from image2reg.translation.features import InputSettings, unit_rows
from image2reg.translation.inputs import model_block
from image2reg.translation.loto import model_fit_predict

QUERY_PLATE = "query"
IMAGE_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class TrainedEncoder:
    """One trained CNN: its weights, its classes, and the training pairs of the translation in its space."""

    name: str
    weights: Path
    classes: list[str]
    image_embeddings: pd.DataFrame   # training genes × latent (the impactful genes it embedded)
    regulatory: pd.DataFrame         # interactome genes × latent, unit rows


class StageNotRunError(FileNotFoundError):
    """The trained stages predict needs are not there; the message names the stage to run."""


def query_fields(images: str | Path) -> pd.DataFrame:
    """A stage-01 field table for every TIFF in ``images`` (one plate, one well, a site per file).

    Every file is read first: an unreadable one, an RGB image or a stack is an error naming the file
    (:class:`~image2reg.images.io.ImageReadError`), before any work starts.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of fields of view")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no .tif/.tiff fields of view found")
    for path in paths:
        read_field(path)  # refuses an unreadable, colour or multi-plane file, naming it
    return pd.DataFrame({"Metadata_Plate": QUERY_PLATE, "Metadata_Well": "q01",
                         "Metadata_Site": np.arange(1, len(paths) + 1), "Metadata_Gene": "query",
                         "image_path": [str(p.resolve()) for p in paths]})


def encoders(layout: RunLayout, params: RunParams, model: str) -> list[TrainedEncoder]:
    """The trained CNNs of ``model`` (``folds`` or ``loto:<GENE>``) with their translation training pairs."""
    control = params.stage("screen").control
    targets = _needs(layout, "screen", lambda: impactful_genes(layout))
    if model == "folds":
        all_genes = _needs(layout, "regulatory", lambda: ad.read_h5ad(layout.artifact("regulatory",
                                                                                        "regulatory_embeddings")))
        regulatory = pd.DataFrame(unit_rows(np.asarray(all_genes.X)), index=all_genes.obs_names.astype(str))
        found = []
        models = layout.artifact("embeddings", "models")
        for folder in sorted(models.glob("fold-*")):
            embedded = ad.read_h5ad(folder / TaskFiles.EMBEDDINGS)
            means = gene_embeddings(embedded)
            table = pd.DataFrame(np.asarray(means.X), index=means.obs_names.astype(str))
            weights = folder / TaskFiles.TRAINING / TaskFiles.BEST_MODEL
            found.append(TrainedEncoder(folder.name, weights, list(embedded.uns["classes"]),
                                        table.drop(index=[control], errors="ignore"), regulatory))
        if not found:
            raise StageNotRunError(f"no trained fold models under {models}: run "
                                   f"stage 03 first (python runbook.py --dataset {layout.dataset} --stages 03)")
        return found
    if not model.startswith("loto:"):
        raise ValueError(f"unknown model {model!r}: use 'folds' or 'loto:<GENE>'")
    gene = model.split(":", 1)[1]
    folder = layout.artifact("loto", "models") / gene
    if gene not in targets:
        raise ValueError(f"no LOTO model for {gene!r}: it is not an impactful gene ({', '.join(targets)})")
    if not folder.is_dir():
        raise StageNotRunError(f"{folder}: no LOTO model for {gene!r}: run stage 04 first "
                               f"(python runbook.py --dataset {layout.dataset} --stages 04)")
    embedded = ad.read_h5ad(folder / TaskFiles.EMBEDDINGS)
    image = model_block(ad.read_h5ad(layout.artifact("loto", "gene_embeddings_loto")), gene)
    image = image.drop(index=[control, gene], errors="ignore")
    regulatory = model_block(_needs(layout, "regulatory", lambda: ad.read_h5ad(
        layout.artifact("regulatory", "regulatory_embeddings_loto"))), gene)
    regulatory = pd.DataFrame(unit_rows(regulatory.to_numpy()), index=regulatory.index)
    weights = folder / TaskFiles.TRAINING / TaskFiles.BEST_MODEL
    return [TrainedEncoder(f"loto:{gene}", weights, list(embedded.uns["classes"]),
                           image, regulatory)]


def _needs(layout: RunLayout, stage: str, read):
    """``read()``, or a :class:`StageNotRunError` naming the stage whose output is missing."""
    try:
        return read()
    except FileNotFoundError as error:
        found = stage_by_name(stage)
        raise StageNotRunError(f"{error}; run stage {found.id} first (python runbook.py --dataset {layout.dataset} "
                               f"--stages {found.number})") from None


def embed_query(work: Path, encoder: TrainedEncoder, stage, illumination: str | None) -> np.ndarray:
    """The mean latent of the query's QC-passing nuclei under one trained CNN."""
    nuclei = pd.read_parquet(work / artifact_name("images", "nuclei"))
    nuclei = nuclei[nuclei["QC_pass"]] if "QC_pass" in nuclei else nuclei
    if nuclei.empty:
        raise ValueError(f"no nucleus passed QC and the filters in the query fields (see {work})")
    spec = encoder_spec(stage.model, stage.latent_dim, {QUERY_PLATE: illumination})
    latents = embed_nuclei(nuclei, images_dir=work, weights=encoder.weights, n_classes=len(encoder.classes),
                           encoder=spec, batch_size=stage.training.batch_size, device=stage.training.device)
    return latents.mean(axis=0)


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict_condition` did and found.

    Attributes
    ----------
    ranking
        Every interactome gene: ``rank`` (1 = best), ``gene``, ``distance`` (of its unit regulatory
        embedding to the prediction) and ``top_percent`` (the share of genes ranked at or above it).
    fields, failed_fields
        Fields of view read, and the ones that could not be processed (file: reason).
    nuclei_segmented, nuclei_kept, nuclei_used
        Nuclei the segmentation found, those the filters kept, and those of QC-passing fields embedded.
    models
        The trained CNNs used (``fold-k`` of stage 03, or ``loto:<GENE>`` of stage 04).
    translation
        The translation model and its training genes.
    work_dir
        Where the query's preprocessing lies.
    """

    ranking: pd.DataFrame
    fields: int
    failed_fields: dict[str, str]
    nuclei_segmented: int
    nuclei_kept: int
    nuclei_used: int
    models: list[str]
    translation: str
    work_dir: Path

    def random_gene(self, top: int) -> dict[str, float]:
        """What a random gene would score: its expected rank, its chance of the top ``top``, the median distance."""
        n = len(self.ranking)
        return {"expected_rank": (n + 1) / 2, "p_top": min(top, n) / n,
                "median_distance": float(self.ranking["distance"].median())}

    def to_dict(self, top: int) -> dict:
        """The prediction for ``--json``: the top genes and everything :meth:`summary` says."""
        return {"fields": self.fields, "failed_fields": self.failed_fields,
                "nuclei_segmented": self.nuclei_segmented, "nuclei_kept": self.nuclei_kept,
                "nuclei_used": self.nuclei_used, "models": self.models, "translation": self.translation,
                "n_candidates": len(self.ranking), "random_gene": self.random_gene(top),
                "top": self.ranking.head(top).to_dict(orient="records"), "work_dir": str(self.work_dir)}

    def summary(self, top: int) -> str:
        """A report for people: what was read and used, the top genes, and what chance would give."""
        n = len(self.ranking)
        chance = self.random_gene(top)
        failed = (f"; {len(self.failed_fields)} could not be processed: "
                  + ", ".join(f"{Path(f).name} ({why})" for f, why in list(self.failed_fields.items())[:3])
                  if self.failed_fields else "")
        shown = self.ranking.head(top).assign(distance=lambda t: t["distance"].round(4),
                                              top_percent=lambda t: t["top_percent"].round(1))
        return "\n".join([
            f"query: {self.fields} fields of view{failed}",
            f"nuclei: {self.nuclei_segmented} segmented, {self.nuclei_kept} kept by the filters, "
            f"{self.nuclei_used} of QC-passing fields embedded",
            f"models: {', '.join(self.models)}; translation: {self.translation}",
            f"the {min(top, n)} best of {n} interactome genes (distance of the gene's regulatory embedding to the "
            f"prediction; top_percent: share of genes ranked at or above it):",
            shown.to_string(index=False),
            f"a random gene: rank {chance['expected_rank']:g} of {n} on average, in the top {min(top, n)} with "
            f"probability {chance['p_top']:.1%}, distance median {chance['median_distance']:.4f}",
        ])


def predict_condition(images: str | Path, *, dataset: str = "demo", params_path: str | Path | None = None,
                      runs_dir: str | Path | None = None, model: str = "folds", work_dir: str | Path | None = None
                      ) -> Prediction:
    """Rank every interactome gene for the query images, and say what was used (:class:`Prediction`).

    Parameters
    ----------
    images
        Folder of the query's fields of view (single-channel TIFF).
    dataset, params_path, runs_dir
        The dataset whose trained stages are used (stages 01–07 must have run).
    model
        ``folds`` or ``loto:<GENE>`` (see the module docstring).
    work_dir
        Where the query's preprocessing goes (default ``runs/<dataset>/predictions/<folder name>``);
        finished work there is reused.

    Raises
    ------
    FileNotFoundError
        No folder or no TIFF in it.
    ImageReadError
        A field that cannot be read, or is not single-channel (named).
    StageNotRunError
        A stage whose output is needed has not run (named, with the command to run it).
    ValueError
        Every field failed, or no nucleus passed QC and the filters.
    """
    root = None if params_path and runs_dir else find_project_root()
    params = load_params(params_path or params_path_for(dataset, root))
    layout = RunLayout(dataset=params.dataset, runs_dir=Path(runs_dir) if runs_dir else root / "runs",
                       reports_dir=(Path(runs_dir).parent if runs_dir else root) / "reports")
    images = Path(images)
    work = Path(work_dir) if work_dir else layout.root / "predictions" / images.resolve().name
    fields = query_fields(images)
    trained = encoders(layout, params, model)  # before the preprocessing: a stage not run is said at once
    preprocess_images(fields, work, params.stage("images"), progress_bar=False)
    processed = pd.read_parquet(work / artifact_name("images", "images"))
    failed = dict(zip(processed.loc[processed["error"] != "", "image_path"],
                      processed.loc[processed["error"] != "", "error"]))
    if len(failed) == len(processed):
        raise ValueError(f"none of the {len(processed)} query fields could be processed: "
                         + "; ".join(f"{Path(f).name}: {why}" for f, why in list(failed.items())[:3]))
    illumination = illumination_path(work, QUERY_PLATE)
    illumination_file = str(illumination) if illumination.is_file() else None
    stage = params.stage("loto" if model.startswith("loto:") else "embeddings")
    translation = params.stage("translation")
    settings = InputSettings(**translation.inputs.model_dump())
    predictions, regulatory, n_train = [], None, 0
    for encoder in trained:
        query = embed_query(work, encoder, stage, illumination_file)
        train = sorted(set(encoder.image_embeddings.index) & set(encoder.regulatory.index))
        if len(train) < 2:
            raise ValueError(f"{encoder.name}: fewer than two impactful genes with both embeddings")
        fit_predict = model_fit_predict(translation.model, translation.reg, settings, seed=params.seed)
        predictions.append(fit_predict(encoder.image_embeddings.loc[train].to_numpy(),
                                       encoder.regulatory.loc[train].to_numpy(), query[None, :])[0])
        regulatory, n_train = encoder.regulatory, len(train)
    prediction = np.mean(predictions, axis=0)
    distance = np.linalg.norm(regulatory.to_numpy() - prediction, axis=1)
    order = np.argsort(distance, kind="stable")
    ranks = np.arange(1, len(order) + 1)
    ranking = pd.DataFrame({"rank": ranks, "gene": regulatory.index[order], "distance": distance[order],
                            "top_percent": 100.0 * ranks / len(order)})
    nuclei = pd.read_parquet(work / artifact_name("images", "nuclei"))
    used = int(nuclei["QC_pass"].sum()) if "QC_pass" in nuclei else len(nuclei)
    return Prediction(ranking=ranking, fields=len(processed), failed_fields=failed,
                      nuclei_segmented=int(processed["n_segmented"].fillna(0).sum()), nuclei_kept=len(nuclei),
                      nuclei_used=used, models=[encoder.name for encoder in trained],
                      translation=f"{translation.model} (reg {translation.reg:g}) fitted on {n_train} impactful genes",
                      work_dir=work)


def rank_genes(images: str | Path, **options) -> pd.DataFrame:
    """Every interactome gene ranked for the query images (:attr:`Prediction.ranking` of
    :func:`predict_condition`, which takes the same options)."""
    return predict_condition(images, **options).ranking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image2reg predict",
                                     description="Rank the interactome's genes for the images of an unseen condition.")
    parser.add_argument("--images", required=True, help="folder of the condition's fields of view (TIFF)")
    parser.add_argument("--dataset", default="demo", help="dataset whose trained stages are used (default: demo)")
    parser.add_argument("--params", help="params file (default: params/<dataset>.yml)")
    parser.add_argument("--runs-dir", help="runs folder (default: the project's runs/)")
    parser.add_argument("--model", default="folds", help="'folds' (stage 03's fold models) or 'loto:<GENE>'")
    parser.add_argument("--top", type=int, default=10, help="genes printed (default 10)")
    parser.add_argument("--out", help="write the full ranking here (.csv or .parquet)")
    parser.add_argument("--work-dir", help="folder for the query's preprocessing")
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON (for scripts)")
    args = parser.parse_args(argv)
    try:
        prediction = predict_condition(args.images, dataset=args.dataset, params_path=args.params,
                                       runs_dir=args.runs_dir, model=args.model, work_dir=args.work_dir)
    except (FileNotFoundError, ValueError, KeyError, ImageReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(prediction.to_dict(args.top), indent=2) if args.json else prediction.summary(args.top))
    if args.out:
        out = Path(args.out)
        with atomic_path(out) as tmp:
            ranking = prediction.ranking
            ranking.to_parquet(tmp) if out.suffix == ".parquet" else ranking.to_csv(tmp, index=False)
    return 0
