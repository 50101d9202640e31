#!/bin/bash
# venv.sh -- the Python environment of the tests and the demo (idempotent).
#
# A venv keyed by the hash of setup.cfg + tests/constraints.txt under $VMOPS_HOME
# (default /var/tmp/vmops), so that clones of the repo share it and a change of pins
# builds a new one.  Prints the venv's path on its last line.
# Also points $VMOPS_HOME/bin/salt-minion at this venv: the test hypervisors start
# their guests' minions with it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VMOPS_HOME=${VMOPS_HOME:-/var/tmp/vmops}
PYTHON=${PYTHON:-python3}
key=$(cat "$ROOT/setup.cfg" "$ROOT/tests/constraints.txt" | sha256sum | cut -c1-12)
VENV=$VMOPS_HOME/venv-$key
mkdir -p "$VMOPS_HOME/bin"
if [ ! -f "$VENV/.complete" ]; then
  echo "[venv] building $VENV (a few minutes on a cold cache)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # gcc + headers: salt and timelib ship only sdists
  command -v gcc >/dev/null || { apt-get update -q && apt-get install -y -q build-essential python3-dev; } >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$ROOT/tests/constraints.txt" \
      -r "$ROOT/tests/requirements.txt" >&2
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" "$VMOPS_HOME/venv"
ln -sfn "$VENV/bin/salt-minion" "$VMOPS_HOME/bin/salt-minion"
echo "$VENV"
