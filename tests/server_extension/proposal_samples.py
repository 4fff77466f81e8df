"""The proposal both proposal-check suites judge: the pure checks (test_proposal_checks.py)
and the same checks through the server's endpoints (test_proposal_checks_api.py) must agree
on one file and one bad answer, so both read them from here."""

from __future__ import annotations

UTILS = """import os
import sys


def echo(message):
    sys.stdout.write(message)


def make_str(value):
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
"""
# The shape of the click report: a docstring request answered with a future import that
# lands in the middle of the file, after other statements.
BROKEN = UTILS.replace(
    "def make_str(value):\n",
    'from __future__ import annotations\ndef make_str(value):\n    """Text of value."""\n',
)
