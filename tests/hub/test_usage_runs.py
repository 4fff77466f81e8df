"""Workspace-hours from start and stop records (`usage_report.runs`), in the Hub's order.

Seen in CI: a workspace killed before any poll had seen it running was recorded as died
with `last_seen` = the moment its own start saw it up, 41 ms before the Hub's start record.
Sorted by that time, its stop came before its start and the run counted until "now"."""

from __future__ import annotations

from codeyard.central_audit.usage_report import runs

START, STOP = "workspace.start", "workspace.stop"


def test_a_workspace_that_died_before_its_first_poll_ends_at_its_start() -> None:
    events = [(1000.905, 1000.905, START), (1010.0, 1000.864, STOP)]
    assert list(runs(events, open_end=5000.0)) == [(1000.905, 1000.905)]


def test_a_died_workspace_ends_where_it_was_last_seen_and_the_next_run_counts_on() -> None:
    events = [
        (2000.0, 2000.0, START),
        (1000.0, 1000.0, START),
        (1500.0, 1200.0, STOP),  # died; last seen at 1200
        (2100.0, 2100.0, STOP),  # a Hub stop
        (3000.0, 3000.0, START),
    ]
    assert list(runs(events, open_end=3600.0)) == [
        (1000.0, 1200.0),
        (2000.0, 2100.0),
        (3000.0, 3600.0),
    ]


def test_a_run_still_open_ends_at_the_open_end_and_never_before_its_start() -> None:
    assert list(runs([(10.0, 10.0, START)], open_end=25.0)) == [(10.0, 25.0)]
    assert list(runs([(10.0, 10.0, START)], open_end=5.0)) == [(10.0, 10.0)]
    assert list(runs([(10.0, 10.0, STOP)], open_end=25.0)) == []
