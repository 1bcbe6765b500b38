"""The node knows it is connected after one round trip, not after the first long poll's 20 s."""

from __future__ import annotations

import json
import threading

import httpx

from nodes.agent import Agent
from nodes.context import NodeContext
from varde.envelope import SignedEnvelope, peek


def test_first_poll_returns_at_once_then_polls_are_long(node_ctx: NodeContext) -> None:
    agent = Agent(node_ctx, "http://127.0.0.1:9", poll_wait=20.0)
    waits: list[float] = []
    states: list[bool | None] = []
    stop = threading.Event()

    def gateway(request: httpx.Request) -> httpx.Response:
        body = peek(SignedEnvelope.model_validate(json.loads(request.content))).body
        states.append(agent.link_state())  # what the console would show while this poll is open
        waits.append(float(body["wait"]))
        if len(waits) == 1:
            return httpx.Response(503)  # the gateway is not up yet
        if len(waits) == 4:
            stop.set()
        return httpx.Response(200, json={"work": []})

    assert agent.link_state() is None  # nothing known before the first poll answered
    agent.client = httpx.Client(transport=httpx.MockTransport(gateway))
    agent.run(stop)
    agent.close()
    # refused: down, and the next poll asks for an immediate answer again; once answered, long
    assert waits == [0.0, 0.0, 20.0, 20.0]
    assert states == [None, False, True, True]
    assert agent.link_state() is True
