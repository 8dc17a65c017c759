# Two commands: `make demo` (install into .venv, then run the CPU demo) and `make test` (install, then run the tests;
# `make test-fast` leaves out the tests marked slow). `make gpu-check` runs the GPU tests and benchmark on a GPU.
# The virtual environment is created on first use and reused while it is complete and pyproject.toml is unchanged.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install bench gpu-check notebooks clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dhanalysis demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/python -m bench

# on a machine with a CUDA GPU: the cuda-marked tests, then the benchmark on the GPU; without one, one line and exit 2
gpu-check: $(STAMP)
	@$(VENV)/bin/python -m bench.gpu_check

notebooks: $(STAMP)
	$(VENV)/bin/python notebooks/execute.py

clean-venv:
	rm -rf $(VENV)
