"""Independent tasks give the same results in-process, in a process pool and on a Dask cluster."""

from __future__ import annotations

import math

import pytest

from image2reg.execute import ExecutionParams, map_tasks

TASKS = [4.0, 9.0, 16.0, 25.0, 36.0]


@pytest.mark.parametrize("backend", ["inprocess", "processes", "dask"])
def test_every_task_runs_once_with_its_index(backend):
    results = dict(map_tasks(math.sqrt, TASKS, ExecutionParams(backend=backend, workers=2), progress_bar=False))
    assert results == {index: math.sqrt(task) for index, task in enumerate(TASKS)}


@pytest.mark.parametrize("backend", ["inprocess", "processes"])
def test_a_failing_task_raises_its_error(backend):
    with pytest.raises(ValueError, match="math domain error"):
        list(map_tasks(math.sqrt, [4.0, -1.0, 9.0], ExecutionParams(backend=backend, workers=2), progress_bar=False))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        ExecutionParams(backend="slurm")


def blas_threads(_: object) -> tuple[str | None, list[int]]:
    """In a worker: the OpenBLAS setting and the thread counts of the BLAS libraries NumPy loaded."""
    import os

    import numpy  # noqa: F401  (loads its BLAS)
    from threadpoolctl import threadpool_info

    return os.environ.get("OPENBLAS_NUM_THREADS"), [pool["num_threads"] for pool in threadpool_info()
                                                    if pool["user_api"] == "blas"]


def test_pool_workers_share_the_cores_instead_of_each_taking_all(monkeypatch):
    from image2reg.execute import THREAD_VARIABLES, default_workers

    for variable in THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    expected = max(1, default_workers() // 2)
    results = dict(map_tasks(blas_threads, [0, 1], ExecutionParams(backend="processes", workers=2),
                             progress_bar=False))
    for setting, threads in results.values():
        assert setting == str(expected) and threads and set(threads) == {expected}
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # a user's own setting is kept
    results = dict(map_tasks(blas_threads, [0, 1], ExecutionParams(backend="processes", workers=2),
                             progress_bar=False))
    assert {setting for setting, _ in results.values()} == {"1"}
