# The two commands a newcomer types: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,torch,lightning,transformers,notebook]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
	$(BIN)/python bench/bench_histories.py
	$(BIN)/python bench/bench_process.py
	$(BIN)/python bench/bench_executors.py
	$(BIN)/python bench/bench_datahash.py
	$(BIN)/python bench/bench_cli_table.py
	$(BIN)/python bench/bench_integrations.py

clean:
	rm -rf $(VENV) demo-project
