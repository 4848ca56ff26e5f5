# worldline: `make demo` runs the main job, `make test` the test suite. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.worldline-installed
TORCH  := torch==2.13.0
EXTRAS := envs,text,curate,serve,dev

.PHONY: setup demo demo-debug test test-slow bench clean

# torch first, pinned: a bare `torch` requirement on a machine without it pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/worldline demo --out demo

demo-debug: setup
	$(BIN)/worldline demo --out demo-debug --size debug

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo demo-debug runs .pytest_cache
