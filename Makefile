# make demo: install into .venv and compare every assumption on the digits data.
# make test: install into .venv and run the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# The CPU build of torch first: a local wheel where the machine has one, else PyTorch's CPU
	# index; if neither answers, the range in pyproject.toml decides.
	$(PIP) install -q --no-index torch==2.13.0 2>/dev/null \
	  || $(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
	  || true
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ppl-models compare digits

test: $(STAMP)
	CI=$${CI:-1} $(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/bench_discrete.py
	$(PY) benchmarks/bench_ar.py --threads 1
	$(PY) benchmarks/bench_nade.py
	$(PY) benchmarks/bench_programs.py
	$(PY) benchmarks/bench_scale.py

lint: $(STAMP)
	$(VENV)/bin/ruff check ppl_models inference tests benchmarks examples

clean:
	rm -rf $(VENV) reports benchmarks/results
