# riverlake: `make demo` runs the main job, `make test` the tests. Both set up everything first.
PYTHON ?= python3.11
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
LAKE ?= lakehouse

.PHONY: install demo test test-fast bench lint clean notebooks jupyter ui

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Creates or updates .venv from uv.lock (idempotent; seconds with a warm cache). Bytecode is compiled
# once here (~40-60 s on 2 cores): every process then imports the stack in ~2 s instead of ~6 s, and
# numba (the columnar path) starts in ~1 s instead of ~3.5 s, even where PYTHONDONTWRITEBYTECODE is set.
install: $(UV)
	$(UV) sync --frozen --python $(PYTHON) --quiet --compile-bytecode
	@$(PY) -c "import river, bytewax, deltalake, polars; print('environment ready:', '$(VENV)')"

demo: install
	$(PY) -m flows.demo --lake $(LAKE)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not cluster"

bench: install
	$(PY) -c "from dataflows.tabular import warm_up; warm_up()"  # numba's cache of the compiled loops
	$(PY) -m dataflows.bench --scenario numeric --events 100000
	$(PY) -m dataflows.bench --scenario categorical --events 100000

# The Prefect UI (deployments served), the MLflow UI (champion alias set) and the newest reports of $(LAKE);
# Ctrl-C stops them all.
ui: install
	$(PY) -m flows.ui --lake $(LAKE)

# The notebooks read the lake (any URI polars reads: a folder or s3://...) and write nothing into it;
# executed copies, figures inline, go to $(NB_OUT). Set RIVERLAKE_FIGURES=DIR to also save the PNGs.
NB_OUT ?= notebooks-out
LAKE_URI = $(if $(findstring ://,$(LAKE)),$(LAKE),$(abspath $(LAKE)))
notebooks: install
	RIVERLAKE_LAKE=$(LAKE_URI) $(VENV)/bin/jupyter nbconvert --to notebook --execute notebooks/*.ipynb --output-dir $(NB_OUT)
	@echo "executed notebooks (figures inline): $(NB_OUT)/"

jupyter: install
	RIVERLAKE_LAKE=$(LAKE_URI) $(VENV)/bin/jupyter lab --ip 127.0.0.1 notebooks/

lint: install
	$(VENV)/bin/ruff check lake dataflows flows monitoring tests

clean:
	rm -rf $(LAKE) .pytest_cache
