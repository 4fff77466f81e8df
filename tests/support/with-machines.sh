#!/usr/bin/env bash
# Run a command with namespace machines (other Docker hosts, ENVIRONMENT.md §10) started for it:
#
#   tests/support/with-machines.sh [-n N] pytest -p no:cacheprovider tests/hub/test_remote_machine.py
#
# Starts N (default 1) dockerds, each in its own network and mount namespace with TLS, on a
# fresh test bridge; exports their description as CODEYARD_TEST_MACHINES (the fixtures reuse
# them instead of starting their own), runs the command, removes everything, and exits with
# the command's status. Needs root. The work is done by tests/support/machines.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTS="$(dirname "$HERE")"
export PYTHONPATH="$TESTS${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m support.machines "$@"
