"""Jupytext pairs: every stage notebook exists as a py:percent script and an output-free .ipynb in sync."""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

from image2reg.stages import STAGES

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
INJECTED = {"dataset", "params_path", "fold", "runs_dir", "reports_dir", "work_dir"}
SCRIPTS = sorted(NOTEBOOKS.glob("*.py"))


def cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ()))) for cell in notebook.cells]


def test_every_stage_has_a_notebook_and_every_script_a_pair():
    assert {p.stem for p in SCRIPTS} == {stage.id for stage in STAGES}
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_free_of_outputs(script):
    paired = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    assert cells(jupytext.read(script)) == cells(paired), (
        f"{script.name} and its .ipynb differ: run `jupytext --sync {script.relative_to(NOTEBOOKS.parent)}`")
    for cell in paired.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{script.stem}.ipynb holds outputs"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_kernelspec_and_parameters_cell(script):
    notebook = jupytext.read(script)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", ())]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assigned = {target.id for node in ast.parse(tagged[0].source).body for target in node.targets}
    assert assigned == INJECTED


def test_nearest_genes_and_the_oracle_summary():
    import numpy as np
    import pandas as pd

    from image2reg.translation.report import ORACLE_ROWS, nearest_genes, oracle_summary

    candidates = pd.DataFrame([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]], index=["a", "b", "c"])
    truth = pd.DataFrame({"module": [0, 1, 0]}, index=["a", "b", "c"])
    table = nearest_genes(candidates, np.array([0.9, 0.0]), truth, "a", k=2)
    assert table["gene"].tolist() == ["c", "a"] and table["distance"].tolist() == pytest.approx([0.1, 0.9])
    assert table["same module"].tolist() == [True, True]
    assert "module" not in nearest_genes(candidates, np.zeros(2), None, "a")
    oracle = pd.DataFrame({"top5": [0.1, 0.2, 0.3, 0.4], "auc20": 0.5}, index=list(ORACLE_ROWS.values()))
    assert oracle_summary(oracle) == {"oracle_true_images_top5": 0.2, "oracle_true_programs_top5": 0.3,
                                      "oracle_both_true_top5": 0.4}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebooks_define_no_functions_or_classes(script):
    """Notebooks orchestrate: what a report computes lives in the tested package."""
    tree = ast.parse(script.read_text())
    defined = [f"{node.name} (line {node.lineno})" for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not defined, f"{script.name} defines {defined}: move them into image2reg/ with a test"
