# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB := labextension
STAMP := $(VENV)/.installed
# The oldest and newest Python that pyproject.toml claims; each gets its own venv.
PYTHONS ?= 3.10 3.13
# What runs under every other claimed Python: the core (with the websocket front), the
# client and CLI, the rpc methods (fs streaming, http/request, the network proxy), the
# renderer, the exec daemon's websocket handover (websockets' sans-I/O API on every
# version: Python 3.10 gets websockets 16), and the sandbox (its syscalls go through ctypes).
PYTHONS_TESTS ?= tests/wire tests/core tests/rpc tests/transports tests/cli tests/client tests/render \
  tests/daemon/test_handover.py tests/daemon/test_resume.py \
  tests/sandbox/test_enforcement.py tests/sandbox/test_policy.py tests/sandbox/test_non_root.py \
  tests/sandbox/test_escape.py tests/sandbox/test_fs.py
PYENV_ROOT ?= $(HOME)/.pyenv

.PHONY: install run serve test test-py test-ts test-pythons chromium lint typecheck bench clean

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

# The browser tests need Chromium, and Codex's own exec-server needs bubblewrap for the
# transparent TCP it is compared with: Debian's packages, installed when missing (root,
# else sudo).
chromium:
	@{ command -v chromium && command -v bwrap; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing chromium and bubblewrap (apt) for the browser and transparent TCP tests"; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium bubblewrap >/dev/null; }

# Coverage data lives under /tmp, not in the checkout: children started in a sandbox
# (agents get `workspace-write` by default) may write there, and are measured too.
export COVERAGE_FILE ?= /tmp/jupyter-exec-coverage-$(shell id -u)$(subst /,-,$(CURDIR))/.coverage

test-py: install chromium
	mkdir -p $(dir $(COVERAGE_FILE))
	rm -f $(COVERAGE_FILE) $(COVERAGE_FILE).*
	JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS=false $(BIN)/coverage run -m pytest tests
	$(BIN)/coverage combine -q
	$(BIN)/coverage report --skip-covered --sort=cover | tail -n 25
	@$(BIN)/coverage report > /dev/null || (echo "coverage is below fail_under (pyproject.toml)"; exit 2)

# A venv per claimed Python, with the small test extra and no npm build (the panel is
# not under test there). A claimed Python that is missing fails loudly.
.venv-%/.installed: pyproject.toml
	@py=""; for c in python$* $(PYENV_ROOT)/versions/$*.*/bin/python$*; do \
	  if "$$c" -c "" 2>/dev/null; then py="$$c"; break; fi; done; \
	  if [ -z "$$py" ]; then echo "python$* not found (a claimed Python): pyenv install $*"; exit 2; fi; \
	  "$$py" -m venv .venv-$*
	.venv-$*/bin/pip install -q --upgrade pip
	HATCH_BUILD_NO_HOOKS=true .venv-$*/bin/pip install -q -e '.[test-core]'
	touch $@

# The core, client and CLI tests under each of PYTHONS (no coverage).
test-pythons: $(foreach v,$(PYTHONS),.venv-$(v)/.installed)
	@for v in $(PYTHONS); do \
	  echo "== Python $$v: $(PYTHONS_TESTS)"; \
	  JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS=false .venv-$$v/bin/python -m pytest -q -p no:cacheprovider $(PYTHONS_TESTS) || exit 1; \
	done

test: lint typecheck test-ts test-py test-pythons

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-* $(LAB)/node_modules $(LAB)/lib jupyter_exec/labextension .coverage
