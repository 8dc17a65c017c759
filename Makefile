# Two commands: `make demo` (install into .venv, then run the CPU demo) and `make test` (install, then run the tests;
# `make test-fast` leaves out the tests marked slow). `make gpu-check` runs the GPU tests and benchmark on a GPU.
# The virtual environment is created on first use and reused while it is complete and pyproject.toml is unchanged.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install browser bench gpu-check notebooks clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dhanalysis demo

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q

# the report page's test loads it in headless Chromium: Debian's package where the machine allows installing it
# (root and apt), else that one test is skipped with its reason
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && timeout 300 apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
	  && echo "installed Debian's chromium for the report page's browser test"; } \
	  || echo "no chromium: the report page's browser test will be skipped"

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
