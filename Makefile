# BoneSentinel — the README's two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: run test install install-dev lint format bench clean model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Install and start the dashboard on the bundled model and a local SQLite file (var/).
run: install
	$(BIN)/streamlit run dashboard/app.py --server.port $(PORT)

## Install and run the whole test suite.
test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/history.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## Reproduce the bundled model from the knee radiographs beside the project (CPU: ~2 h).
KNEE ?= ../shared/datasets/knee-kl
KNEE_ARGS := --dataset folders --data-dir $(KNEE)
model: install-dev
	$(BIN)/python -m training.train $(KNEE_ARGS) --out runs/knee-oa --input-size 128 --epochs 28 --batch-size 32 \
	  --lr 3e-3 --patience 10 --seed 7 --name bonesentinel-knee-oa --version 1.0.0
	$(BIN)/python -m training.train $(KNEE_ARGS) --out runs/knee-oa-160 --input-size 160 --epochs 12 --batch-size 32 \
	  --lr 1e-3 --warmup-epochs 0 --patience 12 --seed 7 --init-weights runs/knee-oa --name bonesentinel-knee-oa --version 1.0.0
	$(BIN)/python -m training.evaluate --bundle runs/knee-oa-160 $(KNEE_ARGS) --split val
	$(BIN)/python -m pip download --quiet --no-deps scipy==1.9.3 matplotlib mahotas -d runs/wheels
	$(BIN)/python -m training.gate --bundle runs/knee-oa-160 $(KNEE_ARGS) --wheel-dir runs/wheels
	rm -rf core/bundled/knee-oa && mkdir -p core/bundled/knee-oa
	cp runs/knee-oa-160/model.keras runs/knee-oa-160/card.json runs/knee-oa-160/gate.npz core/bundled/knee-oa/
