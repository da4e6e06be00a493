"""Which gene was perturbed? Rank the interactome's genes for the images of an unseen condition.

``python -m image2reg predict --dataset demo --images <folder of fields>`` runs the trained pipeline of
a dataset on new fields of view (TIFF):

1. stage 01's preprocessing with the dataset's params (QC, illumination estimated from the given
   fields, segmentation, filters, crops) into a work folder (see below);
2. the trained CNN embeds every QC-passing nucleus; their mean is the condition's perturbation
   embedding;
3. the translation (stage 07's params) is fitted on the impactful genes' image embeddings from the
   same CNN and their regulatory embeddings, and predicts the condition's regulatory embedding;
4. every interactome gene is ranked by the distance of its (unit) regulatory embedding to the prediction.

Two sources of models: ``folds`` (default) averages the predictions of stage 03's k fold models,
each paired with the regulatory embeddings of the model on all genes; ``loto:<GENE>`` uses the CNN
and graph autoencoder that never saw ``GENE`` (stages 04, 06), so that images of ``GENE`` itself can
check the pipeline end to end.

The work folder (default ``runs/<dataset>/predictions/<folder name>``) never answers from stale work:
the preprocessing is cached under ``<work>/<key[:16]>/``, where the key hashes the query files' names,
sizes and bytes, the query folder's path, the preprocessing params and the trained models' weights
(:func:`query_key`). A changed image (even at the same size), other params or retrained models give
another key, hence fresh preprocessing; the cache of the previous key is removed once the new one is
complete. The preprocessing is written into ``<work>/.<key>.partial/`` and renamed into place
when complete (its ``done.json``, the key's record, written last), so a killed predict leaves no
half-done cache (a rerun with the same files resumes its finished shards). One predict at a time
writes a work folder: a second one is refused at once, naming the holder (:class:`image2reg.lock.FolderLock`).

Query files that cannot be read (truncated, not a TIFF, several planes, another shape than the other
fields, a broken link) are named, skipped and
reported in :attr:`Prediction.failed_fields`; the command fails, naming every file, only when none
is usable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import image2reg
from image2reg.cnn.embed import gene_embeddings
from image2reg.cnn.tasks import embed_nuclei, encoder_spec
from image2reg.config import ImagesStageParams, RunParams, load_params, params_path_for
from image2reg.images.io import ImageReadError, read_field
from image2reg.images.pipeline import illumination_path, preprocess_images
from image2reg.layout import RunLayout, TaskFiles, artifact_name, atomic_path, find_project_root, write_json
from image2reg.lock import FolderLock, LockHeldError
from image2reg.notebook import impactful_genes
from image2reg.outputs import file_hash
from image2reg.stages import stage_by_name
from image2reg.translation.features import InputSettings, unit_rows
from image2reg.translation.inputs import model_block
from image2reg.translation.loto import model_fit_predict

logger = logging.getLogger("image2reg")

QUERY_PLATE = "query"
IMAGE_SUFFIXES = (".tif", ".tiff")
#: A cached preprocessing's folder in the work folder (the key's first 16 hex digits), and its partial twin.
_CACHE = re.compile(r"^[0-9a-f]{16}$")
_PARTIAL = re.compile(r"^\.[0-9a-f]{64}\.partial$")


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


def query_files(images: str | Path) -> list[Path]:
    """The query's fields of view: every ``.tif``/``.tiff`` file of the folder ``images``, sorted by name.

    Raises
    ------
    FileNotFoundError
        ``images`` is not a folder, or holds no TIFF.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of fields of view")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if not paths:
        raise FileNotFoundError(f"{folder}: no .tif/.tiff fields of view found")
    return paths


def query_fields(images: str | Path | list[Path]) -> tuple[pd.DataFrame, dict[str, str]]:
    """A stage-01 field table of the usable query files (one plate, one well, a site per file), and the others.

    Every file is read first (:func:`~image2reg.images.io.read_field`): an unreadable, truncated, colour or
    multi-plane file is named in a warning and skipped.

    Parameters
    ----------
    images
        The query folder, or its files (:func:`query_files`).

    Returns
    -------
    fields
        One row per readable file (``image_path`` absolute), sites numbered in file order from 1.
    unreadable
        Every skipped file (absolute path) → why it could not be read (the message names the file).

    Raises
    ------
    FileNotFoundError
        No folder, or no TIFF in it.
    ImageReadError
        No file is usable; the message names every file and why.
    """
    paths = images if isinstance(images, list) else query_files(images)
    usable, unreadable = [], {}
    for path in paths:
        try:
            read_field(path)
        except ImageReadError as error:
            logger.warning("skipping query field %s: %s", path.name, error)
            unreadable[str(path.resolve())] = str(error)
        else:
            usable.append(path)
    if not usable:
        raise ImageReadError(f"none of the {len(paths)} query fields can be read:\n"
                             + "\n".join(f"  {why}" for why in unreadable.values()))
    return (pd.DataFrame({"Metadata_Plate": QUERY_PLATE, "Metadata_Well": "q01",
                          "Metadata_Site": np.arange(1, len(usable) + 1), "Metadata_Gene": "query",
                          "image_path": [str(p.resolve()) for p in usable]}), unreadable)


