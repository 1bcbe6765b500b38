"""Each typed error of the SDK raised once through the public API of a real network.

Bad input, an unknown project, a bad token and a field one site does not expose
run against the shared network (``conftest.py``); nothing there is charged
except the small epsilon of the partial answer. Running a budget dry and
waiting for staff approval need policies of their own, so they run against a
one-site network whose Bergen policy adds a throw-away project with a tiny
budget and an approval rule (the shared network's budgets stay untouched).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from launcher.network import DEFAULT_POLICIES, LocalNetwork
from varde_client import (
    AuthenticationFailed,
    AwaitingApproval,
    BudgetExhausted,
    FieldNotAvailable,
    InvalidQuery,
    NotFound,
    PolicyViolation,
    QueryRefused,
    VardeClient,
    VardeHTTPError,
)

from .conftest import charges_everywhere, ledger_of

pytestmark = pytest.mark.integration
SHARED = pytest.mark.xdist_group("network")
OWN = pytest.mark.xdist_group("client_errors")

PROJECT = "nsclc-feasibility"
THROWAWAY = "client-errors-throwaway"
TINY = 0.1


def count(epsilon: float = 0.05, project: str = PROJECT, **extra: Any) -> dict[str, Any]:
    return {
        "project": project,
        "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": epsilon},
    } | extra


# ---------------------------------------------------------------- the shared network


@SHARED
def test_invalid_query(network: LocalNetwork, client: VardeClient) -> None:
    before = charges_everywhere(network)
    with pytest.raises(InvalidQuery) as info:
        client.query(count(epsilon=-1.0))
    err = info.value
    assert err.status == 422 and err.code == "invalid_query"
    assert err.errors and any("epsilon" in ".".join(map(str, p["loc"])) for p in err.errors)
    assert charges_everywhere(network) == before


@SHARED
def test_unknown_project(client: VardeClient) -> None:
    with pytest.raises(NotFound, match="unknown project 'no-such-project'") as info:
        client.query(count(project="no-such-project"))
    assert info.value.status == 404 and info.value.site_errors == {}


@SHARED
def test_bad_token(network: LocalNetwork) -> None:
    with VardeClient(network.url, "not-a-token", timeout=30) as stranger:
        with pytest.raises(AuthenticationFailed) as info:
            stranger.query(count())
        assert info.value.status == 401
        with pytest.raises(AuthenticationFailed):
            stranger.budgets()


@SHARED
def test_field_not_available_at_one_site_while_the_others_answer(
    network: LocalNetwork, client: VardeClient
) -> None:
    """Trondheim's policy does not expose PD-L1: a partial answer, Trondheim typed."""
    body = {
        **count(),
        "cohort": {"op": "eq", "field": "pdl1_tps", "value": ">=50%"},
    }
    before = charges_everywhere(network)
    res = client.query(body)  # a partial answer is a result, not an exception
    assert {r.site: r.status for r in res.result.sites} == {
        "oslo": "ok",
        "bergen": "ok",
        "trondheim": "field_not_available",
    }
    (refused,) = res.refusals.values()
    assert isinstance(refused, FieldNotAvailable) and isinstance(refused, PolicyViolation)
    assert refused.site == "trondheim" and refused.fields == ["pdl1_tps"]
    with pytest.raises(QueryRefused) as info:
        res.raise_for_refusals()
    assert set(info.value.site_errors) == {"trondheim"}
    frame = res.frame()
    assert frame.loc[frame.site == "trondheim", "status"].item() == "field_not_available"
    assert frame.loc[frame.site == "network", "sites"].item() == 2
    after = charges_everywhere(network)
    assert after["trondheim"] == before["trondheim"]  # refused before anything was charged

    # asked of Trondheim alone, nobody answers: the whole query is refused, by the same class
    with pytest.raises(FieldNotAvailable) as whole:
        client.query({**body, "sites": ["trondheim"]})
    assert whole.value.status == 403 and whole.value.code == "field_not_available"
    assert isinstance(whole.value.site_errors["trondheim"], FieldNotAvailable)
    assert charges_everywhere(network) == after


# ---------------------------------------------------------------- a network of our own


SITE = "bergen"


@pytest.fixture(scope="module")
def own_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    workdir = tmp_path_factory.mktemp("client-errors")
    policy = yaml.safe_load((DEFAULT_POLICIES / f"{SITE}.yaml").read_text())
    policy["projects"][THROWAWAY] = {"epsilon_budget": TINY, "max_epsilon_per_query": TINY}
    policy["approvals"] = {"epsilon_above": 0.3, "message": "Bergen staff review within a day."}
    path = workdir / f"{SITE}.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    net = LocalNetwork(workdir=workdir, sites=[SITE], rows=3_000, seed=13, policies={SITE: path})
    net.start()
    yield net
    net.stop()


@OWN
def test_budget_exhausted(own_net: LocalNetwork) -> None:
    with VardeClient(own_net.url, own_net.token, timeout=60) as client:
        first = client.query(count(epsilon=TINY, project=THROWAWAY))
        assert first.raise_for_refusals() is first  # the whole tiny budget, spent
        with pytest.raises(BudgetExhausted) as info:
            # another question (a repeat would be answered from the site's cache, for free)
            breast = {"op": "eq", "field": "cancer_type", "value": "breast"}
            client.query(count(epsilon=TINY, project=THROWAWAY, cohort=breast))
    err = info.value
    assert err.status == 409 and err.code == "budget_exhausted"
    assert isinstance(err.site_errors[SITE], BudgetExhausted)
    led = ledger_of(own_net, SITE)
    try:
        assert led.spent(THROWAWAY) == pytest.approx(TINY)  # nothing charged past the budget
    finally:
        led.close()


@OWN
def test_awaiting_approval(own_net: LocalNetwork) -> None:
    with VardeClient(own_net.url, own_net.token, timeout=60) as client:
        res = client.query(count(epsilon=0.5))  # above Bergen's approval threshold
    assert res.pending and res.result.network is None
    with pytest.raises(QueryRefused) as info:
        res.raise_for_refusals()
    waiting = info.value.site_errors[SITE]
    assert isinstance(waiting, AwaitingApproval) and isinstance(waiting, VardeHTTPError)
    assert "Bergen staff review within a day." in waiting.detail
    led = ledger_of(own_net, SITE)
    try:
        assert led.charges(PROJECT) == []  # nothing computed or charged while it waits
    finally:
        led.close()
