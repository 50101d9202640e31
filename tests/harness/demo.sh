#!/bin/bash
# demo.sh -- the README's demo command (`make demo`): venv + local cloud, then the demo.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export VMOPS_HOME=${VMOPS_HOME:-/var/tmp/vmops}
VENV=$(bash "$ROOT/tests/harness/venv.sh" | tail -n 1)
bash "$ROOT/tests/harness/cloud.sh" up
exec "$VENV/bin/python" "$ROOT/tests/harness/demo.py"
