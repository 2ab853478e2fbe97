# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv, installs perfmoco, runs it on a synthetic study
#   make test   - creates .venv, installs perfmoco + test tools, runs lint and tests
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install -c constraints.txt

.PHONY: demo test test-all setup lint bench train clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # CPU build, installed before anything else
	$(PIP) -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/perfmoco demo --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check perfmoco gadgets tests benchmarks

test: $(STAMP)
	$(BIN)/ruff check perfmoco gadgets tests benchmarks
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .pytest_cache
