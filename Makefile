# Two entry points, each installs what it needs first: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xattr-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install lint browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the CPU wheel on local disk; a bare torch requirement would pull a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Reports and the MLflow UI are checked in a real headless browser (Debian chromium). Tests that
# need it skip, saying so, only where it cannot be installed (no apt-get or no root).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		($(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 ($(SUDO) apt-get update -qq >/dev/null 2>&1 && $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1)); } || \
		echo "warning: could not install chromium; browser checks will be skipped"

demo: $(STAMP)
	$(BIN)/xattr demo

test: $(STAMP) browser
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
