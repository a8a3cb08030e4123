# Every target creates the virtualenv on first use, so a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# A marker expression for `make test`, combined with the exclusion of benchmarks and long checks
# (`make quality` runs those): MARK="not slow".
MARK ?=
TEST_MARK := $(if $(strip $(MARK)),($(MARK)) and not benchmark and not long,not benchmark and not long)

.PHONY: run test quality lint audit fuzz bench bench-micro load kinds chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/campaign-engine up $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "$(TEST_MARK)" $(ARGS)

# The engine's quality bars on both example scenarios, the long one included (about 3 minutes).
quality: $(STAMP)
	$(BIN)/python -m pytest tests/test_engine_backtest.py -m "not benchmark" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) audit

# Known vulnerabilities of the installed packages; needs PyPI's JSON API, and fails saying so without it.
audit: $(STAMP)
	$(BIN)/python .ci/audit.py

# The API fuzzed from its OpenAPI document at length (the test suite runs 1,000 cases); CASES=n to change.
CASES ?= 20000
fuzz: $(STAMP)
	CE_FUZZ_CASES=$(CASES) $(BIN)/python -m pytest tests/test_api_fuzz.py -s --timeout=0 $(ARGS)

# The real fleet at several campaign counts against its two ceilings; options through ARGS.
bench: $(STAMP)
	$(BIN)/campaign-engine bench $(ARGS)

# The pytest benchmarks (the ledger's scripts under each fsync policy).
bench-micro: $(STAMP)
	$(BIN)/python -m pytest -m benchmark -s $(ARGS)

# locustfiles/steady.py at a fixed rate beside `campaign-engine up --campaigns N` on ports of its own;
# CSV files and the summary in .run/load/. Options through ARGS: --campaigns, --duration, --users, --ops-rate.
load: $(STAMP)
	$(BIN)/python -m locustfiles.load $(ARGS)

# Every named kind of market (common/market/kinds.py) of a seed set, backtested and scored:
# `make kinds SET=tuning` for the seeds choices are made on, `make kinds` for the held-out ones.
SET ?= held-out
SCORER ?= ../shared/tools/score.py
kinds: $(STAMP)
	$(BIN)/campaign-engine scenario kinds --set $(SET) --out-dir .run/kinds/$(SET)
	@for f in .run/kinds/$(SET)/*-[0-9]*.json; do \
	  $(BIN)/campaign-engine backtest $$f --out $${f%.json}.jsonl --no-progress > /dev/null || exit 1; \
	  $(BIN)/python $(SCORER) $$f $${f%.json}.jsonl > $${f%.json}.score || true; \
	  $(BIN)/python -c 'import json, sys; d = json.load(open(sys.argv[1])); print(sys.argv[2].ljust(16), *(k + " " + format(d[k], ".4f") for k in sys.argv[3:]))' \
	    $${f%.json}.score $$(basename $${f%.json}) efficiency efficiency_p10 waste_share violations mismatches; \
	done

# A live fleet for 1,000 ticks while workers, Redis and a host's link are killed, stopped and cut
# (campaign-engine chaos, docs/operations.md); the report in chaos.json. The cut of a host needs root
# (a network namespace). Options through ARGS: --seed, --tick-seconds, --campaigns, --no-netns.
chaos: $(STAMP)
	$(BIN)/campaign-engine chaos --ticks 1000 $(ARGS)

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
