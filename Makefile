# Quick start: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.clipgauge-installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	@# Reuse a torch that is already importable (e.g. your own CUDA build); else the pinned CPU build.
	@if [ ! -x $(PY) ]; then \
		if $(PYTHON) -c "import torch" 2>/dev/null; then \
			$(PYTHON) -m venv --system-site-packages $(VENV); \
		else $(PYTHON) -m venv $(VENV); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

demo: $(STAMP)
	$(VENV)/bin/clipgauge measure --model world-clip --data world:shapes --json demo-measure.json

bench: $(STAMP)
	$(PY) benchmarks/bench_silhouette.py
	$(PY) benchmarks/bench_zeroshot.py
	$(PY) benchmarks/bench_cache.py

clean-venv:
	rm -rf $(VENV)
