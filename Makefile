# Every target installs first if needed: `make run` and `make test` work from a clean clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
# CI adds `nudenet` (an opt-in extra: AGPL weights) so its tests run instead of skipping.
EXTRAS ?= dev

.PHONY: install run test test-fast demo bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: install
	$(BIN)/moderation serve

test: install
	$(BIN)/python -m pytest -q -rs

test-fast: install
	$(BIN)/python -m pytest -q -m 'not integration'

demo: install
	$(BIN)/moderation demo

bench: install
	$(BIN)/moderation bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var build *.egg-info
