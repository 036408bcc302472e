# Two commands matter: `make demo` and `make test`. Each sets everything up first.
VENV   := .venv
PY     := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup test demo lint package bench clean screenshots

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/ruff check .

package: setup
	$(PY) scripts/package.py

bench: setup
	$(PY) bench/run.py

screenshots: setup
	$(PY) scripts/screenshots.py

clean:
	rm -rf .build dist demo-output .pytest_cache .ruff_cache
