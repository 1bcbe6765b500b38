"""Every released cell carries ``noisy``, derived from its interval and never taken from input."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from varde.release import Cell

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(value=finite, low=finite, high=finite)
def test_noisy_is_the_interval_wider_than_the_value(value: float, low: float, high: float) -> None:
    cell = Cell(value=value, ci_low=min(low, high), ci_high=max(low, high))
    assert cell.noisy == (abs(high - low) > abs(value))


def test_the_flag_travels_in_the_json_and_a_forged_one_is_replaced() -> None:
    sent = json.loads(Cell(value=3.0, ci_low=-2.0, ci_high=8.0).model_dump_json())
    assert sent["noisy"] is True
    forged = Cell.model_validate({**sent, "noisy": False})  # a wrong flag in the input
    assert forged.noisy is True
    assert Cell(status="suppressed").noisy is None and Cell(value=4.0).noisy is None
