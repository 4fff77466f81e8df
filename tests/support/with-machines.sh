#!/usr/bin/env bash
# Run a command with namespace machines (other Docker hosts, ENVIRONMENT.md §10) started for it:
#
#   tests/support/with-machines.sh [-n N] pytest -p no:cacheprovider tests/hub/test_remote_machine.py
#
# Starts N (default 1) dockerds, each in its own network and mount namespace with TLS, on a
# fresh test bridge; exports their description as CODEYARD_TEST_MACHINES (the fixtures reuse
# them instead of starting their own), runs the command, removes everything, and exits with
# the command's status. Without root (or dockerd, ip, nsenter) it runs the command without
# machines, and the tests that need one skip with the reason. The work is done by
# tests/support/machines.py, which needs the project's packages: the checkout's .venv python
# is used when it exists ($PYTHON wins).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTS="$(dirname "$HERE")"
REPO="$(dirname "$TESTS")"
export PYTHONPATH="$TESTS${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then python="$REPO/.venv/bin/python"; else python=python3; fi
fi
exec "$python" -m support.machines "$@"
