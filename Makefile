# Everything the project needs is installed by these targets; nothing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv install demo test test-full lint bench clean reproduce-table toy-backbone reproduce-table-toy

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

venv install: $(STAMP)

demo: $(STAMP)
	$(PY) -m interactdiffusion.cli.demo

test: $(STAMP)
	$(PY) -m pytest -q -x --timeout=900

test-full: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" --timeout=3600

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) logs .pytest_cache

# The paper's table (REFERENCE §5): `make reproduce-table DRY_RUN=1` checks inputs and prints the plan;
# PROFILE=tiny runs the whole machinery offline; LAUNCHER=slurm submits rows; ROWS=sd14,real picks rows;
# WEIGHTS="interactdiffusion_ours=/path/adapter.safetensors" adds our own trained adapter.
reproduce-table: $(STAMP)
	$(PY) -m interactdiffusion.cli.reproduce --profile $(or $(PROFILE),paper) $(if $(DRY_RUN),--dry-run) \
		$(if $(ROWS),--rows $(ROWS)) $(if $(LAUNCHER),--launcher $(LAUNCHER)) \
		$(foreach w,$(WEIGHTS),--weights $(w)) $(ARGS)

# HOI-Shapes (experiments/hoi-shapes/README.md): re-train the caption-only backbone (~25 min on 2 cores)
# into experiments/hoi-shapes/backbone, or reproduce the comparison on the committed backbone:
# SEEDS=3 training seeds, JOBS subprocesses at a time; writes experiments/hoi-shapes/results.md.
toy-backbone: $(STAMP)
	$(PY) -m interactdiffusion.cli.toy backbone $(ARGS)

reproduce-table-toy: $(STAMP)
	$(PY) -m interactdiffusion.cli.toy table --seeds $(or $(SEEDS),1) --jobs $(or $(JOBS),2) $(ARGS)
