# make demo: install into .venv and compare every assumption on the digits data.
# make test: install into .venv and run the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

# make test-arviz1: the ArviZ-facing tests again under ArviZ 1.x in .venv-arviz1 (Python >= 3.12).
VENV1 ?= .venv-arviz1
PY1 := $(VENV1)/bin/python
STAMP1 := $(VENV1)/.installed
# A Python >= 3.12: python3.13 / python3.12 on PATH, else one that pyenv has (PYENV_VERSION).
PYTHON312 ?= $(shell for v in 3.12 3.13; do \
	  python$$v -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo python$$v; exit; }; \
	  p=$$(pyenv versions --bare 2>/dev/null | grep "^$$v" | tail -1); \
	  [ -n "$$p" ] && PYENV_VERSION=$$p python$$v -c 'import sys' 2>/dev/null && { echo "PYENV_VERSION=$$p python$$v"; exit; }; \
	done)

# Fashion-MNIST (Debian's dataset-fashion-mnist, the one dataset that needs an install step):
# installed where missing and we are root; elsewhere its tests skip and say how to install it.
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test test-fast fashion-data test-arviz1 print-python312 bench docs lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# The CPU build of torch first: pip takes the local CPU wheel where the machine has one (its
	# find-links); where it has none, the range in pyproject.toml decides.
	$(PIP) install -q torch==2.13.0 2>/dev/null || true
	$(PIP) install -q -e '.[dev,nutpie]'
	touch $(STAMP)

# torch for Python 3.12 comes from the package index (a CUDA build, 4.7 GB in the venv, about
# 2 minutes with pip's cache warm); arviz>=1 brings arviz-base, arviz-stats and arviz-plots.
$(STAMP1): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "make test-arviz1 needs a Python >= 3.12 (python3.12 on PATH or in pyenv); none found"; exit 1; }
	test -x $(PY1) || $(PYTHON312) -m venv $(VENV1)
	$(PY1) -m pip install -q torch==2.13.0
	$(PY1) -m pip install -q -e '.[dev,nutpie]' 'arviz>=1'
	touch $(STAMP1)

demo: $(STAMP)
	$(VENV)/bin/ppl-models compare digits

fashion-data:
	@test -f $(FASHION) || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    dataset-fashion-mnist >/dev/null; } || echo "could not install dataset-fashion-mnist"
	@test -f $(FASHION) || echo "no Fashion-MNIST: its tests skip (apt-get install dataset-fashion-mnist)"

# the whole suite, the 15 slowest tests listed at the end
test: $(STAMP) fashion-data
	CI=$${CI:-1} $(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# the inner loop: everything but the slow statistical checks
test-fast: $(STAMP) fashion-data
	CI=$${CI:-1} $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

test-arviz1: $(STAMP1) $(STAMP) fashion-data
	CI=$${CI:-1} $(PY1) -m pytest -q -n 2 --dist loadfile -m arviz

print-python312:
	@echo $(PYTHON312)

bench: $(STAMP)
	$(PY) benchmarks/bench_discrete.py
	$(PY) benchmarks/bench_ar.py --threads 1
	$(PY) benchmarks/bench_nade.py
	$(PY) benchmarks/bench_programs.py
	$(PY) benchmarks/bench_scale.py

SOURCES := ppl_models inference tests benchmarks examples docs/tables.py

lint: $(STAMP)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(SOURCES)
	$(VENV)/bin/ruff format $(SOURCES)

# the docs' tables from the committed benchmark results (benchmarks/results/*.json)
docs: $(STAMP)
	$(PY) docs/tables.py

clean:
	rm -rf $(VENV) $(VENV1) reports
