# bnrepro: `make reproduce-figure1` and `make test` set everything up on a fresh clone.
# The first supported Python found (the project runs on 3.10-3.13; the committed figures were made
# with requirements.lock's versions for 3.11).
PYTHON ?= $(firstword $(foreach p,python3.11 python3.12 python3.13 python3.10 python3,$(shell command -v $(p) 2>/dev/null)))
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
export BNREPRO_DATA ?= $(DATA)
FETCH := $(PY) -m bnrepro.fetch --root $(DATA) --dataset
RUNS ?= runs
PORT ?= 6006
# The exact versions `make venv` installs (`make lock` writes it from pyproject.toml).
LOCK := requirements.lock
# A package index to take the lock's torch and torchvision from, e.g. the CPU-only build, with the
# lock's CUDA libraries left out; empty: they come from PyPI (a CUDA build on Linux x86_64).
TORCH_INDEX ?=
TORCH_PINS = $(shell grep -oE '^torch(vision)?==[^ ]+' $(LOCK))
# QUICK=1: reproduce-* and verify run their short protocols (results under runs/, not results/).
QUICK ?=
ifneq ($(filter-out 0 1,$(QUICK)),)
$(error QUICK=$(QUICK) is neither 1 nor 0. Nothing was run. Fix: QUICK=1 for the short protocols, or leave QUICK out)
endif
QUICK_FLAG := $(if $(filter 1,$(QUICK)),--quick)

.PHONY: help venv data reproduce-figure1 reproduce-claims reproduce-sensitivity figures docs verify
.PHONY: test test-slow
.PHONY: test-integration
.PHONY: browser bench gpu-check lint format lock

help:
	@echo "make reproduce-figure1  train both MNIST nets (3 seeds, 50k steps) and draw results/figure1/"
	@echo "make reproduce-figure2  Figures 2 and 3 on the Fashion-MNIST proxy: results/figure2/ (PRESET=cpu);"
	@echo "                        PRESET=gpu_plateau: 10,000 steps on one GPU, packed: results/figure2_gpu_plateau/"
	@echo "                        PRESET=cpu_plateau: the plateau campaign on 2 cores (hours; resumes"
	@echo "                        where a stop left it), runs in CAMPAIGNS=$(CAMPAIGNS)"
	@echo "make campaign-status    each campaign run's step, the steps left and the time left"
	@echo "make reproduce-claims   measure claims about the transform (scale invariance, ...): results/claims/"
	@echo "make reproduce-sensitivity  Figure 1 over optimizer x lr x init std (both nets, 3 seeds, 50k"
	@echo "                        steps; JOBS=2 processes, DEVICE=cuda on a GPU): results/sensitivity/"
	@echo "make reproduce-ics      internal covariate shift vs smoothness (Santurkar et al.) on the MNIST MLP:"
	@echo "                        plain, BN, noisy BN (3 seeds, 50k steps, JOBS=2 processes): results/ics/"
	@echo "make figures            redraw every figure under results/ from its logged CSV files"
	@echo "make docs               rewrite the numbers README.md and docs/ quote from results/"
	@echo "make verify             rerun every artifact under results/ and compare with the committed CSVs"
	@echo "                        QUICK=1: the tiny protocols of results/reference/ (about 3 minutes on 2 cores)"
	@echo "make reproduce-* QUICK=1  a short protocol into runs/<name>-quick/, never over results/"
	@echo "make test               fast tests (what CI runs first); make test-slow for the long ones"
	@echo "make test-integration   multi-process, DDP, browser and notebook tests (CI runs them second)"
	@echo "make browser            install Debian's chromium (as root) for the dashboard's browser test"
	@echo "make bench              steps/s of the harness against a conventional PyTorch loop"
	@echo "                        (and what TensorBoard logging costs a run)"
	@echo "make gpu-check          on a GPU: every CUDA test (pytest -m cuda), graphed vs eager steps, 224 px"
	@echo "                        throughput: results/gpu-check/ (one JSON, the tests' JUnit XML)"
	@echo "make lint               ruff check and format check"
	@echo "make lock               rewrite $(LOCK) from pyproject.toml with uv, keeping every pin still"
	@echo "                        allowed (UPGRADE=1: the newest versions allowed); make venv installs it"
	@echo "make dashboard          TensorBoard on the runs under $(RUNS)/: http://127.0.0.1:$(PORT)/"
	@echo "                        (python -m bnrepro.plot <sweep dir>: a sweep's curves as PNG and PDF)"
	@echo "make wandb-sync         upload the offline wandb runs under $(RUNS)/ (needs wandb login)"
	@echo ""
	@echo "make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu"
	@echo "                        the lock's torch and torchvision from that index (here the CPU-only build)"
	@echo "                        and none of its CUDA libraries; PyPI's default brings 3+ GB of them. Takes"
	@echo "                        effect when $(VENV)/ is built: rm -rf $(VENV) first to rebuild an existing one"

