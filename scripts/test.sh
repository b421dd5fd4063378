#!/usr/bin/env bash
# The test suite as CI runs it: a throw-away PostgreSQL on localhost, then pytest with the given arguments
# (the Makefile passes the marker selection: `make test` = not slow, `make test-slow` = slow; never gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
source scripts/pg.sh
pg_start
trap pg_stop EXIT
export DOCTUNE_TEST_PG_URL="$PG_URL"
set +e
"$VENV/bin/pytest" --durations=10 "$@"
rc=$?
set -e
# pytest exit 5 = no tests collected: that is a failure for us.
exit $rc
