"""zCDP end to end: a project two sites account in rho, queried over real processes (issue 3.7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from launcher.network import DEFAULT_POLICIES, LocalNetwork
from varde_client import VardeClient, VardeHTTPError

from .conftest import ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("zcdp")]

SITES = ["oslo", "bergen"]
PROJECT = "survival-zcdp"
RHO_BUDGET = 0.5


@pytest.fixture(scope="module")
def zcdp_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    workdir = tmp_path_factory.mktemp("zcdp")
    policies = {}
    for site in SITES:
        policy = yaml.safe_load((DEFAULT_POLICIES / f"{site}.yaml").read_text())
        policy["projects"][PROJECT] = {
            "epsilon_budget": 1.0,
            "max_epsilon_per_query": 0.5,
            "accounting": "zcdp",
            "rho_budget": RHO_BUDGET,
            "max_rho_per_query": 0.2,
        }
        path = workdir / f"{site}.yaml"
        path.write_text(yaml.safe_dump(policy))
        policies[site] = path
    net = LocalNetwork(workdir=workdir, sites=SITES, rows=20_000, seed=5, policies=policies)
    net.start()
    yield net
    net.stop()


def _query(statistic: dict[str, Any], rho: float, low: int = 18) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "cohort": {
            "op": "and",
            "args": [
                {"op": "startswith", "field": "topography", "prefix": "C34"},
                {"op": ">=", "field": "age_at_diagnosis", "value": low},
            ],
        },
        "statistic": statistic,
        "privacy": {"mode": "zcdp", "rho": rho},
    }


def _rho_spent(net: LocalNetwork) -> dict[str, float]:
    out = {}
    for site in SITES:
        led = ledger_of(net, site)
        try:
            out[site] = led.spent(PROJECT, "rho")
            assert led.spent(PROJECT, "epsilon") == 0.0  # a zcdp project never spends epsilon
        finally:
            led.close()
    return out


def test_statistics_under_zcdp_are_charged_in_rho_at_every_site(zcdp_net: LocalNetwork) -> None:
    with VardeClient(zcdp_net.url, zcdp_net.token, timeout=60) as client:
        mean = client.query(
            _query({"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 110}, 0.1)
        ).raw
        assert mean["requested"] == {"rho": 0.1}
        for row in mean["sites"]:
            assert row["status"] == "ok" and row["mode"] == "zcdp"
            assert 0 < row["charged"]["rho"] <= 0.1
            assert "gaussian" in row["mechanism"]
        (cell,) = mean["network"]["cells"]
        assert 55 < cell["value"] < 80 and cell["ci_low"] < cell["value"] < cell["ci_high"]
        assert set(mean["network"]["spent"]) == set(SITES)
        assert all("rho" in b for b in mean["network"]["spent"].values())

        survival = client.query(
            _query({"kind": "survival", "interval_months": 3, "horizon_months": 24}, 0.1)
        ).raw
        assert all(r["status"] == "ok" for r in survival["sites"])
        spent = _rho_spent(zcdp_net)
        for row in survival["sites"]:
            assert spent[row["site"]] == pytest.approx(
                row["charged"]["rho"]
                + next(r["charged"]["rho"] for r in mean["sites"] if r["site"] == row["site"]),
                abs=1e-8,
            )
        # the same question again: the cached release, no new rho
        again = client.query(
            _query({"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 110}, 0.1)
        ).raw
        assert all(r["cached"] and r["charged"] == {"rho": 0.0} for r in again["sites"])
        assert _rho_spent(zcdp_net) == spent

        budgets = client.budgets()
        mine = budgets[budgets["project"] == PROJECT].set_index("site")
        for site in SITES:
            assert mine.loc[site, "accounting"] == "zcdp"
            assert mine.loc[site, "measure"] == "rho"
            assert mine.loc[site, "remaining"] == pytest.approx(RHO_BUDGET - spent[site])

        # rho above the cap, or an epsilon query to this project: 4xx, nothing charged
        with pytest.raises(VardeHTTPError) as err:
            client.query(_query({"kind": "count"}, 0.3, low=19))
        assert err.value.status in (403, 409, 422)
        assert "0.2" in str(err.value)
        wrong = {
            **_query({"kind": "count"}, 0.1, low=20),
            "privacy": {"mode": "dp", "epsilon": 0.1},
        }
        with pytest.raises(VardeHTTPError) as err:
            client.query(wrong)
        assert "zcdp" in str(err.value) or "rho" in str(err.value)
        assert _rho_spent(zcdp_net) == spent
