"""The gateway reads rho for zCDP projects: manifest, pre-check, preview, budgets, result rows.

A real gateway app (in process, SQLite in a temp dir) with manifests as the
sites' own policies build them; no node is connected, so anything the
pre-check lets through comes back ``unavailable`` and nothing is charged
anywhere by construction.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin import add_project, add_researcher
from gateway.app import create_app
from gateway.core.config import Settings
from gateway.core.db import Node
from gateway.queries import precheck
from gateway.state import GatewayState
from nodes.policy import Policy
from varde.budget import ZCDP, PureDP
from varde.query import parse_query
from varde.release import Manifest

P = "nsclc-feasibility"
SURVIVAL = {"kind": "survival", "interval_months": 3, "horizon_months": 24}


def policy_with(oslo_policy: Policy, site: str, **terms: Any) -> Policy:
    proj = oslo_policy.projects[P].model_copy(update=terms)
    return oslo_policy.model_copy(update={"site": site, "projects": {P: proj}})


def zcdp_manifest(oslo_policy: Policy, left: float = 0.4) -> Manifest:
    pol = policy_with(
        oslo_policy, "bergen", accounting="zcdp", rho_budget=0.5, max_rho_per_query=0.25
    )
    return pol.manifest({P: ZCDP(left)})


def q(privacy: dict[str, Any], statistic: dict[str, Any] | None = None) -> Any:
    return parse_query(
        {"project": P, "statistic": statistic or {"kind": "count"}, "privacy": privacy}
    )


def test_manifest_carries_the_accounting_and_rho(oslo_policy: Policy) -> None:
    terms = zcdp_manifest(oslo_policy).projects[P]
    assert terms.accounting == "zcdp"
    assert (terms.budget, terms.max_per_query, terms.remaining) == (
        ZCDP(0.5),
        ZCDP(0.25),
        ZCDP(0.4),
    )
    assert terms.remaining == ZCDP(0.4)  # queries spend rho, not epsilon: no epsilon is published
    eps = oslo_policy.manifest({P: PureDP(7.5)}).projects[P]
    assert eps.accounting == "epsilon" and eps.remaining == PureDP(7.5)
    assert eps.budget.measure == eps.max_per_query.measure == "epsilon"


@pytest.mark.parametrize(
    ("privacy", "statistic", "want"),
    [
        ({"mode": "zcdp", "rho": 0.2}, SURVIVAL, None),
        (
            {"mode": "zcdp", "rho": 0.3},
            None,
            (
                "policy_violation",
                "rho 0.3 is above the per-query cap 0.25 of project 'nsclc-feasibility' "
                "at 'bergen'",
            ),
        ),
        (
            {"mode": "zcdp", "rho": 0.25},
            {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
            (
                "budget_exhausted",
                "project 'nsclc-feasibility' has 0.2 rho left at 'bergen'; the query needs 0.25; "
                "it is the project's whole budget at 'bergen' (it does not renew); for more, ask "
                "the Oslo registry team, registry@oslo.example",  # the contact its policy names
            ),
        ),
        (
            {"mode": "dp", "epsilon": 0.1},
            None,
            (
                "policy_violation",
                "project 'nsclc-feasibility' accounts in zcdp at 'bergen': "
                'ask with privacy {"mode": "zcdp", "rho": ...}',
            ),
        ),
    ],
)
def test_precheck_compares_rho_for_a_zcdp_project(
    oslo_policy: Policy,
    privacy: dict[str, Any],
    statistic: dict[str, Any] | None,
    want: tuple[str, str] | None,
) -> None:
    manifest = zcdp_manifest(oslo_policy, left=0.2)
    assert precheck(manifest, q(privacy, statistic)) == want


def test_precheck_refuses_zcdp_to_an_epsilon_project(oslo_policy: Policy) -> None:
    manifest = oslo_policy.manifest({P: PureDP(10.0)})
    # rho 0.5 is below the epsilon cap 1.0: the old pre-check compared them and let it through
    assert precheck(manifest, q({"mode": "zcdp", "rho": 0.5})) == (
        "policy_violation",
        "project 'nsclc-feasibility' accounts in epsilon at 'oslo': "
        'ask with privacy {"mode": "dp", "epsilon": ...}',
    )


# ---------------------------------------------------------------- through the HTTP API


class Api:
    def __init__(self, state: GatewayState, token: str) -> None:
        self.app = create_app(state=state)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, url: str, body: Any = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.request(method, url, json=body, headers=self.headers)

        return asyncio.run(go())


@pytest.fixture
def api(tmp_path: Path, oslo_policy: Policy) -> Api:
    state = GatewayState.open(Settings(state_dir=tmp_path))
    add_project(state.sessions, P)
    token = add_researcher(state.sessions, "alice", [P])
    with state.sessions() as s:
        s.add_all([Node(site="bergen", public_key="x"), Node(site="oslo", public_key="y")])
        s.commit()
    state.dispatcher._site("bergen").manifest = zcdp_manifest(oslo_policy)
    state.dispatcher._site("oslo").manifest = oslo_policy.manifest({P: PureDP(9.0)})
    return Api(state, token)


def test_budgets_show_rho_for_zcdp_projects(api: Api) -> None:
    resp = api.call("GET", "/v1/budgets")
    assert resp.status_code == 200, resp.text
    sites = resp.json()["projects"][P]
    assert sites["bergen"] == {
        "accounting": "zcdp",
        "budget": {"rho": 0.5},
        "max_per_query": {"rho": 0.25},
        "remaining": {"rho": 0.4},
    }
    assert sites["oslo"]["accounting"] == "epsilon"
    assert sites["oslo"]["remaining"] == {"epsilon": 9.0}


def test_preview_and_query_refuse_the_wrong_mode_per_site(api: Api) -> None:
    body = {
        "project": P,
        "statistic": SURVIVAL,
        "privacy": {"mode": "zcdp", "rho": 0.2},
    }
    pre = api.call("POST", "/v1/queries/preview", body)
    assert pre.status_code == 200, pre.text
    rows = {r["site"]: r for r in pre.json()["sites"]}
    assert pre.json()["requested"] == {"rho": 0.2}
    assert rows["oslo"]["status"] == "policy_violation"
    assert "accounts in epsilon at 'oslo'" in rows["oslo"]["message"]
    assert rows["bergen"]["status"] == "unavailable"  # passed the pre-check; not connected
    # rho above bergen's cap: every site refuses, a 4xx naming each site's reason
    resp = api.call("POST", "/v1/queries", {**body, "privacy": {"mode": "zcdp", "rho": 0.3}})
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "policy_violation"
    text = resp.json()["detail"]
    assert "bergen: rho 0.3 is above the per-query cap 0.25" in text
    assert "oslo: project 'nsclc-feasibility' accounts in epsilon at 'oslo'" in text


def test_a_zcdp_release_updates_the_gateways_rho_view(api: Api, oslo_policy: Policy) -> None:
    disp = api.app.state.varde.dispatcher
    disp.note_budget("bergen", P, ZCDP(0.15))
    disp.note_budget("oslo", P, PureDP(8.0))
    disp.note_budget("oslo", P, ZCDP(0.01))  # a release in another measure cannot apply here
    bergen, oslo = disp.manifest("bergen").projects[P], disp.manifest("oslo").projects[P]
    assert bergen.remaining == ZCDP(0.15)
    assert oslo.remaining == PureDP(8.0)
