# worldline: `make demo` runs the main job, `make test` the test suite. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.worldline-installed
TORCH  := torch==2.13.0
EXTRAS := envs,text,curate,ray,serve,agents,dev
PROCGEN := procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2 gym_notices

.PHONY: setup demo demo-debug test test-slow bench clean

# torch first, pinned: a bare `torch` requirement on a machine without it pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@# CoinRun: procgen-mirror's declared deps would downgrade numpy; its real needs are these four.
	$(BIN)/python -m pip install --quiet --no-deps $(PROCGEN) || echo "note: procgen not installed; the coinrun world is unavailable"
	@touch $(STAMP)

setup: $(STAMP)

# The play server's end-to-end test drives Debian's chromium headless; install it when missing and
# allowed (root, Debian reachable), else the test is skipped with the reason.
BROWSER := $(VENV)/.chromium-checked
$(BROWSER): | $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	    && echo "installed Debian chromium for the browser test" \
	    || echo "note: could not install Debian chromium; the browser test will be skipped"; }
	@touch $@

demo: setup
	$(BIN)/worldline demo --out demo

demo-debug: setup
	$(BIN)/worldline demo --out demo-debug --size debug

test: setup $(BROWSER)
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo demo-debug runs .pytest_cache
