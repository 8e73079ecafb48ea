# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB := labextension
STAMP := $(VENV)/.installed

.PHONY: install run serve test test-py test-ts lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(LAB)/node_modules/.stamp: $(LAB)/package.json
	cd $(LAB) && (npm ci --no-audit --no-fund || npm install --no-audit --no-fund)
	touch $@

# The panel is built by the hatch build hook during `pip install -e .`; it needs node_modules first.
$(STAMP): $(BIN)/python pyproject.toml $(LAB)/node_modules/.stamp
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

# JupyterLab on 127.0.0.1 with a fresh token, at notebooks/01-getting-started.ipynb; prints the URL.
run: install
	JUPYTER=$(BIN)/jupyter binder/run-lab.sh

serve: install
	$(BIN)/jupyter-exec serve --listen ws://127.0.0.1:0

lint: install
	$(BIN)/ruff check jupyter_exec tests bench
	$(BIN)/ruff format --check jupyter_exec tests bench

typecheck: install
	$(BIN)/mypy

test-ts: install
	cd $(LAB) && npm test

test-py: install
	rm -f .coverage .coverage.*
	JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS=false $(BIN)/coverage run -m pytest tests
	$(BIN)/coverage combine -q
	$(BIN)/coverage report --skip-covered --sort=cover | tail -n 25
	@$(BIN)/coverage report > /dev/null || (echo "coverage is below fail_under (pyproject.toml)"; exit 2)

test: lint typecheck test-ts test-py

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(LAB)/node_modules $(LAB)/lib jupyter_exec/labextension .coverage