def file_sha256(path: str | Path) -> str | None:
    """The SHA-256 of a file's bytes (hex); None when the file cannot be opened (a broken link, no permission)."""
    try:
        return file_hash(Path(path))
    except OSError:
        return None


def query_key(paths: list[Path], images_fingerprint: str, weights: dict[str, Path],
              crop_scale: float | None = None) -> tuple[str, dict]:
    """The key of a query's cached preprocessing: what the cached work and the answer depend on.

    Parameters
    ----------
    paths
        The query's files, of one folder (all of them, the unreadable ones too: a repaired file changes the key).
    images_fingerprint
        The preprocessing params' fingerprint (:meth:`image2reg.config.RunParams.fingerprint` of ``images``).
    weights
        The trained models used (name → weights file).
    crop_scale
        The screen's crop intensity scale the query's crops get (:func:`screen_crop_scale`), or None.

    Returns
    -------
    key
        SHA-256 (hex) of the record.
    record
        What the key hashes: the query folder (absolute: its fields are read again for the CNN's regions),
        each file's name, size and SHA-256, the params' fingerprint, each model's weights' SHA-256 and the
        package version.
    """
    record = {"folder": str(Path(paths[0]).resolve().parent),
              "files": [{"name": Path(p).name, "size": _size(p), "sha256": file_sha256(p)}
                        for p in sorted(paths, key=lambda p: Path(p).name)],
              "images_params": images_fingerprint,
              "models": {name: file_sha256(path) for name, path in sorted(weights.items())},
              "crop_scale": crop_scale, "version": image2reg.__version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(), record


def _size(path: str | Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def screen_crop_scale(layout: RunLayout, params: ImagesStageParams) -> float | None:
    """The crop intensity scale of a query with ``crop_scaling: plate_percentile``: the median of the screen's
    plate scales (a query's fields hold one condition and no control, so they cannot set their own); None for
    ``nucleus_max``."""
    if params.crop_scaling != "plate_percentile":
        return None
    scales = _needs(layout, "images", lambda: json.loads(layout.artifact("images", "crop_scales").read_text()))
    return float(np.median(list(scales.values())))


def cached_preprocessing(fields: pd.DataFrame, work: Path, params: ImagesStageParams, key: str, record: dict
                         ) -> tuple[Path, bool]:
    """The query's stage-01 preprocessing for ``key``: reused from ``work`` when there, else computed.

    The work goes into ``work/.<key>.partial/`` (finished shards of an interrupted run with the same
    key are resumed), gets ``done.json`` (the key and its ``record``) last, and is renamed to
    ``work/<key[:16]>/``; then the caches of other keys are removed. The caller holds the work folder's lock.

    Parameters
    ----------
    fields
        The usable query fields (:func:`query_fields`).
    work
        The work folder.
    params
        The images stage's params.
    key, record
        From :func:`query_key`.

    Returns
    -------
    folder
        The complete preprocessing (``images.parquet``, ``nuclei.parquet``, crops, illumination).
    reused
        Whether it was there already.
    """
    folder = work / key[:16]
    done = folder / TaskFiles.DONE
    if done.is_file():
        try:
            if json.loads(done.read_text()).get("key") == key:
                logger.info("reusing the query's preprocessing in %s", folder)
                return folder, True
        except (OSError, json.JSONDecodeError):
            pass
    partial = work / f".{key}.partial"
    # bad fields are skipped whatever their share: predict stops only when none is usable (in _rank)
    scale = record.get("crop_scale")
    preprocess_images(fields, partial, params, progress_bar=False, max_bad_fraction=1.0,
                      intensity_scales=None if scale is None else {QUERY_PLATE: scale})
    changed = [entry["name"] for entry in record["files"]
               if file_sha256(Path(record["folder"]) / entry["name"]) != entry["sha256"]]
    if changed:  # the cache must hold what its key says
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"query file(s) changed while being preprocessed: {', '.join(changed)}; run again")
    write_json({"key": key, **record}, partial / TaskFiles.DONE)
    if folder.exists():  # a cache of another key with the same 16 first digits
        shutil.rmtree(folder)
    partial.rename(folder)
    for other in work.iterdir():
        if other != folder and other.is_dir() and (_PARTIAL.match(other.name) or (
                _CACHE.match(other.name) and (other / TaskFiles.DONE).is_file())):
            shutil.rmtree(other, ignore_errors=True)
    return folder, False


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
        Query files (TIFF) found, and the ones skipped (absolute path: reason): unreadable files and
        fields whose processing failed.
    nuclei_segmented, nuclei_kept, nuclei_used
        Nuclei the segmentation found, those the filters kept, and those of QC-passing fields embedded.
    models
        The trained CNNs used (``fold-k`` of stage 03, or ``loto:<GENE>`` of stage 04).
    translation
        The translation model and its training genes.
    work_dir
        Where the query's preprocessing lies (``<work folder>/<key[:16]>``).
    key, reused
        The key of the preprocessing (:func:`query_key`), and whether it was found done in the work folder.
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
    key: str = ""
    reused: bool = False

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
                "top": self.ranking.head(top).to_dict(orient="records"), "work_dir": str(self.work_dir),
                "key": self.key, "reused_preprocessing": self.reused}

    def summary(self, top: int) -> str:
        """A report for people: what was read and used, the top genes, and what chance would give."""
        n = len(self.ranking)
        chance = self.random_gene(top)
        failed = (f"; {len(self.failed_fields)} skipped (could not be processed):\n"
                  + "\n".join(f"  {Path(f).name}: {why}" for f, why in self.failed_fields.items())
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
        Where the query's preprocessing goes (default ``runs/<dataset>/predictions/<folder name>``); it is
        locked while the command runs, and finished work there is reused only for the same query files,
        params and models (see the module docstring).

    Raises
    ------
    FileNotFoundError
        No folder or no TIFF in it.
    ImageReadError
        No field can be read (every file named, with why).
    LockHeldError
        Another predict is writing the work folder (its PID and start time named).
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
    paths = query_files(images)
    _needs(layout, "screen", lambda: impactful_genes(layout))  # a dataset not run: said before making a work folder
    with FolderLock(work, what=f"predict --images {images.resolve()} --model {model}"):
        fields, unreadable = query_fields(paths)
        trained = encoders(layout, params, model)  # before the preprocessing: a stage not run is said at once
        key, record = query_key(paths, params.fingerprint("images"),
                                {encoder.name: encoder.weights for encoder in trained},
                                screen_crop_scale(layout, params.stage("images")))
        prepared, reused = cached_preprocessing(fields, work, params.stage("images"), key, record)
        return _rank(prepared, trained, params, model, len(paths), unreadable, key, reused)


def _rank(work: Path, trained: list[TrainedEncoder], params: RunParams, model: str, n_files: int,
          unreadable: dict[str, str], key: str, reused: bool) -> Prediction:
    """The ranking of :func:`predict_condition` from the query's preprocessing in ``work``."""
    processed = pd.read_parquet(work / artifact_name("images", "images"))
    errors = processed["error"] != ""
    failed = {**unreadable, **dict(zip(processed.loc[errors, "image_path"], processed.loc[errors, "error"]))}
    if errors.all():
        raise ValueError(f"none of the {n_files} query fields could be processed:\n"
                         + "\n".join(f"  {Path(f).name}: {why}" for f, why in failed.items()))
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
    return Prediction(ranking=ranking, fields=n_files, failed_fields=failed,
                      nuclei_segmented=int(processed["n_segmented"].fillna(0).sum()), nuclei_kept=len(nuclei),
                      nuclei_used=used, models=[encoder.name for encoder in trained],
                      translation=f"{translation.model} (reg {translation.reg:g}) fitted on {n_train} impactful genes",
                      work_dir=work, key=key, reused=reused)


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
    parser.add_argument("--work-dir", help="folder for the query's preprocessing (default: runs/<dataset>/"
                        "predictions/<folder name>); reused only for the same files, params and models")
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON (for scripts)")
    args = parser.parse_args(argv)
    try:
        prediction = predict_condition(args.images, dataset=args.dataset, params_path=args.params,
                                       runs_dir=args.runs_dir, model=args.model, work_dir=args.work_dir)
    except (FileNotFoundError, ValueError, KeyError, ImageReadError, LockHeldError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(prediction.to_dict(args.top), indent=2) if args.json else prediction.summary(args.top))
    if args.out:
        out = Path(args.out)
        with atomic_path(out) as tmp:
            ranking = prediction.ranking
            ranking.to_parquet(tmp) if out.suffix == ".parquet" else ranking.to_csv(tmp, index=False)
    return 0
