# bnrepro: `make reproduce-figure1` and `make test` set everything up on a fresh clone.
# The first supported Python found (the project needs 3.10-3.12).
PYTHON ?= $(firstword $(foreach p,python3.11 python3.12 python3.10 python3,$(shell command -v $(p) 2>/dev/null)))
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
export BNREPRO_DATA ?= $(DATA)
RUNS ?= runs
PORT ?= 6006

.PHONY: help venv data reproduce-figure1 reproduce-claims figures test test-slow bench lint format

help:
	@echo "make reproduce-figure1  train both MNIST nets (3 seeds, 50k steps) and draw results/figure1/"
	@echo "make reproduce-figure2  Figures 2 and 3 on the Fashion-MNIST proxy (PRESET=cpu|gpu): results/figure2/"
	@echo "make reproduce-claims   turn each claim of the review into a measurement: results/claims/"
	@echo "make figures            redraw every figure under results/ from its logged CSV files"
	@echo "make test               fast tests (what CI runs); make test-slow for the long ones"
	@echo "make bench              steps/s of the harness against a conventional PyTorch loop"
	@echo "make lint               ruff check and format check"
	@echo "make dashboard          TensorBoard on the runs under $(RUNS)/: http://127.0.0.1:$(PORT)/"
	@echo "make wandb-sync         upload the offline wandb runs under $(RUNS)/ (needs wandb login)"

venv: $(VENV)/.installed

# The virtual environment is (re)built whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: venv
	$(PY) -m bnrepro.data --root $(DATA) --dataset all

reproduce-figure1: data
	$(PY) experiments/figure1.py run

reproduce-claims: data
	$(PY) experiments/claims.py run

figures: venv
	$(PY) experiments/figure1.py draw
	$(PY) experiments/figure2.py draw
	$(PY) experiments/claims.py draw

test: data
	$(PY) -m pytest

test-slow: data
	$(PY) -m pytest -m slow

bench: data
	$(PY) experiments/bench.py
	$(PY) experiments/bench_norm.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: dashboard wandb-sync

# Serves every run logged with logger.tensorboard=true, on loopback only.
dashboard: venv
	$(VENV)/bin/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port $(PORT)

# Offline runs sit at any depth (runs/<name>/<time>/, sweeps one or two levels deeper), which a
# shell glob cannot reach portably; each run directory is passed to `wandb sync` explicitly.
wandb-sync: venv
	@offline=$$(find $(RUNS) -type d -name 'offline-run-*' -path '*/wandb/*' -prune | sort); \
	if [ -z "$$offline" ]; then echo "no offline wandb runs under $(RUNS)/"; \
	else $(VENV)/bin/wandb sync $$offline; fi

.PHONY: reproduce-figure2
PRESET ?= cpu

# Figures 2 and 3 on the Fashion-MNIST proxy: PRESET=cpu (18-28 min on 2 cores) or gpu (1 GPU).
reproduce-figure2: venv
	$(PY) -m bnrepro.data --root $(DATA) --dataset fashion_mnist
	$(PY) experiments/figure2.py run --preset $(PRESET)
