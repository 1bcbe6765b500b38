"""Registry statistics over a live network: repeats, previews, funnels, many-cell crosstabs."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from launcher.network import LocalNetwork
from nodes.data import bound_contributions
from nodes.synth import read_registry
from varde_client import VardeClient

from .conftest import charges_everywhere, ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

REPEAT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "eq", "field": "cancer_type", "value": "lung"},
            {"op": "between", "field": "age_at_diagnosis", "low": 40, "high": 70},
        ],
    },
    "statistic": {"kind": "histogram", "field": "stage"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
}


def test_repeat_query_is_served_from_each_sites_cache(
    network: LocalNetwork, client: VardeClient
) -> None:
    first = client.query(REPEAT).raw
    spent = {s: ledger_of(network, s).spent("nsclc-feasibility") for s in network.sites}
    rewritten = {
        **REPEAT,
        "cohort": {
            "op": "and",
            "args": [
                {"op": ">=", "field": "age_at_diagnosis", "value": 40},
                {"op": "<=", "field": "age_at_diagnosis", "value": 70},
                {"op": "in", "field": "cancer_type", "values": ["lung"]},
            ],
        },
    }
    again = client.query(rewritten).raw
    assert again["query_id"] != first["query_id"]
    for was, now in zip(first["sites"], again["sites"], strict=True):
        assert was["status"] == now["status"] == "ok"
        assert not was["cached"] and now["cached"]
        assert now["charged"] == {"epsilon": 0.0}
        assert now["cells"] == was["cells"]
    assert again["network"]["cells"] == first["network"]["cells"]
    after = {s: ledger_of(network, s).spent("nsclc-feasibility") for s in network.sites}
    assert after == spent


STEPS = [
    {"label": "lung", "criterion": {"op": "eq", "field": "cancer_type", "value": "lung"}},
    {"label": "stage IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
    {
        "label": "age 18-75",
        "criterion": {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
    },
]
FUNNEL: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "funnel", "steps": STEPS},
    "privacy": {"mode": "dp", "epsilon": 0.6},
}
KS = {"oslo": 3, "bergen": 3, "trondheim": 2}


def _post(network: LocalNetwork, path: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{network.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {network.token}"},
        timeout=60,
    )


def test_preview_then_funnel(network: LocalNetwork) -> None:
    before = charges_everywhere(network)
    pre = _post(network, "/v1/queries/preview", FUNNEL)
    assert pre.status_code == 200, pre.text
    preview = pre.json()
    assert charges_everywhere(network) == before  # a preview charges nothing
    assert preview["cells"] == 3
    assert {s: b["epsilon"] for s, b in preview["planned"].items()} == pytest.approx(
        dict.fromkeys(network.sites, 0.6)
    )
    for row in preview["sites"]:
        assert row["preview"] and row["cells"] == []
        # eps 0.6 over 3 steps by composition: scale k * 3 / 0.6 per step
        assert row["noise_scales"]["count"] == pytest.approx(KS[row["site"]] * 3 / 0.6)

    # the researcher's SDK gives the same as a table, and charges nothing either
    with VardeClient(network.url, network.token, timeout=60) as client:
        table = client.preview(FUNNEL).set_index("site")
    assert charges_everywhere(network) == before
    assert list(table.index) == [*[s["site"] for s in preview["sites"]], "network"]
    assert (table.status == "ok").all()
    assert table.loc["network", "epsilon"] == pytest.approx(0.6 * len(network.sites))
    assert table.loc["network", "pm95_count"] == pytest.approx(preview["network_accuracy"]["count"])
    for row in preview["sites"]:
        assert table.loc[row["site"], "pm95_count"] == pytest.approx(row["accuracy"]["count"])

    res = _post(network, "/v1/queries", FUNNEL)
    assert res.status_code == 200, res.text
    raw = res.json()
    assert raw["axes"] == [["step", ["lung", "stage IV", "age 18-75"]]]
    for row in raw["sites"]:
        assert row["status"] == "ok" and row["charged"]["epsilon"] == pytest.approx(0.6)
        assert row["mechanism"] == "opendp.composition(3 x discrete_laplace)"
        hw = row["accuracy"]["count"]
        site_pre = next(p for p in preview["sites"] if p["site"] == row["site"])
        assert hw == pytest.approx(site_pre["accuracy"]["count"])
        frame = bound_contributions(read_registry(network.data_files[row["site"]]), KS[row["site"]])
        alive = frame.cancer_type == "lung"
        want = [int(alive.sum())]
        alive &= frame.stage == "IV"
        want.append(int(alive.sum()))
        alive &= frame.age_at_diagnosis.between(18, 75)
        want.append(int(alive.sum()))
        scale = row["noise_scales"]["count"]
        for cell, w in zip(row["cells"], want, strict=True):
            assert abs(cell["value"] - w) < 12 * scale
    after = charges_everywhere(network)
    assert {s: after[s] - before[s] for s in after} == dict.fromkeys(after, 1)
    net = raw["network"]["cells"]
    assert [c["labels"] for c in net] == [["lung"], ["stage IV"], ["age 18-75"]]
    std = preview["network_noise_std"]["count"]
    assert net[0]["std"] == pytest.approx(std)
    assert net[0]["ci_high"] - net[0]["value"] == pytest.approx(
        preview["network_accuracy"]["count"]
    )


BAD_FUNNELS: list[tuple[str, Any, str]] = [
    ("no steps", {"kind": "funnel", "steps": []}, "at least 1 item"),
    ("repeated label", {"kind": "funnel", "steps": [STEPS[0], STEPS[0]]}, "must not repeat"),
    (
        "bad criterion",
        {
            "kind": "funnel",
            "steps": [{"label": "x", "criterion": {"op": "eq", "field": "shoe", "value": 1}}],
        },
        "unknown field 'shoe'",
    ),
    ("too many steps", {"kind": "funnel", "steps": [STEPS[0]] * 13}, "at most 12"),
]


@pytest.mark.parametrize(
    ("name", "statistic", "message"), BAD_FUNNELS, ids=[b[0] for b in BAD_FUNNELS]
)
@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/preview"])
def test_bad_funnel_is_422_and_charges_nothing(
    network: LocalNetwork, path: str, name: str, statistic: Any, message: str
) -> None:
    before = charges_everywhere(network)
    resp = _post(network, path, {**FUNNEL, "statistic": statistic})
    assert resp.status_code == 422, resp.text
    assert message in resp.text
    assert charges_everywhere(network) == before


def test_preview_refuses_like_the_query(network: LocalNetwork) -> None:
    resp = _post(network, "/v1/queries/preview", {**FUNNEL, "project": "no-such-project"})
    assert resp.status_code == 404
    over = _post(
        network, "/v1/queries/preview", {**FUNNEL, "privacy": {"mode": "dp", "epsilon": 2}}
    )
    assert over.status_code == 200
    assert {r["status"] for r in over.json()["sites"]} == {"policy_violation"}
    assert over.json()["planned"] == {}


def test_four_way_crosstab_over_the_network(network: LocalNetwork, client: VardeClient) -> None:
    axes = ["cancer_type", "stage", "sex", "age_band"]
    res = client.query(
        {
            "project": "nsclc-feasibility",
            "statistic": {"kind": "crosstab", "fields": axes},
            "privacy": {"mode": "dp", "epsilon": 0.2},
        }
    )
    assert res.axes == axes
    net = res.network_frame()
    assert len(net) == 18 * 6 * 2 * 9
    exact = 0
    for site in network.sites:
        frame = bound_contributions(read_registry(network.data_files[site]), KS[site])
        exact += int(frame[(frame.cancer_type == "lung") & (frame.stage == "IV")].shape[0])
    cells = [c for c in res.raw["network"]["cells"] if c["labels"][:2] == ["lung", "IV"]]
    assert len(cells) == 18
    std = float(np.sqrt(sum(c["std"] ** 2 for c in cells)))
    assert abs(sum(c["value"] for c in cells) - exact) < 6 * std


def test_network_median_is_the_pooled_median(network: LocalNetwork) -> None:
    edges = [float(x) for x in range(30, 101)]
    body = {
        "project": "nsclc-feasibility",
        "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
        "statistic": {"kind": "quantile", "field": "age_at_diagnosis", "candidates": edges},
        "privacy": {"mode": "dp", "epsilon": 0.5},
    }
    res = _post(network, "/v1/queries", body)
    assert res.status_code == 200, res.text
    raw = res.json()
    ages = []
    for site in network.sites:
        frame = bound_contributions(read_registry(network.data_files[site]), KS[site])
        ages.append(frame.loc[frame.cancer_type == "lung", "age_at_diagnosis"].dropna().to_numpy())
    union = np.clip(np.concatenate(ages), 30, 100)
    (cell,) = raw["network"]["cells"]
    assert cell["labels"] == ["q0.5"]
    assert abs(cell["value"] - float(np.median(union))) < 1.5
    assert cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    for row in raw["sites"]:
        assert row["status"] == "ok" and row["mechanism"] == "opendp.discrete_laplace"
        assert len(row["cells"][0]["parts"]) == 70


BAD_QUANTILES: list[tuple[str, Any, str]] = [
    ("not increasing", {"candidates": [10, 5, 20]}, "strictly increasing"),
    ("alpha out of range", {"alphas": [0]}, "strictly between 0 and 1"),
    ("categorical field", {"field": "sex"}, "a numeric field is needed"),
    ("grid too fine", {"candidates": [x / 10 for x in range(1100)]}, "at most 1001 items"),
]


@pytest.mark.parametrize(
    ("name", "change", "message"), BAD_QUANTILES, ids=[b[0] for b in BAD_QUANTILES]
)
def test_bad_quantile_is_422_and_charges_nothing(
    network: LocalNetwork, name: str, change: Any, message: str
) -> None:
    before = charges_everywhere(network)
    stat = {"kind": "quantile", "field": "age_at_diagnosis", "candidates": [0, 50, 100], **change}
    resp = _post(network, "/v1/queries", {**FUNNEL, "statistic": stat})
    assert resp.status_code == 422, resp.text
    assert message in resp.text
    assert charges_everywhere(network) == before


def test_network_survival_matches_lifelines_on_the_pooled_rows(network: LocalNetwork) -> None:
    import lifelines

    from varde.query import DAYS_PER_MONTH

    body = {
        "project": "nsclc-feasibility",
        "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
        "statistic": {"kind": "survival", "interval_months": 3, "horizon_months": 36},
        "privacy": {"mode": "dp", "epsilon": 0.5},
    }
    res = _post(network, "/v1/queries", body)
    assert res.status_code == 200, res.text
    raw = res.json()
    assert all(r["status"] == "ok" for r in raw["sites"])
    frames = []
    for site in network.sites:
        frame = bound_contributions(read_registry(network.data_files[site]), KS[site])
        frames.append(frame[(frame.cancer_type == "lung") & frame.survival_days.notna()])
    pooled = pd.concat(frames)
    kmf = lifelines.KaplanMeierFitter().fit(
        pooled.survival_days / DAYS_PER_MONTH, event_observed=pooled.vital_status == "dead"
    )
    months = list(range(3, 37, 3))
    want = kmf.survival_function_at_times(months).to_numpy()
    cells = raw["network"]["cells"]
    assert [c["labels"][0] for c in cells] == [f"{m}m" for m in months] + ["median"]
    curve = np.array([c["value"] for c in cells[:-1]])
    assert np.max(np.abs(curve - want)) < 0.04
    covered = [c["ci_low"] <= w <= c["ci_high"] for c, w in zip(cells[:-1], want, strict=True)]
    assert sum(covered) >= len(months) - 1
    median = cells[-1]
    assert abs(median["value"] - kmf.median_survival_time_) < 2.0
    assert median["ci_low"] <= median["value"] <= median["ci_high"]


def test_survival_grid_too_fine_for_a_sites_policy_is_refused_there_uncharged(
    network: LocalNetwork,
) -> None:
    """Trondheim's policy releases survival on quarterly intervals or coarser (limits)."""
    before = charges_everywhere(network)
    body = {
        "project": "nsclc-feasibility",
        "cohort": {"op": "eq", "field": "cancer_type", "value": "colorectal"},
        "statistic": {"kind": "survival", "interval_months": 1, "horizon_months": 12},
        "privacy": {"mode": "dp", "epsilon": 0.2},
    }
    pre = _post(network, "/v1/queries/preview", body)
    assert pre.status_code == 200, pre.text
    rows = {r["site"]: r for r in pre.json()["sites"]}
    assert rows["trondheim"]["status"] == "policy_violation"
    assert rows["trondheim"]["message"] == (
        "survival grid too fine for site 'trondheim': intervals of 1 month(s) asked, "
        "at least 3 allowed here"
    )
    res = _post(network, "/v1/queries", body)
    assert res.status_code == 200, res.text
    rows = {r["site"]: r for r in res.json()["sites"]}
    assert rows["trondheim"]["status"] == "policy_violation"
    assert {s: rows[s]["status"] for s in rows if s != "trondheim"} == dict.fromkeys(
        set(rows) - {"trondheim"}, "ok"
    )
    after = charges_everywhere(network)
    assert after["trondheim"] == before["trondheim"]  # refused there: nothing charged
    assert all(after[s] == before[s] + 1 for s in after if s != "trondheim")
    # the network curve pools only the sites that answered
    assert res.json()["network"]["sites"] == sorted(set(rows) - {"trondheim"})


