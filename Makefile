# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - install, then RL-train the embedded SmolLM2-135M on generated arithmetic (CPU)
#   make test   - install, then run the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
ALGO ?= reinforce_rej

.PHONY: setup test demo lint bench bench-env

setup:
	@bash scripts/setup_env.sh

# The suite runs in a random order (pytest-randomly); the seed is printed first, and
# `make test SEED=N` repeats that order.
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif

test: lint
	@echo "test order: --randomly-seed=$(SEED)"
	$(PY) -m pytest -q -p randomly --randomly-seed=$(SEED) tests

demo: setup
	$(PY) -m openrlhf_ext.cli.train_ppo_ray --advantage_estimator $(ALGO)

lint: setup
	$(PY) -m ruff check openrlhf_ext tests benchmarks scripts
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/bench_advantages.py
	$(PY) benchmarks/bench_reward.py

# TRL for benchmarks/bench_step.py's comparison; its requirements agree with the project's pins, so
# it goes into the project environment (pip installs trl alone).
bench-env: setup
	PIP_CONSTRAINT=scripts/constraints-cpu.txt $(PY) -m pip install -q trl==1.16.0
