# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv, installs perfmoco, runs it on a synthetic study
#   make test   - creates .venv, installs perfmoco + test tools (itk-elastix for the
#                 iterative baseline, Chromium for the report test), runs lint and tests
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-all setup lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # the CPU build, before anything else can pull CUDA
	$(PIP) -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e ".[test,iterative]"
	bash scripts/install_browser.sh
	touch $(TEST_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/perfmoco demo --out out/demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check perfmoco gadgets tests benchmarks

test: $(TEST_STAMP)
	$(BIN)/ruff check perfmoco gadgets tests benchmarks
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .pytest_cache
