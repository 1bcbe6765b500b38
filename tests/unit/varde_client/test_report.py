"""The CLI's text tables: the numbers the SDK's frames show, marked where noise dominates."""

from __future__ import annotations

from tests.unit.varde_client.results import answer, cell, site
from tests.unit.varde_client.test_frames import funnel_answer
from varde.budget import PureDP
from varde_client import QueryResponse
from varde_client.report import NOISY_NOTE, render


def test_a_count_below_zero_prints_as_zero_marked_noisy_with_its_interval_from_zero() -> None:
    rows = [
        site("oslo", [cell([], -2.0)], PureDP(0.5)),
        site("bergen", [cell([], 120.0)], PureDP(0.5)),
    ]
    text = render(QueryResponse(answer(rows, [cell([], 118.0)])))
    values = text.split("\n\n")[0]  # the values table (the per-site summary follows)
    lines = {line.split()[0]: line for line in values.splitlines() if line.strip()}
    assert lines["oslo"].split()[1] == "0*"  # shown as 0, noise dominates it
    assert "[0, " in lines["oslo"] and "-" not in lines["oslo"].split("[")[1]
    assert lines["bergen"].split()[1] == "120"  # a number noise does not dominate: no mark
    assert NOISY_NOTE in text


def test_a_funnel_prints_non_increasing_steps() -> None:
    """Oslo's noisy funnel rises at step 3 (41 -> 44); the table shows the consistent steps."""
    text = render(QueryResponse(funnel_answer()))
    egfr = next(line for line in text.splitlines() if line.startswith("EGFR+"))
    stage = next(line for line in text.splitlines() if line.startswith("stage IV"))
    oslo_egfr, oslo_stage = float(egfr.split()[1].rstrip("*")), float(stage.split()[2].rstrip("*"))
    assert oslo_egfr <= oslo_stage, text


def test_no_note_when_no_number_is_noisy() -> None:
    rows = [site("oslo", [cell([], 300.0)], PureDP(0.5))]
    assert NOISY_NOTE not in render(QueryResponse(answer(rows, [cell([], 300.0)])))
