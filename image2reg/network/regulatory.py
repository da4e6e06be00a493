"""Stage 06's models: one graph autoencoder on all genes, its replicate splits, and one per held-out target.

The regulatory gene embeddings of the method (§6) come from :func:`~image2reg.network.gae.train_gae`
on the interactome. Which classes its latent classifier learns decides which models are needed:

- ``all``: labels are clusters of every impactful gene's mean image embedding (stage 03), as the
  reference's model behind its figures;
- ``replicate``: the same model on other random edge splits (seed + k), only to show how much the
  link-prediction AUC depends on which edges are held out;
- ``loto``: for every target ``T``, labels are clusters of the mean image embeddings of the *other*
  targets from ``T``'s leave-one-target-out CNN (stage 04), ``T`` unlabelled, so that nothing about
  ``T``'s images reaches its regulatory embedding (the reference's "physical" labels).

Each model is a task with a folder (``done.json`` marks it finished, so reruns only train what is
missing) holding ``embeddings.npy`` (nodes × latent, float32) and ``history.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

from image2reg.config import GaeParams, RegulatoryStageParams
from image2reg.execute import run_once
from image2reg.layout import TaskFiles, atomic_path

EMBEDDINGS, HISTORY = TaskFiles.GAE_EMBEDDINGS, TaskFiles.GAE_HISTORY


@dataclass(frozen=True)
class GaeTask:
    """One graph autoencoder to train: its inputs and where its results go."""

    name: str
    kind: Literal["all", "replicate", "loto"]
    folder: str
    features: np.ndarray
    edges: np.ndarray
    labels: np.ndarray | None
    params: GaeParams
    torch_threads: int | None = 1
    held_out: str | None = None


def run_gae_task(task: GaeTask) -> dict[str, Any]:
    """Train one task's model (unless its folder says it is done) and return its metrics."""
    from image2reg.network.gae import train_gae  # torch_geometric loads only where a model is trained

    folder = Path(task.folder)

    def compute() -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        result = train_gae(task.features, task.edges, task.params, task.labels)
        with atomic_path(folder / EMBEDDINGS) as tmp, open(tmp, "wb") as handle:
            np.save(handle, result.embeddings, allow_pickle=False)
        with atomic_path(folder / HISTORY) as tmp:
            result.history.to_parquet(tmp)
        labelled = task.labels[task.labels >= 0] if task.labels is not None else np.zeros(0, np.int64)
        return {"model": task.name, "kind": task.kind, "held_out": task.held_out, "seed": task.params.seed,
                "test_auc": result.test_auc, "test_ap": result.test_ap, "best_epoch": result.best_epoch,
                "epochs_run": len(result.history), "stopped_early": result.stopped_early,
                "n_train_edges": result.n_train_edges, "n_val_edges": result.n_val_edges,
                "n_test_edges": result.n_test_edges, "n_labelled": int(len(labelled)),
                "n_classes": int(len(np.unique(labelled)))}

    return run_once(folder, compute, task.torch_threads)


def read_task_embeddings(task: GaeTask) -> np.ndarray:
    """The embeddings a finished task wrote."""
    return np.load(Path(task.folder) / EMBEDDINGS, allow_pickle=False)


def read_task_history(task: GaeTask) -> pd.DataFrame:
    """The per-epoch history a finished task wrote."""
    return pd.read_parquet(Path(task.folder) / HISTORY)


