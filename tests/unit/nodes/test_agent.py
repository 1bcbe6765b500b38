"""The agent survives cuts: it reconnects with jittered backoff, keeps undelivered releases,
and never runs a work item twice (a repeat of a query id gets the stored release).

The gateway is a double (``httpx.MockTransport``) the test controls, so the cut
can fall exactly between the node's charge and the gateway's receipt of the
release.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.agent import Agent
from nodes.context import NodeContext
from tests.conftest import make_work
from varde import __version__
from varde.crypto import generate_key
from varde.envelope import SignedEnvelope, peek
from varde.release import SiteRelease

COUNT = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
}


class GatewayDouble:
    """Answers the node's polls from a script: one callable per poll."""

    def __init__(self, script: list[Callable[[dict[str, object]], httpx.Response]]) -> None:
        self.script = script
        self.polls: list[dict[str, object]] = []
        self.releases: list[SiteRelease] = []
        self.done = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = peek(SignedEnvelope.model_validate(json.loads(request.content))).body
        if request.url.path == "/v1/nodes/releases":
            self.releases.append(SiteRelease.model_validate(body))
            return httpx.Response(200, json={"accepted": True, "delivered": True})
        self.polls.append(body)
        step = self.script[min(len(self.polls), len(self.script)) - 1]
        if len(self.polls) >= len(self.script):
            self.done.set()
        return step(body)

    def carried(self, body: dict[str, object]) -> list[SiteRelease]:
        rels = body.get("releases", [])
        assert isinstance(rels, list)
        return [
            SiteRelease.model_validate(peek(SignedEnvelope.model_validate(r)).body) for r in rels
        ]


def work(*items: SignedEnvelope) -> Callable[[dict[str, object]], httpx.Response]:
    return lambda _body: httpx.Response(
        200, json={"work": [i.model_dump(mode="json") for i in items]}
    )


def cut(_body: dict[str, object]) -> httpx.Response:
    raise httpx.ConnectError("connection cut")


def idle(_body: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"work": []})


def _run(agent: Agent, gateway: GatewayDouble, timeout: float = 20.0) -> None:
    agent.client = httpx.Client(transport=httpx.MockTransport(gateway))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        assert gateway.done.wait(timeout), f"script not finished: {len(gateway.polls)} polls"
    finally:
        stop.set()
        thread.join(timeout)
    assert not thread.is_alive()


def test_a_cut_after_the_charge_neither_loses_the_release_nor_charges_twice(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    item = make_work(gateway_key, COUNT, query_id="q-cut")
    agent = Agent(node_ctx, "http://127.0.0.1:9", inline_wait=10.0, max_backoff=0.05)
    # poll 1 hands out the item; poll 2 carries its release and the connection breaks
    # (the gateway never read it); poll 3 carries it again, and this gateway, having
    # lost track, hands the same item out again (as a replica does after a lease expires);
    # poll 4 carries the answer to the repeat.
    gateway = GatewayDouble([work(item), cut, work(item), idle, idle])
    _run(agent, gateway)
    agent.close()
    lost = gateway.carried(gateway.polls[1])
    first = gateway.carried(gateway.polls[2])
    repeat = gateway.carried(gateway.polls[3])
    assert [r.query_id for r in lost] == [r.query_id for r in first] == ["q-cut"]
    assert first[0].status == "ok" and first[0].cells, first[0]
    assert repeat == first  # the very same release: same noise, same charge, not re-run
    assert len(node_ctx.ledger.charges()) == 1
    kinds = [e.kind for e in node_ctx.store.events()]
    assert kinds.count("released") == 1 and kinds.count("work_redelivered") == 1


def test_a_forged_item_with_an_answered_query_id_gets_nothing_stored(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    item = make_work(gateway_key, COUNT, query_id="q-x")
    forged = make_work(generate_key(), COUNT, query_id="q-x")
    agent = Agent(node_ctx, "http://127.0.0.1:9", inline_wait=10.0, max_backoff=0.05)
    gateway = GatewayDouble([work(item), work(forged), idle, idle])
    _run(agent, gateway)
    agent.close()
    [answer] = gateway.carried(gateway.polls[1])
    [refusal] = gateway.carried(gateway.polls[2])
    assert answer.status == "ok" and refusal.status != "ok" and not refusal.cells
    assert len(node_ctx.ledger.charges()) == 1


def test_reconnects_with_capped_jittered_backoff_and_reports_version_and_state(
    node_ctx: NodeContext, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(node_ctx, "http://127.0.0.1:9", max_backoff=0.2)

    def refused(_body: dict[str, object]) -> httpx.Response:
        return httpx.Response(403, json={"detail": "site 'oslo' was revoked by the operator"})

    gateway = GatewayDouble([cut, cut, cut, refused, cut, cut, idle, idle])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="varde.node.agent"):
        _run(agent, gateway)
    elapsed = time.monotonic() - started
    agent.close()
    assert elapsed < 6 * 0.2 + 1.5  # six pauses, none above the cap
    assert agent.link_state() is True
    waits = [p["wait"] for p in gateway.polls]
    assert waits[:7] == [0.0] * 7 and waits[7] == agent.poll_wait  # long once connected
    assert {p["node_version"] for p in gateway.polls} == {__version__}
    assert {p["node_state"] for p in gateway.polls} == {"serving"}
    refusal = next(r.getMessage() for r in caplog.records if "refused poll" in r.getMessage())
    assert "403" in refusal and "new enrollment token" in refusal


def test_a_release_the_gateway_cannot_take_waits_for_the_next_poll(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    """Work still running after the inline wait is posted on its own; if that fails, a poll
    carries it."""
    item = make_work(gateway_key, COUNT, query_id="q-slow")
    agent = Agent(node_ctx, "http://127.0.0.1:9", inline_wait=0.0, max_backoff=0.05)
    posts: list[str] = []
    carried: list[str] = []
    polls = 0
    done = threading.Event()

    def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        body = peek(SignedEnvelope.model_validate(json.loads(request.content))).body
        if request.url.path == "/v1/nodes/releases":
            posts.append(str(body["query_id"]))
            raise httpx.ConnectError("cut")
        polls += 1
        rels = body.get("releases", [])
        assert isinstance(rels, list)
        carried.extend(str(peek(SignedEnvelope.model_validate(r)).body["query_id"]) for r in rels)
        if carried:
            done.set()
        if polls == 1:
            return httpx.Response(200, json={"work": [item.model_dump(mode="json")]})
        time.sleep(0.05)
        return httpx.Response(200, json={"work": []})

    agent.client = httpx.Client(transport=httpx.MockTransport(gateway))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        assert done.wait(20)
    finally:
        stop.set()
        thread.join(20)
    agent.close()
    assert posts == ["q-slow"] * 3  # three tries on its own
    assert carried == ["q-slow"]  # then the next poll carried it
    assert len(node_ctx.ledger.charges()) == 1
