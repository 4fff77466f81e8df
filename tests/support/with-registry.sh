#!/usr/bin/env bash
# Run a command with one image registry started for it, e.g. every suite of a test run:
#
#   tests/support/with-registry.sh make test-hub test-placement
#
# Starts Debian's docker-registry with images/bin/ensure-registry.sh in a temp state folder
# (TLS with its own CA, a login, a free port), exports its description as
# CODEYARD_TEST_REGISTRY (the fixtures reuse it instead of starting their own), runs the
# command, stops the registry, removes its trust entry and folder, and exits with the
# command's status. The work is done by tests/support/registry.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTS="$(dirname "$HERE")"
export PYTHONPATH="$TESTS${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m support.registry "$@"
