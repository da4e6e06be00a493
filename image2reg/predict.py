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
import sys
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.cnn.embed import gene_embeddings
from image2reg.cnn.tasks import TRAINING_DIR, embed_nuclei, encoder_spec
from image2reg.cnn.train import BEST_MODEL
from image2reg.config import RunParams, load_params, params_path_for
from image2reg.images.pipeline import illumination_path, preprocess_images
from image2reg.layout import RunLayout, atomic_path, find_project_root
from image2reg.notebook import impactful_genes
from image2reg.translation.evaluate import model_fit_predict
from image2reg.translation.features import InputSettings, unit_rows
from image2reg.translation.inputs import model_block

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


def query_fields(images: str | Path) -> pd.DataFrame:
    """A stage-01 field table for every TIFF in ``images`` (one plate, one well, a site per file)."""
    folder = Path(images)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"{folder}: no .tif/.tiff fields of view found")
    return pd.DataFrame({"Metadata_Plate": QUERY_PLATE, "Metadata_Well": "q01",
                         "Metadata_Site": np.arange(1, len(paths) + 1), "Metadata_Gene": "query",
                         "image_path": [str(p.resolve()) for p in paths]})


def encoders(layout: RunLayout, params: RunParams, model: str) -> list[TrainedEncoder]:
    """The trained CNNs of ``model`` (``folds`` or ``loto:<GENE>``) with their translation training pairs."""
    control = params.stage("screen").control
    targets = impactful_genes(layout)
    regulatory_dir = layout.stage_dir_of("regulatory")
    if model == "folds":
        all_genes = ad.read_h5ad(regulatory_dir / "regulatory_embeddings.h5ad")
        regulatory = pd.DataFrame(unit_rows(np.asarray(all_genes.X)), index=all_genes.obs_names.astype(str))
        found = []
        for folder in sorted((layout.stage_dir_of("embeddings") / "models").glob("fold-*")):
            embedded = ad.read_h5ad(folder / "embeddings.h5ad")
            means = gene_embeddings(embedded)
            table = pd.DataFrame(np.asarray(means.X), index=means.obs_names.astype(str))
            found.append(TrainedEncoder(folder.name, folder / TRAINING_DIR / BEST_MODEL, list(embedded.uns["classes"]),
                                        table.drop(index=[control], errors="ignore"), regulatory))
        if not found:
            raise FileNotFoundError(f"no trained fold models under {layout.stage_dir_of('embeddings') / 'models'}")
        return found
    if not model.startswith("loto:"):
        raise ValueError(f"unknown model {model!r}: use 'folds' or 'loto:<GENE>'")
    gene = model.split(":", 1)[1]
    folder = layout.stage_dir_of("loto") / "models" / gene
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no LOTO model for {gene!r} (impactful genes: {', '.join(targets)})")
    embedded = ad.read_h5ad(folder / "embeddings.h5ad")
    image = model_block(ad.read_h5ad(layout.stage_dir_of("loto") / "gene_embeddings_loto.h5ad"), gene)
    image = image.drop(index=[control, gene], errors="ignore")
    regulatory = model_block(ad.read_h5ad(regulatory_dir / "regulatory_embeddings_loto.h5ad"), gene)
    regulatory = pd.DataFrame(unit_rows(regulatory.to_numpy()), index=regulatory.index)
    return [TrainedEncoder(f"loto:{gene}", folder / TRAINING_DIR / BEST_MODEL, list(embedded.uns["classes"]),
                           image, regulatory)]


def embed_query(work: Path, encoder: TrainedEncoder, stage, illumination: str | None) -> np.ndarray:
    """The mean latent of the query's QC-passing nuclei under one trained CNN."""
    nuclei = pd.read_parquet(work / "nuclei.parquet")
    nuclei = nuclei[nuclei["QC_pass"]] if "QC_pass" in nuclei else nuclei
    if nuclei.empty:
        raise ValueError(f"no nucleus passed QC and the filters in the query fields (see {work})")
    spec = encoder_spec(stage.model, stage.latent_dim, {QUERY_PLATE: illumination})
    latents = embed_nuclei(nuclei, images_dir=work, weights=encoder.weights, n_classes=len(encoder.classes),
                           encoder=spec, batch_size=stage.training.batch_size, device=stage.training.device)
    return latents.mean(axis=0)


def rank_genes(images: str | Path, *, dataset: str = "demo", params_path: str | Path | None = None,
               runs_dir: str | Path | None = None, model: str = "folds", work_dir: str | Path | None = None
               ) -> pd.DataFrame:
    """Every interactome gene ranked for the query images; columns ``rank`` (1 = best), ``gene``, ``distance``.

    Parameters
    ----------
    images
        Folder of the query's fields of view (TIFF).
    dataset, params_path, runs_dir
        The dataset whose trained stages are used (stages 01–07 must have run).
    model
        ``folds`` or ``loto:<GENE>`` (see the module docstring).
    work_dir
        Where the query's preprocessing goes (default ``runs/<dataset>/predictions/<folder name>``);
        finished work there is reused.
    """
    root = None if params_path and runs_dir else find_project_root()
    params = load_params(params_path or params_path_for(dataset, root))
    layout = RunLayout(dataset=params.dataset, runs_dir=Path(runs_dir) if runs_dir else root / "runs",
                       reports_dir=(Path(runs_dir).parent if runs_dir else root) / "reports")
    images = Path(images)
    work = Path(work_dir) if work_dir else layout.root / "predictions" / images.resolve().name
    fields = query_fields(images)
    preprocess_images(fields, work, params.stage("images"), progress_bar=False)
    illumination = illumination_path(work, QUERY_PLATE)
    illumination_file = str(illumination) if illumination.is_file() else None
    stage = params.stage("loto" if model.startswith("loto:") else "embeddings")
    translation = params.stage("translation")
    settings = InputSettings(**translation.inputs.model_dump())
    predictions, regulatory = [], None
    for encoder in encoders(layout, params, model):
        query = embed_query(work, encoder, stage, illumination_file)
        train = sorted(set(encoder.image_embeddings.index) & set(encoder.regulatory.index))
        if len(train) < 2:
            raise ValueError(f"{encoder.name}: fewer than two impactful genes with both embeddings")
        fit_predict = model_fit_predict(translation.model, translation.reg, settings, seed=params.seed)
        predictions.append(fit_predict(encoder.image_embeddings.loc[train].to_numpy(),
                                       encoder.regulatory.loc[train].to_numpy(), query[None, :])[0])
        regulatory = encoder.regulatory
    prediction = np.mean(predictions, axis=0)
    distance = np.linalg.norm(regulatory.to_numpy() - prediction, axis=1)
    order = np.argsort(distance, kind="stable")
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "gene": regulatory.index[order],
                         "distance": distance[order]})


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
    args = parser.parse_args(argv)
    try:
        ranking = rank_genes(args.images, dataset=args.dataset, params_path=args.params, runs_dir=args.runs_dir,
                             model=args.model, work_dir=args.work_dir)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(ranking.head(args.top).to_string(index=False))
    if args.out:
        out = Path(args.out)
        with atomic_path(out) as tmp:
            ranking.to_parquet(tmp) if out.suffix == ".parquet" else ranking.to_csv(tmp, index=False)
    return 0
