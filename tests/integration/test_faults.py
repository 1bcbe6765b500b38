"""Faults and adversaries: concurrency against a budget, nodes down or frozen, a forging gateway."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from launcher.network import LocalNetwork
from varde.envelope import seal
from varde.release import WorkItem

from .conftest import ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

BREAST: dict[str, Any] = {
    "project": "breast-outcomes",
    "cohort": {"op": "eq", "field": "cancer_type", "value": "breast"},
    "statistic": {"kind": "count"},
    "sites": ["bergen"],
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


def _variant(i: int) -> dict[str, Any]:
    """Fifty distinct questions (identical ones would be answered from the release cache)."""
    age = {"op": "<=", "field": "age_at_diagnosis", "value": 60 + i}
    return {**BREAST, "cohort": {"op": "and", "args": [BREAST["cohort"], age]}}


def test_fifty_concurrent_queries_against_a_budget_for_ten(network: LocalNetwork) -> None:
    """Budget 5.0 at bergen: 50 queries of 0.5 at once, exactly 10 answered."""
    led = ledger_of(network, "bergen")
    assert led.spent("breast-outcomes") == 0.0

    async def fire() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {network.token}"}
        async with httpx.AsyncClient(base_url=network.url, headers=headers, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/v1/queries", json=_variant(i)) for i in range(50))
            )

    responses = asyncio.run(fire())
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 10, 409: 40}, codes
    errors = [r.json() for r in responses if r.status_code == 409]
    assert all(e["error"] == "budget_exhausted" for e in errors), Counter(
        (e["error"], e["detail"][:160]) for e in errors
    )
    charges = list(led.charges("breast-outcomes"))
    assert len(charges) == 10
    assert led.spent("breast-outcomes") == pytest.approx(5.0)
    assert sum(c.amount for c in charges) == pytest.approx(5.0)
    answered = {r.json()["query_id"] for r in responses if r.status_code == 200}
    assert answered == {c.query_id for c in charges}
    led.close()


def _query(network: LocalNetwork, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(
        f"{network.url}/v1/queries",
        json=body,
        headers={"Authorization": f"Bearer {network.token}"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
    "timeout_s": 2.0,
}


def test_frozen_node_is_unavailable_and_never_charged(network: LocalNetwork) -> None:
    led = ledger_of(network, "trondheim")
    before = len(led.charges())
    proc = network._procs["trondheim"]
    proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        res = _query(network, COUNT)
        elapsed = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGCONT)
    rows = {r["site"]: r for r in res["sites"]}
    assert rows["trondheim"]["status"] == "unavailable"
    assert "did not answer within 2.0 s" in rows["trondheim"]["message"]
    assert rows["oslo"]["status"] == rows["bergen"]["status"] == "ok"
    assert res["network"]["sites"] == ["bergen", "oslo"]
    assert elapsed < 10
    # once thawed, the node sees the item has expired and refuses it: nothing charged
    deadline = time.monotonic() + 15
    from nodes.store import NodeStore

    store = NodeStore.in_directory(network.node_state("trondheim"))
    while time.monotonic() < deadline:
        rejected = [e for e in store.events("envelope_rejected") if e.query_id == res["query_id"]]
        if rejected:
            break
        time.sleep(0.2)
    store.close()
    assert rejected and "expired" in rejected[0].detail
    assert len(led.charges()) == before
    led.close()
    network.wait_connected(["trondheim"], timeout=30)


def test_killed_node_then_restart_keeps_its_ledger(network: LocalNetwork) -> None:
    led = ledger_of(network, "trondheim")
    first = _query(network, {**COUNT, "timeout_s": 10})
    spent_before = led.spent("nsclc-feasibility")
    n_before = len(led.charges())
    network.stop_process("trondheim", sig=signal.SIGKILL)
    res = _query(network, COUNT)
    rows = {r["site"]: r for r in res["sites"]}
    assert rows["trondheim"]["status"] == "unavailable"
    assert rows["oslo"]["status"] == "ok"
    assert len(led.charges()) == n_before
    network.restart_node("trondheim")
    network.wait_connected(["trondheim"], timeout=60)
    # the release cache survived the restart: the repeat gets the same numbers for free
    again = _query(network, {**COUNT, "timeout_s": 10})
    site = {r["site"]: r for r in again["sites"]}["trondheim"]
    was = {r["site"]: r for r in first["sites"]}["trondheim"]
    assert site["cached"] and site["charged"] == {"epsilon": 0.0}
    assert site["cells"] == was["cells"]
    assert led.spent("nsclc-feasibility") == pytest.approx(spent_before)
    # a new question is charged
    fresh = {**COUNT, "cohort": {"op": "in", "field": "cancer_type", "values": ["lung", "breast"]}}
    res = _query(network, {**fresh, "timeout_s": 10})
    rows = {r["site"]: r for r in res["sites"]}
    assert rows["trondheim"]["status"] == "ok" and not rows["trondheim"]["cached"]
    assert led.spent("nsclc-feasibility") == pytest.approx(spent_before + 0.1)
    assert rows["trondheim"]["budget_remaining"]["epsilon"] == pytest.approx(
        6.0 - spent_before - 0.1
    )
    led.close()


def _submit_signed(net: LocalNetwork, project: str, query_id: str) -> Any:
    state = net.app_state
    body = {
        "project": project,
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": 0.5},
    }
    work = WorkItem(query_id=query_id, project=project, researcher="mallory", query=body)
    env = seal(
        state.key,
        kind="work",
        sender="gateway",
        recipient="bergen",
        body=work.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=10),
    )
    fut = asyncio.run_coroutine_threadsafe(
        state.dispatcher.submit("bergen", query_id, env, 10.0), state.loop
    )
    return fut.result(timeout=20)[0]


def test_node_refuses_gateway_signed_work_for_a_project_it_does_not_serve(
    small_network: LocalNetwork,
) -> None:
    led = ledger_of(small_network, "bergen")
    before = len(led.charges())  # other tests share this network (test_enrollment charges it)
    release = _submit_signed(small_network, "rogue-project", "rogue-1")
    assert release is not None
    assert release.status == "policy_violation"
    assert "does not serve project 'rogue-project'" in release.message
    assert release.cells == []
    assert len(led.charges()) == before
    assert led.charges("rogue-project") == []
    # the same signed path for a project bergen serves does release (the refusal was the policy's)
    ok = _submit_signed(small_network, "nsclc-feasibility", "fine-1")
    assert ok.status == "ok" and len(led.charges()) == before + 1
    led.close()


def test_missing_policy_denies_everything(small_network: LocalNetwork, tmp_path: Path) -> None:
    """A node started without a policy file answers every query with a refusal."""
    net = small_network
    net.policies["ghost"] = tmp_path / "no-such-policy.yaml"
    net.sites.append("ghost")
    net.data_files["ghost"] = net.data_files["bergen"]
    net.start_node("ghost")
    net.wait_connected(["ghost"], timeout=60)
    release = None
    state = net.app_state
    body = {
        "project": "nsclc-feasibility",
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": 0.1},
    }
    work = WorkItem(query_id="ghost-1", project="nsclc-feasibility", researcher="demo", query=body)
    env = seal(
        state.key,
        kind="work",
        sender="gateway",
        recipient="ghost",
        body=work.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=10),
    )
    fut = asyncio.run_coroutine_threadsafe(
        state.dispatcher.submit("ghost", "ghost-1", env, 10.0), state.loop
    )
    release = fut.result(timeout=20)[0]
    assert release.status == "policy_violation"
    assert "does not serve project" in release.message
    net.stop_process("ghost")


# --- averaging: asking again, or rewording, buys no new noise -----------------------------------

AVERAGED: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "eq", "field": "cancer_type", "value": "lung"},
            {"op": "between", "field": "age_at_diagnosis", "low": 40, "high": 70},
        ],
    },
    "statistic": {"kind": "count"},
    "sites": ["oslo"],
    "privacy": {"mode": "dp", "epsilon": 0.05},
    "timeout_s": 10.0,
}


def _rewordings() -> list[dict[str, Any]]:
    """The same question written five ways (and the original), as an averaging attacker would."""
    lung = {"op": "eq", "field": "cancer_type", "value": "lung"}
    ge = {"op": ">=", "field": "age_at_diagnosis", "value": 40}
    le = {"op": "<=", "field": "age_at_diagnosis", "value": 70}
    cohorts: list[dict[str, Any]] = [
        AVERAGED["cohort"],
        {"op": "and", "args": list(reversed(AVERAGED["cohort"]["args"]))},
        {"op": "and", "args": [lung, ge, le]},
        {"op": "and", "args": [le, {"op": "and", "args": [ge, lung]}]},
        {"op": "and", "args": [{"op": "in", "field": "cancer_type", "values": ["lung"]}, ge, le]},
        {"op": "and", "args": [lung, {"op": ">=", "field": "age_at_diagnosis", "value": 39.5}, le]},
    ]
    return [{**AVERAGED, "cohort": c} for c in cohorts]


def test_averaging_repeats_and_rewordings_gains_nothing(network: LocalNetwork) -> None:
    """Thirty asks of one count (six wordings, five times each): one charge, one set of numbers.

    An attacker who could average n independent answers would shrink the noise by sqrt(n);
    the node recognises the question (nodes/canonical.py) and answers from its release cache.
    """
    led = ledger_of(network, "oslo")
    before = led.spent("nsclc-feasibility")
    answers = [_query(network, body) for _ in range(5) for body in _rewordings()]
    cells = {json.dumps(a["sites"][0]["cells"], sort_keys=True) for a in answers}
    assert len(cells) == 1, "a repeat or a rewording got fresh noise"
    paid = [a["sites"][0]["charged"]["epsilon"] for a in answers]
    assert paid[0] == pytest.approx(0.05) and paid[1:] == [0.0] * (len(paid) - 1)
    assert led.spent("nsclc-feasibility") == pytest.approx(before + 0.05)
    led.close()


# --- kill -9 in the middle of a burst ----------------------------------------------------------


def test_node_killed_mid_burst_keeps_ledger_and_audit_consistent(network: LocalNetwork) -> None:
    """Twenty distinct queries in flight, SIGKILL once the first is charged, then a restart.

    Whatever the kill interrupted: every query is answered or reported unavailable (never a
    5xx), the audit chain verifies, every ledger charge has its ``charged`` audit entry (the
    restart reconciles one the kill cut off), nothing is charged twice, every number the
    researcher got was paid for, and the ledger total is the sum of what the audit says.
    """
    from nodes.store import NodeStore

    site, project = "trondheim", "nsclc-feasibility"
    led = ledger_of(network, site)
    before = {c.query_id for c in led.charges(project)}
    bodies = [
        {
            **_variant(i),
            "project": project,
            "sites": [site],
            "timeout_s": 8.0,
            "privacy": {"mode": "dp", "epsilon": 0.01},
        }
        for i in range(20)
    ]

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {network.token}"}
        async with httpx.AsyncClient(base_url=network.url, headers=headers, timeout=60) as c:

            async def kill_after_first_charge() -> None:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if len({ch.query_id for ch in led.charges(project)} - before) >= 1:
                        break
                    await asyncio.sleep(0.01)
                network.stop_process(site, sig=signal.SIGKILL)

            killer = asyncio.create_task(kill_after_first_charge())
            out = await asyncio.gather(*(c.post("/v1/queries", json=b) for b in bodies))
            await killer
            return list(out)

    responses = asyncio.run(burst())
    assert all(r.status_code in (200, 503) for r in responses), [r.text for r in responses]
    answered = {
        r.json()["query_id"]
        for r in responses
        if r.status_code == 200 and r.json()["sites"][0]["status"] == "ok"
    }
    assert any(
        r.status_code == 503 or r.json()["sites"][0]["status"] == "unavailable" for r in responses
    ), "the kill came too late to interrupt anything"
    network.restart_node(site)
    network.wait_connected([site], timeout=60)
    # The gateway counts a node as connected for a while after its last poll, so "connected"
    # may still describe the killed process. A fresh question answered proves the restarted
    # one is up, and it reconciles its ledger before it polls.
    after = httpx.post(
        f"{network.url}/v1/queries",
        json={
            **_variant(99),
            "project": project,
            "sites": [site],
            "timeout_s": 30.0,
            "privacy": {"mode": "dp", "epsilon": 0.01},
        },
        headers={"Authorization": f"Bearer {network.token}"},
        timeout=60,
    )
    assert after.status_code == 200 and after.json()["sites"][0]["status"] == "ok", after.text
    answered.add(after.json()["query_id"])
    charges = [c for c in led.charges(project) if c.query_id not in before]
    ids = [c.query_id for c in charges]
    assert len(ids) == len(set(ids)), "a query was charged twice"
    assert answered <= set(ids), "a released number was never paid for"
    store = NodeStore.in_directory(network.node_state(site))
    try:
        report = store.verify()
        assert report.ok, report.first
        audited = {e.query_id: e.data for e in store.events("charged") if e.project == project}
    finally:
        store.close()
    assert set(ids) <= set(audited), "a charge without its audit entry after the restart"
    assert sum(c.amount for c in charges) == pytest.approx(sum(audited[q]["amount"] for q in ids))
    led.close()
