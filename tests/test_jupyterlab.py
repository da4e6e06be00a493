"""JupyterLab, as the README starts it: jupytext opens the paired .py files as notebooks, and the kernel the
notebooks name is this environment's Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import asyncio, json, sys
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.initialize(argv=["--ServerApp.port=0", "--ServerApp.open_browser=False", "--ServerApp.ip=127.0.0.1",
                     f"--ServerApp.root_dir={sys.argv[1]}"])
model = asyncio.run(app.contents_manager.get("notebooks/02_screen.py", content=True))
spec = app.kernel_spec_manager.get_kernel_spec(model["content"]["metadata"]["kernelspec"]["name"])
print(json.dumps({"manager": type(app.contents_manager).__qualname__, "module": type(app.contents_manager).__module__,
                  "type": model["type"], "cells": len(model["content"]["cells"]),
                  "kernelspec": model["content"]["metadata"]["kernelspec"]["name"], "argv": spec.argv,
                  "extensions": sorted(app.extension_manager.extensions)}))
"""


def test_jupyterlab_opens_the_py_notebooks_with_this_environments_kernel():
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"jupyterlab", "jupyterlab_jupytext"} <= set(found["extensions"])
    assert found["module"].startswith("jupytext") and "Jupytext" in found["manager"]  # jupytext's contents manager
    assert found["type"] == "notebook" and found["cells"] > 5  # the .py opens as a notebook, paired
    assert found["kernelspec"] == "python3"
    # the native kernel: jupyter_client starts "python" as the server's own interpreter, this environment's
    command = found["argv"][0]
    assert command in ("python", "python3") or Path(command).resolve() == Path(sys.executable).resolve(), command
    assert found["argv"][1:3] == ["-m", "ipykernel_launcher"]