BAD_SURVIVAL: list[tuple[str, Any, str]] = [
    ("interval zero", {"kind": "survival", "interval_months": 0}, "greater than or equal to 1"),
    ("horizon too long", {"kind": "survival", "horizon_months": 600}, "less than or equal to 240"),
    ("ragged grid", {"kind": "survival", "interval_months": 7}, "multiple of"),
]


@pytest.mark.parametrize(
    ("name", "stat", "message"), BAD_SURVIVAL, ids=[b[0] for b in BAD_SURVIVAL]
)
@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/preview"])
def test_bad_survival_is_422_and_charges_nothing(
    network: LocalNetwork, path: str, name: str, stat: Any, message: str
) -> None:
    before = charges_everywhere(network)
    resp = _post(network, path, {**FUNNEL, "statistic": stat})
    assert resp.status_code == 422, resp.text
    assert message in resp.text
    assert charges_everywhere(network) == before


def test_unknown_group_key_is_422_and_charges_nothing(network: LocalNetwork) -> None:
    before = charges_everywhere(network)
    body = {**FUNNEL, "statistic": {"kind": "survival"}, "group_by": ["shoe_size"]}
    resp = _post(network, "/v1/queries", body)
    assert resp.status_code == 422 and "unknown field 'shoe_size'" in resp.text
    assert charges_everywhere(network) == before


def test_zcdp_query_on_an_epsilon_project_is_refused_by_every_site(network: LocalNetwork) -> None:
    """The wire carries zCDP queries; each site answers by its project's accounting."""
    before = charges_everywhere(network)
    body = {**REPEAT, "privacy": {"mode": "zcdp", "rho": 0.05}}
    resp = _post(network, "/v1/queries", body)
    assert resp.status_code == 403, resp.text
    assert "accounts in epsilon" in resp.text
    mean = {
        **body,
        "statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
    }
    pre = _post(network, "/v1/queries/preview", mean)
    assert pre.status_code == 200, pre.text
    for row in pre.json()["sites"]:
        assert row["status"] == "policy_violation"
        assert f"accounts in epsilon at {row['site']!r}" in row["message"]
    assert charges_everywhere(network) == before
