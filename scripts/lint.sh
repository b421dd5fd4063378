#!/usr/bin/env bash
# Static checks, as CI runs them (first thing in `make test`): ruff, the import contracts (the floors of README's
# "Architecture", pyproject [tool.importlinter]) and mypy.
#
# import-linter reads the package from where Python imports it. The folders agents/, graph/, trainer/ ... map into
# `doctune` only when installed (pyproject `package-dir`), so the contracts are checked on a throw-away install of
# this tree (no dependencies, into a temp dir), from outside the checkout (so the bare doctune/ folder is not
# what `import doctune` finds).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
ROOT=$PWD
"$VENV/bin/ruff" check .
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf build  # setuptools' build dir keeps files deleted from the tree: they would be linted as installed
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --target "$tmp/site" . >/dev/null
(cd "$tmp" && PYTHONPATH="$tmp/site" "$ROOT/$VENV/bin/lint-imports" --no-cache "$ROOT/pyproject.toml")
if [ "${DOCTUNE_LINT_MYPY:-1}" = 1 ]; then
  "$VENV/bin/mypy"
fi