venv: $(VENV)/.installed

# The lock's exact versions (dev tools included), then the project itself, editable and without
# dependencies; pip check fails the build on a conflict. Rebuilt whenever pyproject.toml or the lock
# changes. With TORCH_INDEX, torch and torchvision come from that index first and the lock's CUDA
# libraries (nvidia-*, cuda-*, triton) are left out.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
ifeq ($(TORCH_INDEX),)
	$(PY) -m pip install --quiet -r $(LOCK)
else
	$(PY) -m pip install --quiet --index-url $(TORCH_INDEX) $(TORCH_PINS)
	grep -vE '^(nvidia-|cuda-|triton==)' $(LOCK) > $(VENV)/requirements-without-cuda.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements-without-cuda.txt
endif
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $@

# requirements.lock: one universal lock for every platform and every Python from 3.10 (the lowest
# pyproject.toml allows) on, written by uv (in .lock-tools/, installed on first use). An existing
# pin stays unless pyproject.toml no longer allows it; UPGRADE=1 takes the newest versions allowed
# instead. Then `make venv` rebuilds.
UV_VERSION := 0.13.10
UPGRADE ?=
lock: .lock-tools/bin/uv
	UV_PYTHON_DOWNLOADS=never .lock-tools/bin/uv pip compile pyproject.toml --extra dev \
		--universal --python-version 3.10 --custom-compile-command 'make lock' \
		$(if $(filter 1,$(UPGRADE)),--upgrade) --output-file $(LOCK)

.lock-tools/bin/uv:
	$(PYTHON) -m venv .lock-tools
	.lock-tools/bin/pip install --quiet uv==$(UV_VERSION)

data: venv
	$(FETCH) all

reproduce-figure1: venv
	$(FETCH) mnist
	$(PY) experiments/figure1.py run $(QUICK_FLAG)

reproduce-claims: data
	$(PY) experiments/claims.py run $(QUICK_FLAG)

# Figure 1 over the choices the paper does not state: 4 runs (net x optimizer), JOBS at a time;
# STEPS=N a shorter map than the committed 50,000 steps.
JOBS ?=
DEVICE ?=
STEPS ?=
reproduce-sensitivity: venv
	$(FETCH) mnist
	$(PY) experiments/sensitivity.py run $(QUICK_FLAG) $(if $(JOBS),--jobs $(JOBS)) \
		$(if $(DEVICE),--device $(DEVICE)) $(if $(STEPS),--steps $(STEPS))

# Figure 1 also under the public reproduction's protocol (figure1_momentum) and with binary
# input: redrawn here, not rerun by `make verify` (which reruns results/figure1/).
figures: venv
	$(PY) experiments/figure1.py draw
	$(PY) experiments/figure1.py draw --out results/figure1_momentum
	$(PY) experiments/figure1.py draw --out results/figure1_binary
	$(PY) experiments/figure1.py draw --out results/figure1_momentum_binary
	$(PY) experiments/figure2.py draw
	$(PY) experiments/claims.py draw
	$(PY) experiments/ics.py draw
	$(PY) experiments/ics_proxy.py draw
	$(PY) experiments/sensitivity.py draw
	$(PY) -m bnrepro.docs

# Rewrites the numbers that README.md and docs/*.md quote from results/ (bnrepro.docs); `make
# test` fails when a page in the tree differs from what this writes.
docs: venv
	$(PY) -m bnrepro.docs

