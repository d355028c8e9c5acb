# The two set-up commands (README): `make demo` and `make test`. Each installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
# Scripts and Ray jobs started by the tests find this venv's `python` and `ray` first.
export PATH := $(abspath $(VENV))/bin:$(PATH)
STAMP := $(VENV)/.installed
# The MediaPipe side environment (scripts/install.sh); AVFACE_NO_MEDIAPIPE=1 goes without it.
ifneq ($(AVFACE_NO_MEDIAPIPE),1)
MEDIAPIPE := .venv-mediapipe/bin/python
endif

.PHONY: install demo test test-fast lint bench

$(STAMP): requirements.lock.txt pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

# A deleted side environment is rebuilt even when the main venv is up to date.
.venv-mediapipe/bin/python:
	bash scripts/install.sh $(VENV)

install: $(STAMP) $(MEDIAPIPE)

demo: install
	$(PY) pipelines/main.py

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --timeout=900 tests

# The development lane: no test that starts Ray, no slow end-to-end test (`make test` runs them all, as CI does).
test-fast: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --timeout=900 -m "not ray and not slow" tests

# Every benchmark at its full size (tests/test_benchmarks.py runs each at its smallest).
bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
