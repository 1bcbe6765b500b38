"""The gateway's metrics and request ids: what /metrics counts, the queue's gauges, X-Request-ID."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.core.config import Settings
from gateway.core.db import make_engine
from gateway.dispatch import Dispatcher
from gateway.metrics import GatewayMetrics
from tests.conftest import scratch_postgres
from tests.unit.gateway.test_training_gateway import Client
from varde.crypto import generate_key
from varde.envelope import SignedEnvelope, seal
from varde.release import SiteRelease, WorkItem

KEY = generate_key()


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text body, by name and sorted labels (parsed, not grepped)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def work(site: str, query_id: str) -> SignedEnvelope:
    item = WorkItem(query_id=query_id, project="p", researcher="r", query={}, request_id="rid-1")
    return seal(
        KEY,
        kind="work",
        sender="gateway",
        recipient=site,
        body=item.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=30),
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(create_app(Settings(state_dir=tmp_path_factory.mktemp("metrics"))))


def test_queries_are_counted_by_endpoint_and_status(client: Client) -> None:
    before = samples(client.get("/metrics").text)
    query = {"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "dp"}}
    assert client.post("/v1/queries", json=query).status_code == 401  # no token
    assert client.post("/v1/queries", json={"bogus": 1}).status_code in (401, 422)
    assert client.post("/v1/queries/preview", json=query).status_code == 401
    client.get("/healthz")  # not a query: not counted
    after = samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    counted = delta("varde_queries_total", endpoint="query", status="401") + delta(
        "varde_queries_total", endpoint="query", status="422"
    )
    assert counted == 2
    assert delta("varde_queries_total", endpoint="preview", status="401") == 1
    assert delta("varde_query_duration_seconds_count", endpoint="query") == 2
    assert after[("varde_connected_nodes", ())] == 0
    assert after[("varde_queue_depth", ())] == 0


def test_metrics_is_prometheus_text(client: Client) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {
        "varde_queries",
        "varde_query_duration_seconds",
        "varde_site_answer_seconds",
        "varde_connected_nodes",
        "varde_queue_depth",
    } <= names


def test_a_valid_request_id_is_kept_and_returned(client: Client) -> None:
    resp = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert resp.headers["x-request-id"] == "trace-42.a:b"


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 65, "semi;colon", "ünï".encode()])
def test_an_invalid_or_missing_request_id_is_replaced(
    client: Client, given: str | bytes | None
) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    resp = client.get("/healthz", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-request-id"])


def test_queue_gauges_and_site_answer_time_from_an_in_process_queue() -> None:
    metrics = GatewayMetrics()
    queue = Dispatcher(offline_after_s=5)

    async def main() -> None:
        first = asyncio.create_task(
            metrics.timed_answer("oslo", queue.submit("oslo", "q1", work("oslo", "q1"), 5))
        )
        asyncio.create_task(queue.submit("bergen", "q2", work("bergen", "q2"), 0.2))
        await asyncio.sleep(0.05)
        body = samples((await metrics.render(queue)).decode())
        assert body[("varde_queue_depth", ())] == 2
        assert body[("varde_connected_nodes", ())] == 0  # queued for, never polled
        batch = await queue.next_batch("oslo", wait=1)  # oslo polls: its item leaves the queue
        assert len(batch) == 1
        body = samples((await metrics.render(queue)).decode())
        assert body[("varde_queue_depth", ())] == 1
        assert body[("varde_connected_nodes", ())] == 1
        assert body[("varde_known_nodes", ())] == 2
        released = SiteRelease(query_id="q1", site="oslo", status="ok")
        assert await queue.deliver(released, batch[0])
        assert (await first) is not None
        late = metrics.timed_answer(
            "bergen", queue.submit("bergen", "q3", work("bergen", "q3"), 0.1)
        )
        assert await late is None

    asyncio.run(main())
    body = samples(_render(metrics))
    assert body[("varde_site_answer_seconds_count", (("site", "oslo"), ("status", "ok")))] == 1
    assert (
        body[("varde_site_answer_seconds_count", (("site", "bergen"), ("status", "no_answer")))]
        == 1
    )


def _render(metrics: GatewayMetrics) -> str:
    return asyncio.run(metrics.render(Dispatcher())).decode()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_postgres("varde_metrics") as url:
        make_engine(url).dispose()
        yield url


@pytest.mark.integration
def test_queue_depth_is_shared_by_postgresql_replicas(pg_url: str, tmp_path: Path) -> None:
    from gateway.dispatch_pg import PgDispatcher

    async def main() -> None:
        a, b = PgDispatcher(pg_url), PgDispatcher(pg_url)
        await a.start()
        await b.start()
        try:
            waiting = [
                asyncio.create_task(a.submit("oslo", f"q{i}", work("oslo", f"q{i}"), 0.5))
                for i in range(3)
            ]
            await asyncio.sleep(0.2)
            assert await b.depth() == 3  # queued on a, seen from b: one number for all
            await asyncio.gather(*waiting)  # timed out: withdrawn
            assert await a.depth() == 0
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
