"""Run the stage notebooks of a dataset in order: ``python runbook.py --dataset demo``.

Works from any working directory: the project is the folder holding this file. See
``python runbook.py --help`` and :mod:`image2reg.runbook`.
"""

from pathlib import Path

from image2reg.runbook import main

if __name__ == "__main__":
    raise SystemExit(main(root=Path(__file__).resolve().parent))
