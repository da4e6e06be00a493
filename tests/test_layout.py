"""Every artifact path is built by image2reg.layout: its registry, its errors, and no name spelled elsewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from image2reg.layout import (
    RAW_FILES,
    STAGE_FILES,
    RawLayout,
    RunLayout,
    TaskFiles,
    artifact_name,
    write_h5ad,
    write_json,
    write_parquet,
    write_summary,
)
from image2reg.stages import STAGES

REPO = Path(__file__).resolve().parents[1]


def _registered_names() -> set[str]:
    names = {name for files in STAGE_FILES.values() for name in files.values()}
    names |= {value for key, value in vars(TaskFiles).items() if key.isupper()}
    names |= {Path(value).name for value in RAW_FILES.values()} | set(RAW_FILES.values())
    names |= {"world.json", "genes.parquet", "ppi_edges.parquet"}  # the synthetic truth (RawLayout properties)
    return {name for name in names if "." in name}  # folder names ("models", "all") are ordinary words


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_every_derived_stage_has_a_registry_entry_with_a_summary():
    derived = {stage.name for stage in STAGES if stage.derived}
    assert set(STAGE_FILES) == derived
    assert all(files["summary"] == "summary.json" for files in STAGE_FILES.values())


def test_artifact_paths_and_their_errors(tmp_path):
    layout = RunLayout("demo", runs_dir=tmp_path)
    assert layout.artifact("images", "nuclei") == tmp_path / "demo" / "01_images" / "nuclei.parquet"
    assert layout.artifact("loto", "models", fold=1) == tmp_path / "demo" / "04_loto" / "fold-1" / "models"
    assert artifact_name("translation", "ranks") == "ranks.parquet"
    with pytest.raises(KeyError, match="stage 'images' has no artifact 'ranks'; it has: images, nuclei"):
        artifact_name("images", "ranks")
    with pytest.raises(KeyError, match="no stage 'data' writes artifacts"):
        artifact_name("data", "summary")
    raw = RawLayout(tmp_path / "raw")
    assert raw.file("ppi") == tmp_path / "raw" / "ppi" / "ppi_costs.tsv"
    assert raw.image_metadata == raw.file("image_metadata") and raw.screen_genes == raw.file("screen_genes")
    with pytest.raises(KeyError, match="no raw input 'counts'"):
        raw.file("counts")


def test_no_artifact_file_name_is_spelled_outside_the_layout():
    """grep, as the issue asks, but on string literals only (docstrings may name the files they describe)."""
    names = _registered_names()
    sources = [p for p in sorted((REPO / "image2reg").rglob("*.py")) if p.name != "layout.py"]
    sources += sorted((REPO / "notebooks").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    found = [f"{path.relative_to(REPO)}:{line}: {value!r}" for path in sources for line, value in _literals(path)
             if value in names or any(value.endswith("/" + name) for name in names)]
    assert not found, "artifact names spelled outside image2reg/layout.py:\n" + "\n".join(found)


# The layers, bottom to top: a module may import its own layer and the ones below it.
BOTTOM = {"stages", "layout", "lock", "outputs", "execute", "devices", "config"}
DOMAIN = {"data", "images", "profiling", "cnn", "network", "translation", "plotting"}
TOP = {"notebook", "predict", "reports", "results", "runbook", "__main__"}


def _layer(module: str) -> int:
    head = module.split(".")[1] if module.startswith("image2reg.") else module
    return 0 if head in BOTTOM else 1 if head in DOMAIN else 2 if head in TOP else -1


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("image2reg"):
            found.add(node.module if node.module != "image2reg" else f"image2reg.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("image2reg.")}
    return found


def test_every_package_module_has_a_layer_and_imports_only_downwards():
    wrong = []
    for path in sorted((REPO / "image2reg").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "image2reg":
            continue
        own = _layer(module)
        assert own >= 0, f"{module} belongs to no layer: add it to BOTTOM, DOMAIN or TOP (and to CONTRIBUTING.md)"
        wrong += [f"{module} (layer {own}) imports {target} (layer {_layer(target)})"
                  for target in sorted(_imports(path)) if _layer(target) > own]
    assert not wrong, "imports that run up the layers:\n" + "\n".join(wrong)


def test_writers_round_trip_and_leave_no_temporary_file(tmp_path):
    table = pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", "y"], name="gene"))
    assert pd.read_parquet(write_parquet(table, tmp_path / "t.parquet")).equals(table)
    adata = ad.AnnData(np.eye(2, dtype=np.float32), obs=pd.DataFrame({"k": [1, 2]}, index=["x", "y"]))
    back = ad.read_h5ad(write_h5ad(adata, tmp_path / "sub" / "e.h5ad"))
    np.testing.assert_array_equal(back.X, adata.X)
    assert back.obs["k"].tolist() == [1, 2]
    path = write_summary({"n": np.int64(3), "names": ["a"], "x": 0.5}, tmp_path / "s.json")
    assert path.read_text() == '{\n  "n":3,\n  "names":[\n    "a"\n  ],\n  "x":0.5\n}\n'
    assert json.loads(path.read_text()) == {"n": 3, "names": ["a"], "x": 0.5}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["e.h5ad", "s.json", "t.parquet"]


def test_plotting_modules_export_distinct_names():
    """``image2reg.plotting`` gathers its modules' figures with ``import *``: a name in two would shadow one."""
    from image2reg.plotting import cnn, data, network, translation

    names = [name for module in (data, cnn, network, translation) for name in module.__all__]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_json_keeps_full_precision_and_summaries_keep_pandas_encoding(tmp_path):
    assert json.loads(write_json({"x": 1 / 3}, tmp_path / "a.json").read_text())["x"] == 1 / 3
    assert json.loads(write_summary({"x": 1 / 3}, tmp_path / "b.json").read_text())["x"] == 0.3333333333
