# The two commands: `make test` and `make demo`. Both create .venv when it is missing.
# The venv sees the system's site-packages, so a torch that is already installed (a CUDA build,
# for example) is used as it is; only when none imports is the pinned CPU build installed.
# `make demo` installs tubelet alone; `make test` (and `make install`) add the test extras
# (pytest, transformers, triton: about 1 GB).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test demo install clean

$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[test]"
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/tubelet demo --out demo_run

clean:
	rm -rf $(VENV) demo_run
