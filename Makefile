# Two entry points that work on a fresh clone: `make demo` and `make test` (and `make lab` to work interactively).
# For the edit loop: `make test-fast` (no test marked slow) and `make lint`; `make results` regenerates docs/results.md.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast lint results lab clean-runs

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/python runbook.py --dataset demo

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

lint: venv
	$(BIN)/ruff check .

results: venv
	$(BIN)/python -m image2reg results --dataset demo --out docs/results.md

lab: venv
	$(BIN)/jupyter lab --notebook-dir=.

clean-runs:
	rm -rf runs reports
