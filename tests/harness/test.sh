#!/bin/bash
# test.sh -- everything the test suite needs, then the suite (README: `make test`).
#   1. the Python venv (tests/harness/venv.sh, pinned by tests/constraints.txt)
#   2. the linter and formatter check (ruff, configured in pyproject.toml): seconds
#   3. the local OpenStack (tests/harness/cloud.sh up: installs, starts or reuses it)
#   4. pytest over tests/unit, tests/functional and tests/integration
# Extra arguments go to pytest (e.g. `make test ARGS="-k flip"`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export VMOPS_HOME=${VMOPS_HOME:-/var/tmp/vmops}
LINTED="_utils _modules _runners _states tests bench"
T0=$(date +%s)
VENV=$(bash "$ROOT/tests/harness/venv.sh" | tail -n 1)
T1=$(date +%s)
(cd "$ROOT" && "$VENV/bin/ruff" check --quiet $LINTED && "$VENV/bin/ruff" format --check --quiet $LINTED) \
  || { echo "[test] ruff: fix the above (make lint-fix formats and sorts imports)" >&2; exit 1; }
bash "$ROOT/tests/harness/cloud.sh" up
T2=$(date +%s)
echo "[test] venv ready in $((T1 - T0))s, local cloud ready in $((T2 - T1))s"
cd "$ROOT"
# a short private basetemp: it holds the salt daemons' unix sockets; --durations: the 25
# slowest tests at the end of the log (what to trim when the suite nears its budget)
exec "$VENV/bin/python" -m pytest --basetemp="$VMOPS_HOME/pt" -W ignore::DeprecationWarning --durations=25 "$@"
