"""No budget can take a node down: the edges of epsilon and rho, for every statistic.

At each edge a site either releases numbers that are all finite (and so can be
signed, sent and cached) or refuses by name before anything is charged. Under a
development profile a project may allow huge per-query budgets, which is how
these edges are reachable through the public API at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.context import NodeContext
from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.pipeline import handle
from nodes.policy import Policy
from nodes.store import NodeStore
from tests.conftest import make_work
from varde.crypto import generate_key, public_key_b64

EDGES = [1e-300, 5e-324, 1e3, 1e6, sys.float_info.max, 1e-7, 1e-14]
STATISTICS: dict[str, dict[str, Any]] = {
    "count": {"kind": "count"},
    "histogram": {"kind": "histogram", "field": "stage"},
    "crosstab": {"kind": "crosstab", "fields": ["sex", "stage"]},
    "sum": {"kind": "sum", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
    "mean": {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
    "funnel": {
        "kind": "funnel",
        "steps": [
            {"label": "lung", "criterion": {"op": "eq", "field": "cancer_type", "value": "lung"}},
            {"label": "IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
        ],
    },
    "quantile": {
        "kind": "quantile",
        "field": "age_at_diagnosis",
        "alphas": [0.5],
        "candidates": [0, 20, 40, 60, 80, 100],
    },
    "survival": {"kind": "survival", "interval_months": 6, "horizon_months": 24},
}
MEASURES = {"epsilon": ("epsilon", "dp"), "rho": ("zcdp", "zcdp")}


def wide_open(accounting: str) -> Policy:
    """A development site whose project may spend the most a ledger can hold, in one query."""
    top = 1e9
    return Policy.model_validate(
        {
            "site": "oslo",
            "profile": "development",
            "privacy_unit": {"max_tumours_per_patient": 3},
            "fields": ["cancer_type", "stage", "sex", "age_at_diagnosis"]
            + ["survival_days", "vital_status"],
            "statistics": ["count", "sum", "mean", "histogram", "crosstab"]
            + ["funnel", "quantile", "survival"],
            "projects": {
                "p": {
                    "accounting": accounting,
                    "epsilon_budget": top,
                    "max_epsilon_per_query": top,
                    "rho_budget": top,
                    "max_rho_per_query": top,
                }
            },
        }
    )


@pytest.fixture(params=list(MEASURES))
def site(
    request: pytest.FixtureRequest, tmp_path: Path, oslo_data: RegistryData
) -> Iterator[tuple[NodeContext, Ed25519PrivateKey, str]]:
    key = generate_key()
    measure = str(request.param)
    ctx = NodeContext(
        site="oslo",
        data=oslo_data,
        ledger=Ledger.in_directory(tmp_path),
        store=NodeStore.in_directory(tmp_path),
        node_key=generate_key(),
        gateway_key=public_key_b64(key),
        _policy=wide_open(MEASURES[measure][0]),
    )
    yield ctx, key, measure
    ctx.ledger.close()
    ctx.store.close()


def test_every_edge_is_released_finite_or_refused_by_name_uncharged(
    site: tuple[NodeContext, Ed25519PrivateKey, str],
) -> None:
    ctx, key, measure = site
    mode = MEASURES[measure][1]
    outcomes: dict[str, int] = {}
    for i, (value, (name, stat)) in enumerate((v, s) for v in EDGES for s in STATISTICS.items()):
        query = {"project": "p", "statistic": stat, "privacy": {"mode": mode, measure: value}}
        before = len(ctx.ledger.charges())
        rel = handle(ctx, make_work(key, query, query_id=f"q{i}"))
        charged = len(ctx.ledger.charges()) - before
        outcomes[rel.status] = outcomes.get(rel.status, 0) + 1
        where = f"{name} at {measure} {value:g}"
        if rel.status == "ok":
            assert charged == 1, where
            text = rel.model_dump_json()  # what the node signs and sends
            assert "Infinity" not in text and "NaN" not in text, where
            json.loads(text)
            assert rel.cells, where
        else:
            assert rel.status in ("invalid_query", "policy_violation"), (where, rel.message)
            assert charged == 0, where
            assert measure in rel.message, (where, rel.message)  # the refusal names the budget
    assert outcomes.get("error", 0) == 0
    assert outcomes["ok"] >= len(STATISTICS) and outcomes["invalid_query"] >= len(STATISTICS)
    # the node still answers an ordinary question afterwards
    ordinary = {
        "project": "p",
        "statistic": {"kind": "count"},
        "privacy": {"mode": mode, measure: 0.5},
    }
    assert handle(ctx, make_work(key, ordinary, query_id="after")).status == "ok"


def test_a_refused_edge_is_not_cached(site: tuple[NodeContext, Ed25519PrivateKey, str]) -> None:
    ctx, key, measure = site
    mode = MEASURES[measure][1]
    query = {
        "project": "p",
        "statistic": {"kind": "count"},
        "privacy": {"mode": mode, measure: 1e-300},
    }
    for i in range(2):
        rel = handle(ctx, make_work(key, query, query_id=f"t{i}"))
        assert rel.status == "invalid_query" and not rel.cached
    assert len(ctx.release_cache) == 0 and ctx.ledger.charges() == []