# Reruns every artifact under results/ (QUICK=1: results/reference/) into runs/verify/<time>/
# and compares the CSV files; exits non-zero when one differs.
verify: data
	$(PY) experiments/verify.py $(QUICK_FLAG)

# The fast suite in TEST_JOBS pytest-xdist workers (one torch thread each): on the 2-core CI
# machine two workers take about half the time of one.
TEST_JOBS ?= 2
test: data
	$(PY) -m pytest -n $(TEST_JOBS)

test-slow: data
	$(PY) -m pytest -m slow

test-integration: data
	$(PY) -m pytest -m integration

# Debian's chromium for the browser test in tests/test_dashboard.py (which skips without it).
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium is installed: $$(command -v chromium || command -v chromium-browser)"; \
	else \
		DEBIAN_FRONTEND=noninteractive apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

bench: data
	$(PY) experiments/bench.py
	$(PY) experiments/bench_norm.py
	$(FETCH) fashion_mnist
	$(PY) experiments/bench_inception.py --device cpu --thread-split
	$(PY) experiments/bench_packed.py --device cpu
	$(PY) experiments/bench_loggers.py

# On a GPU machine (a few minutes on one H200): every test marked `cuda` under tests/ (pytest
# -m cuda, slow and integration ones included), the MLP and the Inception proxy step graphed vs
# eager, 224 px BN-Inception vs GoogLeNet. results/gpu-check/ gets one JSON (with each CUDA
# test's outcome) and the tests' JUnit XML; the target fails when a CUDA test does not pass.
# Then N packed members against N separate runs (experiments/bench_packed.py): packed.json.
gpu-check: data
	$(FETCH) fashion_mnist
	$(PY) experiments/bench_inception.py --device cuda --cuda-tests --json results/gpu-check/gpu-check.json
	$(PY) experiments/bench_packed.py --device cuda --members 1,3,9,15 --json results/gpu-check/packed.json

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: dashboard wandb-sync

# Serves every run under RUNS (TensorBoard logs each seed of a run as a TensorBoard run of its
# own, unless logger.tensorboard=false), on loopback only.
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

# Figures 2 and 3 on the Fashion-MNIST proxy: PRESET=cpu (37 min on 2 cores), gpu (1 GPU,
# 2,000 steps), gpu_plateau (1 GPU, 10,000 steps, the runs packed as members of five models) or
# cpu_plateau: the campaign of experiments/campaigns/figure2_cpu_plateau.yaml (hours of 2
# cores), trained into CAMPAIGNS/figure2_cpu_plateau/, outside the clone; every call trains
# what is missing and resumes what a stop interrupted. `make campaign-status` says where it is.
# HOURS=2.5: start only the runs expected to end within 2.5 hours (a machine lost then leaves
# no run half-trained).
CAMPAIGNS ?= $(HOME)/bnrepro-campaigns
CAMPAIGN_PLAN := experiments/campaigns/figure2_cpu_plateau.yaml
reproduce-figure2: venv
	$(FETCH) fashion_mnist
ifeq ($(PRESET),cpu_plateau)
	$(PY) -m bnrepro.campaign run $(CAMPAIGN_PLAN) --runs $(CAMPAIGNS)/figure2_cpu_plateau \
		$(if $(HOURS),--hours $(HOURS))
else
	$(PY) experiments/figure2.py run $(if $(QUICK_FLAG),--quick,--preset $(PRESET))
endif

.PHONY: campaign-status
campaign-status: venv
	$(PY) -m bnrepro.campaign status $(CAMPAIGN_PLAN) --runs $(CAMPAIGNS)/figure2_cpu_plateau

.PHONY: reproduce-ics

# Santurkar et al.'s diagnostics on the MNIST MLP: the plain, BN and noisy-BN nets with Figure 1's
# protocol, one process per net, JOBS at a time (default 2); STEPS=N a shorter protocol.
reproduce-ics: venv
	$(FETCH) mnist
	$(PY) experiments/ics.py run $(QUICK_FLAG) $(if $(JOBS),--jobs $(JOBS)) \
		$(if $(DEVICE),--device $(DEVICE)) $(if $(STEPS),--steps $(STEPS))
	$(FETCH) fashion_mnist && $(PY) experiments/ics_proxy.py run $(if $(QUICK_FLAG),--quick,--preset $(PRESET))
