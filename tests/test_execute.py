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
