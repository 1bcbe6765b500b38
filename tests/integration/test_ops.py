"""Operations on a real network (gateway + one node process, JSON logs): the researcher's
X-Request-ID travels in the signed work item to the node, is logged there, comes back in the
release and is logged by the gateway; /metrics counts the query and the site's answer; /readyz."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launcher.network import LocalNetwork

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ops")]

QUERY = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    mp = pytest.MonkeyPatch()  # the processes inherit the environment: JSON logs at INFO
    mp.setenv("VARDE_LOG_FORMAT", "json")
    mp.setenv("VARDE_LOG_LEVEL", "info")
    network = LocalNetwork(
        workdir=tmp_path_factory.mktemp("ops"), sites=["oslo"], rows=3_000, seed=11
    )
    try:
        network.start()
        yield network
    finally:
        network.stop()
        mp.undo()


def json_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_for_line(
    path: Path, request_id: str, text: str, timeout: float = 10.0
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in json_lines(path):
            if line.get("request_id") == request_id and text in str(line.get("message")):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line with {request_id!r} and {text!r} in {path}")


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_the_request_id_goes_to_the_node_and_back(net: LocalNetwork) -> None:
    rid = "researcher-trace-0001"
    resp = httpx.post(
        f"{net.url}/v1/queries",
        json=QUERY,
        headers={"Authorization": f"Bearer {net.token}", "X-Request-ID": rid},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == rid
    (site,) = resp.json()["sites"]
    assert site["status"] == "ok" and site["request_id"] == rid  # came back in the release
    node = wait_for_line(net.log_path("oslo"), rid, "answered ok")
    assert node["component"] == "node" and node["site"] == "oslo"
    assert node["query_id"] == site["query_id"]
    gateway = net.log_path("gateway")
    assert wait_for_line(gateway, rid, "release of")["query_id"] == site["query_id"]
    assert wait_for_line(gateway, rid, "query answered 200")["endpoint"] == "query"


def test_a_request_without_an_id_gets_one(net: LocalNetwork) -> None:
    resp = httpx.post(
        f"{net.url}/v1/queries",
        json=QUERY,
        headers={"Authorization": f"Bearer {net.token}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    rid = resp.headers["x-request-id"]
    assert len(rid) == 32 and resp.json()["sites"][0]["request_id"] == rid
    wait_for_line(net.log_path("oslo"), rid, "answered ok")


def test_metrics_count_queries_and_site_answers(net: LocalNetwork) -> None:
    before = samples(httpx.get(f"{net.url}/metrics", timeout=10).text)
    headers = {"Authorization": f"Bearer {net.token}"}
    assert httpx.post(f"{net.url}/v1/queries", json=QUERY, headers=headers).status_code == 200
    bad = {**QUERY, "statistic": {"kind": "count", "field": "nope"}}
    assert httpx.post(f"{net.url}/v1/queries", json=bad, headers=headers).status_code == 422
    after = samples(httpx.get(f"{net.url}/metrics", timeout=10).text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("varde_queries_total", endpoint="query", status="200") == 1
    assert delta("varde_queries_total", endpoint="query", status="422") == 1
    assert delta("varde_query_duration_seconds_count", endpoint="query") == 2
    assert delta("varde_site_answer_seconds_count", site="oslo", status="ok") == 1
    assert after[("varde_connected_nodes", ())] == 1
    assert after[("varde_queue_depth", ())] == 0


def test_ready(net: LocalNetwork) -> None:
    resp = httpx.get(f"{net.url}/readyz", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ready"
