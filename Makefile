# `make demo` and `make test` bootstrap .venv themselves: it is (re)built when missing
# or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser postgres bench soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lora-pipeline demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint browser postgres
	$(BIN)/python -m pytest

# The report's browser test renders the page in headless Chromium (Debian's package),
# installed here when missing. If it cannot be installed, that test fails and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the report's browser test"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	} || echo "warning: could not install chromium: the report's browser test will fail"

# The PostgreSQL store's tests start a throwaway server (tests/postgres.py) from the server
# binaries (initdb, pg_ctl): on PATH, or Debian's /usr/lib/postgresql/<version>/bin. Debian's
# package is installed here when neither has them.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql for the PostgreSQL store's tests"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	} || echo "warning: could not install postgresql: the PostgreSQL store's tests will fail"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py

# A longer crash soak than the CI-sized one in tests/reliability/test_crash.py: the pipeline
# killed (SIGKILL, SIGTERM, SIGINT) at random moments against a faulty emulator, restarted,
# then checked; prints the figures of docs/reliability.md. SOAK_ARGS to change its size.
SOAK_ARGS ?= --subjects 200 --kills 100 --graceful-every 4 --seed 7
soak: $(STAMP)
	$(BIN)/python -m tests.reliability.harness $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
