#!/usr/bin/env bash
# Run a command with one PostgreSQL server started for it, e.g. every suite of a test run:
#
#   tests/support/with-postgres.sh make test-hub test-placement
#
# Starts Debian's PostgreSQL in a temp folder on a free 127.0.0.1 port with a fresh superuser
# password, exports its admin URL as CODEYARD_TEST_POSTGRES_URL (the test fixtures reuse it
# instead of starting their own), runs the command, stops the server and removes the folder,
# and exits with the command's status. The work is done by tests/support/postgres.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTS="$(dirname "$HERE")"
export PYTHONPATH="$TESTS${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m support.postgres "$@"
