# One command each for the main job and the tests; both set up .venv first.
#   make train    train with the default recipe, then score it on the MNIST test set
#   make test     run the test suite (as root, first installs Debian's chromium for the browser test)
#   make lesson   open notebooks/lesson.ipynb, the first hour with LeNet-5, in JupyterLab
# `make train` installs only what training and reading need: PyTorch, lenet5 and its `plots` extra
# (a run draws its pictures at the end). `make test` (and `make setup`) adds the `dev` extra to the
# same .venv: every other extra (web, onnx, wandb, tensorboard, notebook), pytest, Playwright, ruff, mypy.
# TORCH is the PyTorch requirement installed before lenet5; GPU users may set it to the build they
# want, e.g. `make train TORCH="torch==2.13.0"` after choosing a CUDA wheel index in pip's config.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
READY_TRAIN = $(VENV)/.ready-train
READY_DEV   = $(VENV)/.ready-dev

.PHONY: setup setup-train browser train test lint lesson bench bench-web clean

setup: $(READY_DEV)
setup-train: $(READY_TRAIN)

$(READY_TRAIN): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[plots]"
	touch $@

$(READY_DEV): $(READY_TRAIN)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

train: setup-train
	$(BIN)/lenet5 train

lesson: setup
	$(BIN)/jupyter lab notebooks/lesson.ipynb

# The code as ruff formats it, free of ruff's findings (pyproject.toml says which rules; ruff is pinned
# there, as each version formats a little differently), and its types as mypy checks them ([tool.mypy]).
lint: setup
	$(BIN)/ruff format --check src
	$(BIN)/ruff check src
	$(BIN)/mypy

# Three workers (pytest-xdist), even on two cores: much of the suite waits on subprocesses,
# servers and the browser (4 min 07 s against 4 min 52 s with two, run in turn on a 2-core Xeon).
test: setup browser lint
	$(BIN)/python -m pytest -q -n 3

# The web demo's browser test drives Debian's chromium through Playwright (no browser download).
# As root on Debian (CI) it is installed when missing; elsewhere that test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the browser test"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

bench: setup-train
	$(BIN)/python bench/bench_speed.py

bench-web: setup
	$(BIN)/python bench/load_web.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache
