# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv when absent and install
# torch 2.13.0 (CPU build) first, so the package's own install never pulls a CUDA build.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# the install is redone when pyproject.toml's content changes (nbdev-export rewrites the file, so not its mtime)
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: install demo test check-sync lint suite pytest nbval lab export docs clean

install: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: install
	$(BIN)/intraday demo --out reports/demo

test: install check-sync lint suite

check-sync: install
	@BIN=$(BIN) bash .ci/check-sync

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest, the soak and nbval in three lanes on two cores (.ci/suite says which test runs where, and why)
suite: install
	@BIN=$(BIN) bash .ci/suite

# one part alone: the suite serially (with coverage), or the notebooks
pytest: install
	NUMBA_DISABLE_JIT=1 $(BIN)/pytest tests/test_interpreted.py -q --cov=intraday --cov-report= --cov-fail-under=0
	$(BIN)/pytest tests --cov=intraday --cov-append --cov-report=term --durations=20

nbval: install
	$(BIN)/pytest --nbval-lax nbs --ignore=nbs/jobs -p no:cacheprovider -q

lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs

# After editing notebooks: format their code cells, export the package, strip notebook noise.
export: install
	$(BIN)/ruff format -q nbs tests
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

# The documentation site from the notebooks, offline: nbdev processes them (_proc/), mkdocs-material renders
# them into _docs/ (only notebooks changed since the last build are processed again). Read it with
# `python -m http.server -d _docs -b 127.0.0.1 8000`; .github/workflows/pages.yml publishes it.
docs: install
	$(BIN)/python .ci/build_docs.py

clean:
	rm -rf reports/demo .pytest_cache .ruff_cache .coverage htmlcov _proc _docs
