# One command each for the main job and the tests; both set up .venv first.
#   make train    train with the default recipe, then score it on the MNIST test set
#   make test     run the test suite
# TORCH is the PyTorch requirement installed before lenet5; GPU users may set it to the build they
# want, e.g. `make train TORCH="torch==2.13.0"` after choosing a CUDA wheel index in pip's config.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
READY   = $(VENV)/.ready

.PHONY: setup train test bench clean

setup: $(READY)

$(READY): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

train: setup
	$(BIN)/lenet5 train

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_speed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
