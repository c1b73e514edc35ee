# Everything the project needs is installed by these targets; nothing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv install demo app chromium test test-full lint bench clean reproduce-table toy-backbone reproduce-table-toy reproduce-ablations-toy

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

venv install: $(STAMP)

demo: $(STAMP)
	$(PY) -m interactdiffusion.cli.demo

# The layout editor in the browser (interactdiffusion-app; ARGS="backbone=sd15 weights=..." for others).
app: $(STAMP)
	$(VENV)/bin/interactdiffusion-app $(ARGS)

# The browser test (tests/test_app_browser.py) drives the system Chromium, never a downloaded one:
# installed here with apt-get when missing; where that is not possible the test is skipped with the reason.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		sudo=; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
		echo "installing Chromium for the browser test (apt-get install chromium)"; \
		{ $$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium; } \
			|| echo "could not install Chromium: the browser test will be skipped"; \
	else echo "no apt-get: install Chromium yourself, or the browser test will be skipped"; fi

test: $(STAMP) chromium
	$(PY) -m pytest -q -x --timeout=900

test-full: $(STAMP) chromium
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

# The ablations of the interaction module on HOI-Shapes (full InteractDiffusion, GLIGEN, w/o instance
# embedding, w/o role embedding, w/o action tokens, union box) over SEEDS training seeds (default 2);
# writes experiments/hoi-shapes/ablations.md. Runs already in logs/toy (the table's) are reused.
reproduce-ablations-toy: $(STAMP)
	$(PY) -m interactdiffusion.cli.toy ablations --seeds $(or $(SEEDS),2) --jobs $(or $(JOBS),2) $(ARGS)
