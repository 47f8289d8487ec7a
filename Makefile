# Quick start: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.clipgauge-installed

.PHONY: demo demo-full test lint bench world-table mutants clean-venv

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

# The main job: the shipped `world` study on world-clip (under 20 minutes on 2 CPU cores).
demo: $(STAMP)
	$(VENV)/bin/clipgauge study world --out studies/world

# The powered world study behind the README's results: 171 runs with a WiSE-FT sweep, 80.5
# minutes on 2 CPU cores shared with other jobs.
demo-full: $(STAMP)
	$(VENV)/bin/clipgauge study world-full --out studies/world-full

# The zero-shot table (docs/world-clip.md) of world-clip on every world task and domain.
world-table: $(STAMP)
	$(VENV)/bin/clipgauge world zeroshot --per-class 50 --no-progress

bench: $(STAMP)
	$(PY) benchmarks/bench_silhouette.py
	$(PY) benchmarks/bench_folders.py
	$(PY) benchmarks/bench_zeroshot.py
	$(PY) benchmarks/bench_cache.py
	$(PY) benchmarks/bench_methods.py
	$(PY) benchmarks/bench_world.py
	$(PY) benchmarks/bench_study_speed.py
	$(PY) benchmarks/bench_datapath.py

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml; docs/reliability.md).
# Incremental: results are cached under mutants/; `rm -rf mutants` for a fresh run.
MUTMUT_ARGS ?= --max-children 2
mutants: $(STAMP)
	$(VENV)/bin/mutmut run $(MUTMUT_ARGS)
	$(VENV)/bin/mutmut results

clean-venv:
	rm -rf $(VENV)
