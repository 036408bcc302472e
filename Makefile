# Two commands matter: `make demo` and `make test`. Each sets everything up first.
VENV   := .venv
PY     := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup test demo lint types package bench bench-quick clean screenshots

setup:
	@bash scripts/setup.sh

# Lint and a type check of the engine first: both must be clean before the suite runs.
# The suite runs in TEST_JOBS processes, each test file whole in one of them (its module
# fixtures, a Dask cluster say, are made once): much of it waits on stalled servers and
# time-outs, which the other process fills.
TEST_JOBS ?= 2
test: setup
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory types
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

demo: setup
	$(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/ruff check .

# mypy sees core/ as the package clearsky.core, as QGIS imports it.
types: setup
	cd .build/importroot && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p clearsky.core

package: setup
	$(PY) scripts/package.py

bench: setup
	$(PY) bench/run.py

bench-quick: setup
	$(PY) bench/run.py --quick

screenshots: setup
	$(PY) scripts/screenshots.py

clean:
	rm -rf .build dist demo-output .pytest_cache .ruff_cache
