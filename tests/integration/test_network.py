"""End to end: real gateway (uvicorn) and three real node processes on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from launcher.demo import FEASIBILITY
from launcher.network import LocalNetwork
from nodes.data import bound_contributions
from nodes.registry_io import read_registry
from varde_client import VardeClient

from .conftest import charges_everywhere, ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

# the demo's trial-feasibility query (stage IV NSCLC, EGFR+, 18-75, since 2020)
FEAS: dict[str, Any] = {**FEASIBILITY, "project": "nsclc-feasibility"}


def exact_count(
    network: LocalNetwork, site: str, k: int, mask_fn: Any, unit: str = "tumours"
) -> int:
    """What a site counts exactly: tumours (at most ``k`` per patient) or distinct patients."""
    frame = bound_contributions(read_registry(network.data_files[site]), k)
    mask = mask_fn(frame)
    return int(frame.loc[mask, "patient_id"].nunique() if unit == "patients" else mask.sum())


def test_feasibility_count_end_to_end(network: LocalNetwork, client: VardeClient) -> None:
    before = {s: ledger_of(network, s).spent("nsclc-feasibility") for s in network.sites}
    res = client.query(FEAS)
    raw = res.raw
    assert [s["status"] for s in raw["sites"]] == ["ok", "ok", "ok"]
    ks = {"oslo": 3, "bergen": 3, "trondheim": 2}
    total = 0
    for row in raw["sites"]:
        want = exact_count(
            network,
            row["site"],
            ks[row["site"]],
            lambda f: (
                f.topography.astype(str).str.startswith("C34")
                & (f.stage == "IV")
                & (f.egfr == "positive")
                & f.age_at_diagnosis.between(18, 75)
                & (f.diagnosis_year >= 2020)
            ),
            unit=FEAS["unit"],
        )
        total += want
        cell = row["cells"][0]
        # a patient count has sensitivity 1 whatever the site's tumour bound k
        scale = (1 if FEAS["unit"] == "patients" else ks[row["site"]]) / 0.5
        assert row["noise_scales"]["count"] == pytest.approx(scale)
        assert abs(cell["value"] - want) < 12 * scale  # |Laplace| > 12 b has probability e^-12
        assert row["charged"] == {"epsilon": pytest.approx(0.5)}
        after = ledger_of(network, row["site"]).spent("nsclc-feasibility")
        assert after - before[row["site"]] == pytest.approx(0.5)
        assert row["budget_remaining"] is not None
    net = raw["network"]["cells"][0]
    assert net["ci_low"] < net["value"] < net["ci_high"]
    # the network noise sd is sqrt(sum of site variances) ~ 4.9 here; 6 sd is a ~1e-8 event
    assert abs(net["value"] - total) < 6 * net["std"]
    frame = res.frame()
    assert list(frame.site) == ["bergen", "oslo", "trondheim", "network"]


def test_histogram_by_stage_and_group_by(client: VardeClient) -> None:
    res = client.query(
        {
            "project": "nsclc-feasibility",
            "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
            "statistic": {"kind": "histogram", "field": "stage"},
            "group_by": ["sex"],
            "privacy": {"mode": "dp", "epsilon": 0.3},
        }
    )
    assert res.axes == ["sex", "stage"]
    net = res.network_frame()
    assert len(net) == 12
    assert set(net.stage) == {"0", "I", "II", "III", "IV", "unknown"}
    stage4 = net[net.stage == "IV"].value.sum()
    stage0 = net[net.stage == "0"].value.sum()
    assert stage4 > 5 * stage0  # lung cancer presents late


def test_pooled_mean_is_ratio_of_sums(client: VardeClient) -> None:
    res = client.query(
        {
            "project": "nsclc-feasibility",
            "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
            "statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 100},
            "privacy": {"mode": "dp", "epsilon": 0.5},
        }
    )
    sites = [s for s in res.raw["sites"] if s["status"] == "ok"]
    s_sum = sum(s["cells"][0]["parts"]["centred_sum"] for s in sites)
    n_sum = sum(s["cells"][0]["parts"]["count"] for s in sites)
    net = res.raw["network"]["cells"][0]
    assert net["value"] == pytest.approx(59 + s_sum / n_sum)
    assert 60 < net["value"] < 80
    assert net["ci_low"] < net["value"] < net["ci_high"]


def test_aggregate_mode_only_where_allowed(network: LocalNetwork, client: VardeClient) -> None:
    res = client.query(
        {
            "project": "breast-outcomes",
            "cohort": {"op": "eq", "field": "cancer_type", "value": "breast"},
            "statistic": {"kind": "histogram", "field": "stage"},
            "privacy": {"mode": "aggregate"},
        }
    )
    rows = {s["site"]: s for s in res.raw["sites"]}
    assert rows["oslo"]["status"] == "ok" and rows["oslo"]["mode"] == "aggregate"
    assert rows["bergen"]["status"] == "policy_violation"
    assert rows["trondheim"]["status"] == "policy_violation"  # does not serve the project at all
    frame = bound_contributions(read_registry(network.data_files["oslo"]), 3)
    want = frame[frame.cancer_type == "breast"].stage.value_counts()
    for cell in rows["oslo"]["cells"]:
        (stage,) = cell["labels"]
        n = int(want.get(stage, 0))
        if 0 < n < 10:
            assert cell["status"] == "suppressed" and cell["value"] is None
        else:  # released within the cell-key spread (2 in oslo's policy), or suppressed
            assert cell["status"] == "suppressed" or abs(cell["value"] - n) <= 2, (stage, n)


# --- bad input: a clear 4xx and nothing charged anywhere ---------------------------------------

BAD: list[tuple[str, Any, int, str]] = [
    (
        "unknown field",
        {**FEAS, "cohort": {"op": "eq", "field": "shoe", "value": 1}},
        422,
        "unknown field 'shoe'",
    ),
    (
        "unknown category",
        {**FEAS, "cohort": {"op": "eq", "field": "stage", "value": "V"}},
        422,
        "unknown category 'V'",
    ),
    ("wrong type", {**FEAS, "privacy": {"mode": "dp", "epsilon": "lots"}}, 422, "valid number"),
    ("epsilon zero", {**FEAS, "privacy": {"mode": "dp", "epsilon": 0}}, 422, "greater than 0"),
    (
        "epsilon negative",
        {**FEAS, "privacy": {"mode": "dp", "epsilon": -0.5}},
        422,
        "greater than 0",
    ),
    (
        "epsilon over cap",
        {**FEAS, "privacy": {"mode": "dp", "epsilon": 2.0}},
        403,
        "above the per-query cap",
    ),
    (
        "unknown project",
        {**FEAS, "project": "nsclc-feasability"},
        404,
        "unknown project 'nsclc-feasability'; did you mean 'nsclc-feasibility'?",
    ),
    ("unknown site", {**FEAS, "sites": ["reykjavik"]}, 404, "unknown site(s) reykjavik"),
    (
        "inverted bounds",
        {
            **FEAS,
            "statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 9, "upper": 1},
        },
        422,
        "bounds inverted",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_and_charges_nothing(
    network: LocalNetwork, name: str, body: Any, status: int, message: str
) -> None:
    before = charges_everywhere(network)
    resp = httpx.post(
        f"{network.url}/v1/queries", json=body, headers={"Authorization": f"Bearer {network.token}"}
    )
    assert resp.status_code == status, resp.text
    assert message in resp.text
    assert charges_everywhere(network) == before


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            '{"project": "nsclc-feasibility", "statistic": {"kind": "count"},'
            ' "privacy": {"mode": "dp", "epsilon": NaN}}',
            "finite number",
        ),
        ('{"project": "nsclc-feasibility", "statistic": ', "JSON decode error"),
        ("[1, 2, 3]", "valid dictionary"),
    ],
)
def test_malformed_json_and_nan(network: LocalNetwork, raw: str, message: str) -> None:
    before = charges_everywhere(network)
    resp = httpx.post(
        f"{network.url}/v1/queries",
        content=raw,
        headers={"Authorization": f"Bearer {network.token}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    assert message in resp.text
    assert charges_everywhere(network) == before


def test_auth(network: LocalNetwork) -> None:
    for headers in ({}, {"Authorization": "Bearer vr_not-a-token"}):
        resp = httpx.post(f"{network.url}/v1/queries", json=FEAS, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"] == "authentication_failed"


def test_catalog_endpoints(network: LocalNetwork, client: VardeClient) -> None:
    schema = client.schema()
    stage = schema[schema.name == "stage"].iloc[0]
    assert list(stage.categories) == ["0", "I", "II", "III", "IV", "unknown"]
    assert sorted(stage.sites) == ["bergen", "oslo", "trondheim"]
    pdl1 = schema[schema.name == "pdl1_tps"].iloc[0]
    assert "trondheim" not in pdl1.sites
    assert "patient_id" not in set(schema.name)
    sites = client.sites()
    assert set(sites.site) == set(network.sites) and sites.connected.all()
    budgets = client.budgets()
    row = budgets[(budgets.project == "nsclc-feasibility") & (budgets.site == "oslo")].iloc[0]
    assert row.measure == "epsilon" and row.budget == 10.0 and row.remaining <= 10.0
    unserved = budgets[(budgets.project == "breast-outcomes") & (budgets.site == "trondheim")]
    assert list(unserved.accounting) == ["not served"]
    assert httpx.get(f"{network.url}/docs").status_code == 200
    paths = httpx.get(f"{network.url}/openapi.json").json()["paths"]
    assert {"/v1/queries", "/v1/schema", "/v1/budgets"} <= set(paths)
    every = httpx.get(f"{network.url}/operators/openapi.json").json()["paths"]
    assert set(paths) < set(every) and "/v1/nodes/poll" in every


def test_forged_release_is_refused_and_audited(network: LocalNetwork) -> None:
    import datetime as dt

    from varde.crypto import generate_key
    from varde.envelope import seal

    env = seal(
        generate_key(),
        kind="release",
        sender="oslo",
        recipient="gateway",
        body={"query_id": "x", "site": "oslo", "status": "ok"},
        ttl=dt.timedelta(seconds=30),
    )
    resp = httpx.post(f"{network.url}/v1/nodes/releases", json=env.model_dump())
    assert resp.status_code == 400
    assert resp.json()["error"] == "envelope_rejected" and "forged" in resp.json()["detail"]
    env = seal(
        generate_key(),
        kind="poll",
        sender="mallory",
        recipient="gateway",
        body={},
        ttl=dt.timedelta(seconds=30),
    )
    resp = httpx.post(f"{network.url}/v1/nodes/poll", json=env.model_dump())
    assert resp.status_code == 400 and "unknown_sender" in resp.text
