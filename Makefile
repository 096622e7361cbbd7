PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install check test lint typecheck demo bench bench-lookups soak clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e . --group dev
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy --strict relay

# The inner loop (under a minute): lint, types, and every test not marked slow (none that starts `relay serve`,
# the `relay` command or a browser as a process, no fault injection; tests/conftest.py marks them). `make test`
# is the full suite CI runs.
check: install lint typecheck
	scripts/test-prereqs
	$(BIN)/pytest -q -m "not slow"

test: install lint typecheck
	scripts/test-prereqs
	$(BIN)/pytest -q

demo: install
	$(BIN)/relay demo --duration $${DURATION:-30}

bench: install
	$(BIN)/python -m bench.run

# Live availability lookups (about 45 s): p99 from the cache at 500/s and live from the SX.e and X3 simulators,
# written into the "Live lookups" section of docs/benchmarks.md.
bench-lookups: install
	$(BIN)/python -m bench.lookups

soak: install
	$(BIN)/python -m pip install -q --group fuzz
	RELAY_FUZZ_EXAMPLES=10000 $(BIN)/pytest -q -p no:cacheprovider tests/unit/test_bod_fuzz.py tests/integration/test_fuzz_ingest.py tests/integration/test_hostile_fields.py
	$(BIN)/python fuzz/atheris_targets.py json -max_total_time=180 -print_final_stats=1
	$(BIN)/python fuzz/atheris_targets.py bod -max_total_time=180 -print_final_stats=1
	$(BIN)/pytest -q tests/faults --soak

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