def gae_tasks(genes: np.ndarray, features: np.ndarray, edges: np.ndarray, params: RegulatoryStageParams, *,
              out_dir: str | Path, targets: list[str], image_embeddings: pd.DataFrame | None = None,
              loto_embeddings: ad.AnnData | None = None) -> list[GaeTask]:
    """The models of stage 06: ``all``, its replicate splits and (optionally) one per held-out target.

    Parameters
    ----------
    genes
        The interactome's genes, in node order (rows of ``features``).
    features, edges
        Node features and E × 2 node indices.
    params
        The stage's params (labels, clusters, seeds, the GAE).
    out_dir
        Folder of the task folders (``<out_dir>/<name>``).
    targets
        The impactful genes; those in the interactome get a LOTO model.
    image_embeddings
        Genes × dimensions: mean image embeddings of the targets (stage 03), for the labels of ``all``.
    loto_embeddings
        Stage 04's ``gene_embeddings_loto.h5ad`` (obs ``model``, ``gene``), for the LOTO labels.
    """
    from image2reg.network.gae import image_cluster_labels, node_labels

    use_labels = params.labels == "image_clusters" and params.gae.gamma > 0
    out_dir = Path(out_dir)
    common = {"features": features, "edges": edges, "torch_threads": params.torch_threads}
    labels = None
    if use_labels:
        if image_embeddings is None:
            raise ValueError("labels: image_clusters needs the image embeddings of the targets (stage 03)")
        clustered = image_embeddings.loc[image_embeddings.index.isin(targets)]
        labels = node_labels(genes, image_cluster_labels(clustered, _clusters(params.n_clusters_all, len(clustered),
                                                                              "n_clusters_all")))
    tasks = [GaeTask(name="all", kind="all", folder=str(out_dir / "all"), labels=labels, params=params.gae, **common)]
    for k in range(1, params.evaluation_seeds):
        seeded = params.gae.model_copy(update={"seed": params.gae.seed + k})
        tasks.append(GaeTask(name=f"replicate_{k}", kind="replicate", folder=str(out_dir / f"replicate_{k}"),
                             labels=labels, params=seeded, **common))
    if not (params.loto and use_labels):
        return tasks  # without labels a held-out target changes nothing: every LOTO model would be "all"
    if loto_embeddings is None:
        raise ValueError("LOTO models need the LOTO image embeddings (stage 04)")
    obs = loto_embeddings.obs
    in_network = set(genes)
    for target in [t for t in targets if t in in_network]:
        rows = ((obs["model"].astype(str) == target) & obs["gene"].astype(str).isin(targets)).to_numpy()
        if not rows.any():
            raise ValueError(f"no LOTO image embeddings of model {target!r} (stage 04)")
        block = pd.DataFrame(np.asarray(loto_embeddings.X)[rows], index=obs.loc[rows, "gene"].astype(str).to_numpy())
        if target not in block.index:
            raise ValueError(f"LOTO model {target!r} has no embedding of its held-out target")
        n_clusters = _clusters(params.n_clusters, len(block) - 1, "n_clusters")
        held = node_labels(genes, image_cluster_labels(block, n_clusters, held_out=target))
        tasks.append(GaeTask(name=target, kind="loto", folder=str(out_dir / f"loto_{target}"), labels=held,
                             params=params.gae, held_out=target, **common))
    return tasks


def loto_embeddings_table(tasks: list[GaeTask], genes: np.ndarray, targets: list[str]) -> ad.AnnData | None:
    """Each held-out target's regulatory embeddings, stacked: the ``regulatory_embeddings_loto.h5ad`` of stage 06.

    With LOTO models, each target's block is its own model's embeddings. When the models learn no
    image labels, nothing about any target's images reaches the embeddings, so the model on all genes
    is every target's leave-one-target-out model and its embeddings are repeated under each target
    of the interactome. Returns ``None`` when labels are learnt but no LOTO model was asked for.

    Returns
    -------
    anndata.AnnData or None
        One row per (model, gene): obs ``model`` (the held-out target), ``gene`` and ``is_target``
        (the row of the held-out target), index ``"<model>:<gene>"``.
    """
    genes = np.asarray(genes).astype(str)
    loto = [task for task in tasks if task.kind == "loto"]
    if loto:
        models = [(task.name, task) for task in loto]
    elif tasks[0].labels is None:
        in_network = set(genes)
        models = [(target, tasks[0]) for target in targets if target in in_network]
    else:
        return None
    if not models:
        raise ValueError("no impactful gene is in the interactome: there is no target to hold out")
    table = _stacked(models, genes)
    table.obs["is_target"] = (table.obs["gene"].astype(str) == table.obs["model"].astype(str)).to_numpy()
    return table


def replicate_embeddings_table(tasks: list[GaeTask], genes: np.ndarray) -> ad.AnnData | None:
    """The embeddings of the model on all genes and of its replicate splits, when they are leak-free for LOTO.

    Without image labels, no model sees any target's images, so each replicate (another edge split
    and initialisation) is as valid a leave-one-target-out model as the first: translating with each
    shows how much the LOTO scores depend on the autoencoder's training draw. With labels, the
    replicates learnt every target's image cluster, so ``None`` is returned.

    Returns
    -------
    anndata.AnnData or None
        One row per (model, gene): obs ``model`` (``all``, ``replicate_1``, …), ``gene``, index
        ``"<model>:<gene>"``.
    """
    if tasks[0].labels is not None:
        return None
    return _stacked([(task.name, task) for task in tasks if task.kind in ("all", "replicate")],
                    np.asarray(genes).astype(str))


def _stacked(models: list[tuple[str, GaeTask]], genes: np.ndarray) -> ad.AnnData:
    """The embeddings of each ``(name, task)``, one block per name: obs ``model``, ``gene`` (categorical, as
    h5ad stores them anyway), index ``"<name>:<gene>"``."""
    names = [name for name, _ in models]
    obs = pd.DataFrame({"model": pd.Categorical(np.repeat(names, len(genes)), categories=list(dict.fromkeys(names))),
                        "gene": pd.Categorical(np.tile(genes, len(names)), categories=list(genes))},
                       index=[f"{name}:{gene}" for name in names for gene in genes])
    return ad.AnnData(np.vstack([read_task_embeddings(task) for _, task in models]), obs=obs)


def _clusters(wanted: int, available: int, key: str) -> int:
    if available < 1:
        raise ValueError(f"no targets to cluster for the latent classifier's labels ({key})")
    if wanted > available:
        raise ValueError(f"{key}={wanted} is more than the {available} targets clustered for the labels: "
                         f"lower it in the params")
    return wanted
