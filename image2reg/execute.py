"""Where independent tasks run (this process, a local process pool, or a Dask cluster), and each only once.

Every long stage (image preprocessing, the specificity screen) is a list of independent tasks whose
results land on disk. :func:`map_tasks` runs such a list with one progress bar, whatever the backend:

- ``inprocess``: one after the other (debugging, tests);
- ``processes``: a local process pool (the default);
- ``dask``: a Dask cluster, a fresh ``LocalCluster`` or the scheduler at ``dask_address`` (e.g. one
  started by ``dask-jobqueue`` on SLURM). Workers must see the same file system as this process.

A task with a folder (a CNN or graph autoencoder model) is run by :func:`run_once`: a folder holding
``done.json`` returns its metrics without doing anything; otherwise the task runs, and ``metrics.json``
then ``done.json`` are written atomically when it finishes. :func:`run_tasks` sends only the unfinished
tasks of a list to :func:`map_tasks`, so a rerun after an interruption does only what is missing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from image2reg.layout import TaskFiles, write_text_atomic

logger = logging.getLogger("image2reg")

Backend = Literal["inprocess", "processes", "dask"]


class ExecutionParams(BaseModel):
    """How a stage spreads its tasks (the ``execution`` block of a stage's params)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend = "processes"
    workers: int | None = Field(default=None, ge=1, description="worker processes; default: all cores")
    dask_address: str | None = Field(default=None, description="scheduler address; default: a LocalCluster")


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def map_tasks(
    function: Callable[[Any], Any],
    tasks: Sequence[Any],
    execution: ExecutionParams | None = None,
    *,
    progress_bar: bool = True,
    desc: str = "tasks",
    unit: str = "task",
) -> Iterator[tuple[int, Any]]:
    """Run ``function`` on every task and yield ``(index, result)`` as each one finishes.

    Parameters
    ----------
    function
        A module-level function (it is sent to other processes) of one task.
    tasks
        The tasks; each must be picklable for the ``processes`` and ``dask`` backends.
    execution
        Backend and number of workers (default: a local process pool over all cores).
    progress_bar
        Show a tqdm bar over tasks.

    Yields
    ------
    tuple[int, Any]
        The task's position in ``tasks`` and what ``function`` returned. An exception raised by a
        task propagates after the tasks already running have been cancelled.
    """
    execution = execution or ExecutionParams()
    workers = min(execution.workers or default_workers(), max(len(tasks), 1))
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress_bar) as bar:
        if execution.backend == "inprocess" or (execution.backend == "processes" and workers == 1):
            results = ((index, function(task)) for index, task in enumerate(tasks))
        elif execution.backend == "processes":
            results = _pool(function, tasks, workers)
        else:
            results = _dask(function, tasks, workers, execution.dask_address)
        for index, result in results:
            bar.update()
            yield index, result


#: Thread-pool sizes of the BLAS/OpenMP libraries, read when they load.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _share_cores(threads: int) -> None:
    """Pool-worker initializer: at most ``threads`` BLAS/OpenMP threads unless the user set a number.

    It runs before a task is unpickled, so before the worker loads NumPy or torch: without it, every
    worker would start one thread per core and the workers would fight over the cores.
    """
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing).

    A pool worker whose parent (a stage's kernel) is killed then stops at once instead of finishing its task
    and writing artifacts nobody waits for.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the worker ends when its task ends, as before
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _worker_init(threads: int) -> None:
    """Pool-worker initializer: share the cores (:func:`_share_cores`) and die with the parent."""
    _share_cores(threads)
    die_with_parent()


def _pool(function: Callable[[Any], Any], tasks: Sequence[Any], workers: int) -> Iterator[tuple[int, Any]]:
    # spawn: workers start clean, so no lock held by a thread of this process is inherited
    context = multiprocessing.get_context("spawn")
    threads = max(1, default_workers() // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(function, task): index for index, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _dask(function: Callable[[Any], Any], tasks: Sequence[Any], workers: int,
          address: str | None) -> Iterator[tuple[int, Any]]:
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    cluster = None if address else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=None)
    client = Client(address or cluster)
    logger.info("running %d tasks on the Dask cluster at %s", len(tasks), client.scheduler.address)
    try:
        futures = client.map(function, tasks, pure=False)
        positions = {future.key: index for index, future in enumerate(futures)}
        for future in dask_completed(futures):
            yield positions[future.key], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Let torch use ``threads`` threads inside the block (None: leave it as it is)."""
    import torch  # here, not at the top: params and the runbook import this module without torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_once(folder: str | Path, compute: Callable[[], dict[str, Any]], threads: int | None = None) -> dict[str, Any]:
    """The metrics of a finished task folder, or ``compute()`` run and recorded as finished.

    Parameters
    ----------
    folder
        The task's folder; ``done.json`` there marks it finished.
    compute
        Does the work and returns JSON-able metrics; it may leave other files in ``folder``.
    threads
        Threads torch may use while ``compute`` runs.
    """
    done = Path(folder) / TaskFiles.DONE
    if done.exists():
        return json.loads(done.read_text())
    with torch_threads(threads):
        metrics = compute()
    text = json.dumps(metrics, indent=2) + "\n"
    write_text_atomic(Path(folder) / TaskFiles.METRICS, text)
    write_text_atomic(done, text)
    return metrics


def run_tasks(function: Callable[[Any], dict[str, Any]], tasks: Sequence[Any], execution: ExecutionParams | None,
              *, progress_bar: bool = True, desc: str = "models") -> list[dict[str, Any]]:
    """Metrics of every task, in order: finished ones (``<task.folder>/done.json``) read, the others run.

    Only unfinished tasks are sent to ``execution`` (this process, a pool or a Dask cluster), so a
    rerun after an interruption trains only what is missing.
    """
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    pending = []
    for position, task in enumerate(tasks):
        done = Path(task.folder) / TaskFiles.DONE
        if done.exists():
            rows[position] = json.loads(done.read_text())
        else:
            pending.append(position)
    logger.info("%s: %d of %d tasks already done, running %d", desc, len(tasks) - len(pending), len(tasks),
                len(pending))
    for index, metrics in map_tasks(function, [tasks[position] for position in pending], execution,
                                    progress_bar=progress_bar, desc=desc, unit="model"):
        rows[pending[index]] = metrics
    return rows
