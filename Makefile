# `make demo` and `make test` are the contract with users (README); CI runs `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip warns once per local wheel location it skips; the warnings are harmless here.
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
QUIET := 2>&1 | { grep -v "is ignored" || true; }
COMMA := ,

.PHONY: setup demo test bench clean browser notebooks

# A step of the setup, said before it starts and timed when it ends: $(call step,what,command).
define step
	@echo "setup: $(1) ..."; start=$$(date +%s); $(2); echo "setup: $(1): done in $$(( $$(date +%s) - start )) s"
endef

setup: $(STAMP)

# torch and torchvision first (large, CUDA build, from local disk where available), then
# the pinned stack and the project itself, editable. Re-runs only when the pins change.
$(STAMP): pyproject.toml constraints.txt
	$(call step,a virtual environment in $(VENV),test -x $(PY) || $(PYTHON) -m venv $(VENV))
	$(call step,torch and torchvision (the largest step: minutes),$(PIP) torch torchvision $(QUIET))
	$(call step,Ray Tune + Optuna + MLflow + Plotly + test tools (pinned in constraints.txt),$(PIP) -e '.[sweep$(COMMA)png$(COMMA)test]' $(QUIET))
	@touch $@

# The quickstart sweep on the offline digits data; a new experiment name per run so a
# second `make demo` does not collide with the first (resume one with launch.py --resume).
demo: setup
	$(PY) launch.py --space quickstart --experiment quickstart-$$(date +%Y%m%d-%H%M%S)

test: setup browser
	$(PY) -m pytest

# JupyterLab (the notebooks extra, installed on first use) on the analysis notebooks, on
# 127.0.0.1 only; they read the most recent sweep in results/. As root (a container),
# JupyterLab needs --allow-root.
notebooks: setup
	$(PIP) -e '.[notebooks]' $(QUIET)
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --notebook-dir=analysis/notebooks \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root) $(JUPYTER_FLAGS)

# Headless Chromium (Debian's package) for the report's rendering test and PNG export.
# Tests only: `make demo` needs no root and no system package.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

bench: setup
	$(PY) benchmarks/optim_step.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
