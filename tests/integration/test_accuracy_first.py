"""Accuracy-first questions through the real gateway: each site's least epsilon, shown, charged."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from launcher.network import LocalNetwork

from .conftest import ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

P = "nsclc-feasibility"
K = {"oslo": 3, "bergen": 3, "trondheim": 2}


def _query(accuracy: dict[str, Any]) -> dict[str, Any]:
    return {
        "project": P,
        "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
        "statistic": {"kind": "count"},
        "group_by": ["sex"],
        "privacy": {"mode": "dp", "accuracy": accuracy},
    }


def _spent(network: LocalNetwork) -> dict[str, float]:
    out = {}
    for site in network.sites:
        led = ledger_of(network, site)
        try:
            out[site] = led.spent(P)
        finally:
            led.close()
    return out


def test_accuracy_first_count_preview_then_run(network: LocalNetwork) -> None:
    headers = {"Authorization": f"Bearer {network.token}"}
    with httpx.Client(base_url=network.url, headers=headers, timeout=60) as http:
        # preview: every site shows its own least epsilon for +-10 (k = 3, 3, 2)
        before = _spent(network)
        preview = http.post("/v1/queries/preview", json=_query({"pm95": 10}))
        assert preview.status_code == 200, preview.text
        pv = preview.json()
        assert pv["requested"] is None and pv["mode"] == "dp"
        planned = {s: pv["planned"][s]["epsilon"] for s in network.sites}
        assert planned["oslo"] == planned["bergen"] == pytest.approx(1.5 * planned["trondheim"])
        for row in pv["sites"]:
            assert row["status"] == "ok" and row["accuracy"]["count"] <= 10.0
            assert "the least here for +-10 at 95%" in row["message"]
        assert _spent(network) == before  # a preview charges nothing

        # the run charges each site what its preview said, and the network pools the noise
        run = http.post("/v1/queries", json=_query({"pm95": 10}))
        assert run.status_code == 200, run.text
        res = run.json()
        after = _spent(network)
        for row in res["sites"]:
            site = row["site"]
            assert row["status"] == "ok", row["message"]
            assert row["charged"]["epsilon"] == pytest.approx(planned[site])
            assert after[site] - before[site] == pytest.approx(planned[site])
            assert all(c["ci_high"] - c["value"] <= 10.0 for c in row["cells"])
        for i, cell in enumerate(res["network"]["cells"]):
            std = math.sqrt(sum(row["cells"][i]["std"] ** 2 for row in res["sites"]))
            assert cell["std"] == pytest.approx(std)
            assert cell["value"] == pytest.approx(sum(r["cells"][i]["value"] for r in res["sites"]))

        # +-8 needs epsilon ~1.19 where k = 3 (cap 1): those refuse by name, uncharged
        before = _spent(network)
        tight = http.post("/v1/queries", json=_query({"pm95": 8}))
        assert tight.status_code == 200, tight.text
        rows = {r["site"]: r for r in tight.json()["sites"]}
        for site in ("oslo", "bergen"):
            assert rows[site]["status"] == "policy_violation"
            assert "needs epsilon 1.19" in rows[site]["message"]
            assert "per-query cap 1 " in rows[site]["message"]
        assert rows["trondheim"]["status"] == "ok"
        after = _spent(network)
        assert after["oslo"] == before["oslo"] and after["bergen"] == before["bergen"]
        assert after["trondheim"] > before["trondheim"]

        # strict shape at the gateway: nothing is sent anywhere
        for bad, words in [
            ({"pm95": "10"}, "valid number"),
            ({"pm95": True}, "valid number"),
            ({"pm95": -1}, "greater than 0"),
        ]:
            refused = http.post("/v1/queries", json=_query(bad))
            assert refused.status_code == 422 and words in refused.text, refused.text
        both = {**_query({"pm95": 10})}
        both["privacy"] = {"mode": "dp", "epsilon": 0.5, "accuracy": {"pm95": 10}}
        refused = http.post("/v1/queries", json=both)
        assert refused.status_code == 422 and "exactly one of" in refused.text
        assert _spent(network) == after
