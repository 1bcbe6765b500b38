"""Prometheus metrics of the gateway (``GET /metrics``), and the middleware that feeds them.

What an operator of a network of many hospitals needs to see first: how many
queries end in which status, how long researchers wait, which site is slow to
answer, how many nodes are connected, and whether work piles up in the queue.
The instruments live in one registry per process (not prometheus-client's
global one, so an in-process test gateway and the launcher do not collide); each
replica serves its own numbers and Prometheus sums them. Connected nodes and
queue depth are read from the work queue when scraped, so they are never stale.

The middleware (pure ASGI: it never buffers a long-poll's body) also gives every
request its id (:mod:`varde.logs`): the caller's ``X-Request-ID`` when it is a
plain token, else a fresh one; it is returned in the response header, bound
for the request's log records, and signed into the work items the request
creates, so the nodes log it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.dispatch import Answer, WorkQueue
from varde.logs import REQUEST_ID_HEADER, accept_request_id, bound_request_id

log = logging.getLogger("varde.gateway.requests")

QUERY_PATHS = {"/v1/queries": "query", "/v1/queries/preview": "preview"}
"""The researcher endpoints counted as queries, and the ``endpoint`` label of each."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: from a loopback round trip (milliseconds) to a query's default timeout."""


class GatewayMetrics:
    """The gateway's instruments, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queries = Counter(
            "varde_queries",
            "Researcher queries answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "varde_query_duration_seconds",
            "Time from a researcher's query arriving to its answer, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.site_answer = Histogram(
            "varde_site_answer_seconds",
            "Time from a work item being queued to its site's signed release arriving, by site "
            "and release status (no_answer: none came before the query's timeout).",
            ["site", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.connected = Gauge(
            "varde_connected_nodes",
            "Nodes polling now or within the offline window (as this replica sees them).",
            registry=self.registry,
        )
        self.known = Gauge(
            "varde_known_nodes", "Nodes this replica has heard from.", registry=self.registry
        )
        self.depth = Gauge(
            "varde_queue_depth",
            "Work items queued and not yet handed to their node.",
            registry=self.registry,
        )

    async def timed_answer(self, site: str, pending: Awaitable[Answer | None]) -> Answer | None:
        """Await ``pending`` (a work queue's ``submit``), recording the site's answer time."""
        started = time.perf_counter()
        answer = await pending
        status = answer[0].status if answer is not None else "no_answer"
        self.site_answer.labels(site=site, status=status).observe(time.perf_counter() - started)
        return answer

    async def render(self, queue: WorkQueue) -> bytes:
        """The text exposition format, with the queue's gauges read now."""
        sites = queue.sites()
        self.known.set(len(sites))
        self.connected.set(sum(1 for s in sites if queue.connected(s)))
        self.depth.set(await queue.depth())
        return generate_latest(self.registry)


METRICS = GatewayMetrics()
"""This process's instruments."""


class RequestContext:
    """ASGI middleware: a request id for every request; counts and times the query endpoints."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics = METRICS) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Bind the request id, add it to the response, observe queries."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = accept_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        endpoint = QUERY_PATHS.get(scope["path"]) if scope["method"] == "POST" else None
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        with bound_request_id(rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if endpoint is not None:
                    self._observe(endpoint, int(status["code"]), time.perf_counter() - started)

    def _observe(self, endpoint: str, code: int, seconds: float) -> None:
        self.metrics.queries.labels(endpoint=endpoint, status=str(code)).inc()
        self.metrics.latency.labels(endpoint=endpoint).observe(seconds)
        log.info(
            "%s answered %d in %.0f ms",
            endpoint,
            code,
            seconds * 1000,
            extra={"endpoint": endpoint, "status": code, "duration_ms": round(seconds * 1000, 1)},
        )
