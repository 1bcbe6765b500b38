"""``QueryResponse`` frames: a row per site and cell plus the network, consistent values, attrs."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import pytest

from tests.unit.varde_client.results import answer, cell, refusal, site
from varde.budget import ZCDP, PureDP
from varde_client import QueryResponse
from varde_client.consistency import funnel

STEPS = ["C34", "stage IV", "EGFR+"]


def funnel_answer() -> dict[str, Any]:
    """Oslo's noisy funnel rises at step 3; Bergen's is fine; Trondheim does not expose EGFR."""
    oslo = [cell([s], v) for s, v in zip(STEPS, [120.0, 41.0, 44.0], strict=True)]
    bergen = [cell([s], v) for s, v in zip(STEPS, [80.0, 30.0, 9.0], strict=True)]
    net = [cell([s], v, std=2.0 * 2**0.5) for s, v in zip(STEPS, [200.0, 71.0, 53.0], strict=True)]
    rows = [
        site("oslo", oslo, PureDP(0.5), statistic="funnel", left=PureDP(7.5)),
        site("bergen", bergen, PureDP(0.5), statistic="funnel", left=PureDP(4.0)),
        refusal(
            "trondheim", "field_not_available", "site 'trondheim' does not expose field(s) egfr"
        ),
    ]
    return answer(rows, net, statistic="funnel", axes=[("step", STEPS)])


def test_one_row_per_site_and_cell_plus_the_network() -> None:
    frame = QueryResponse(funnel_answer()).frame()
    assert list(frame.site) == ["oslo"] * 3 + ["bergen"] * 3 + ["trondheim"] + ["network"] * 3
    assert list(frame.step[:3]) == STEPS
    assert frame.loc[frame.site == "trondheim", "status"].item() == "field_not_available"
    assert frame.loc[frame.site == "network", "status"].unique().tolist() == ["ok"]
    assert frame.loc[frame.site == "network", "sites"].unique().tolist() == [2]
    assert frame.loc[frame.site == "oslo", "budget_left"].unique().tolist() == [7.5]
    # the charge column is named after the measure; the network's is the sites' total
    assert frame.loc[frame.site == "oslo", "epsilon"].unique().tolist() == [0.5]
    assert frame.loc[frame.site == "trondheim", "epsilon"].item() == 0.0
    assert frame.loc[frame.site == "network", "epsilon"].unique().tolist() == [1.0]


def test_value_is_consistent_and_raw_value_as_released() -> None:
    res = QueryResponse(funnel_answer())
    frame = res.frame()
    oslo = frame[frame.site == "oslo"]
    assert oslo.raw_value.tolist() == [120.0, 41.0, 44.0]
    assert oslo.value.tolist() == [120.0, 42.5, 42.5]  # step 3 rose: pooled with step 2
    bergen = frame[frame.site == "bergen"]
    assert bergen.value.tolist() == bergen.raw_value.tolist() == [80.0, 30.0, 9.0]
    # the network row is projected on its own, from its own released values
    net = frame[frame.site == "network"]
    assert net.raw_value.tolist() == [200.0, 71.0, 53.0]
    assert net.value.tolist() == funnel([200.0, 71.0, 53.0]).tolist()
    # intervals are the release's, around raw_value
    assert (oslo.ci_low < oslo.raw_value).all() and (oslo.raw_value < oslo.ci_high).all()
    assert oslo["std"].unique().tolist() == [2.0]
    # the JSON is untouched
    assert [c["value"] for c in res.raw["sites"][0]["cells"]] == [120.0, 41.0, 44.0]


def test_noisy_marks_numbers_whose_interval_is_wider_than_themselves() -> None:
    rows = [site("oslo", [cell(["a"], 3.0), cell(["b"], 30.0), cell(["c"], None)], PureDP(0.5))]
    frame = QueryResponse(answer(rows, None, statistic="histogram", axes=[("x", ["a", "b", "c"])]))
    noisy = frame.frame().noisy
    assert str(noisy.dtype) == "boolean"
    assert bool(noisy[0]) and not bool(noisy[1])  # interval width 7.8: vs 3, vs 30
    assert noisy[2] is pd.NA  # suppressed: no interval


def test_attrs_carry_measure_charges_query_id_and_the_raw_answer() -> None:
    raw = funnel_answer()
    res = QueryResponse(raw)
    for frame in (res.frame(), res.sites_frame(), res.network_frame()):
        assert frame.attrs["measure"] == "epsilon"
        assert frame.attrs["charged"] == {"oslo": 0.5, "bergen": 0.5, "trondheim": 0.0}
        assert frame.attrs["query_id"] == "q1"
        assert frame.attrs["statistic"] == "funnel"
        assert frame.attrs["raw"] == raw
    frame = res.frame()
    # derived frames share the raw answer instead of deep-copying it at every operation
    assert frame[frame.site == "oslo"].attrs["raw"] is frame.attrs["raw"]
    assert copy.deepcopy(frame).attrs["raw"] is frame.attrs["raw"]


def test_zcdp_frames_charge_in_rho() -> None:
    rows = [site("oslo", [cell([], 12.0)], ZCDP(0.05))]
    frame = QueryResponse(answer(rows, [cell([], 12.0)], requested=ZCDP(0.05))).frame()
    assert "rho" in frame.columns and "epsilon" not in frame.columns
    assert frame.attrs["measure"] == "rho" and frame.attrs["charged"] == {"oslo": 0.05}


def test_aggregate_mode_has_no_charge_and_no_noise_flag() -> None:
    rows = [site("oslo", [cell(["a"], 40.0, std=0.0), cell(["b"], None)], None)]
    res = QueryResponse(
        answer(rows, None, statistic="histogram", requested=None, axes=[("x", ["a", "b"])])
    )
    frame = res.frame()
    assert frame.attrs["measure"] is None and frame.attrs["charged"] == {}
    assert "epsilon" not in frame.columns and "rho" not in frame.columns
    assert frame.noisy.tolist() == [False, pd.NA]  # an interval of width 0


def test_count_below_zero_is_shown_as_zero_with_its_release_kept() -> None:
    rows = [
        site("oslo", [cell([], -2.0)], PureDP(0.5)),
        site("bergen", [cell([], 5.0)], PureDP(0.5)),
    ]
    frame = QueryResponse(answer(rows, [cell([], 3.0)])).frame()
    assert frame.value.tolist() == [0.0, 5.0, 3.0]
    assert frame.raw_value.tolist() == [-2.0, 5.0, 3.0]


def test_a_result_with_no_network_row_still_frames() -> None:
    rows = [refusal("oslo", "awaiting_approval", "awaiting approval at oslo (request r1: ...)")]
    res = QueryResponse(answer(rows, None), status=202)
    frame = res.frame()
    assert res.pending
    assert frame.site.tolist() == ["oslo"] and frame.status.tolist() == ["awaiting_approval"]
    assert res.network_frame().empty


def test_plot_delegates_to_the_plots_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import varde_client.plots as plots

    seen: dict[str, Any] = {}

    def fake(res: QueryResponse, ax: Any = None, **kw: Any) -> str:
        seen.update(res=res, ax=ax, **kw)
        return "drawn"

    monkeypatch.setattr(plots, "plot", fake)
    res = QueryResponse(funnel_answer())
    assert res.plot(ax="axes", title="t") == "drawn"
    assert seen == {"res": res, "ax": "axes", "title": "t"}


def test_survival_curve_is_made_non_increasing_and_its_median_kept() -> None:
    labels = ["3m", "6m", "9m", "median"]

    def curve(values: list[float]) -> list[Any]:
        out = [cell([lab], v, std=None) for lab, v in zip(labels, values, strict=True)]
        return [
            c.model_copy(update={"ci_low": c.value - 0.1, "ci_high": c.value + 0.1}) for c in out
        ]

    rows = [site("oslo", curve([0.8, 0.83, 0.6, 7.5]), PureDP(0.5), statistic="survival")]
    res = QueryResponse(
        answer(rows, curve([0.8, 0.83, 0.6, 7.5]), statistic="survival", axes=[("time", labels)])
    )
    frame = res.frame()
    assert frame.value.tolist() == pytest.approx([0.815, 0.815, 0.6, 7.5] * 2)
    assert frame.raw_value.tolist() == [0.8, 0.83, 0.6, 7.5] * 2
    assert frame["std"].isna().all()
