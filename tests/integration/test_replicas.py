"""Gateway replicas on one PostgreSQL: real ``varde gateway serve`` processes and real nodes.

Two replicas: each node polls its own replica, researchers alternate between
them, so every query is answered through the other replica for one of its
sites, and a node's signed poll replayed to the other replica is refused.
Three replicas: the nodes reach them through a round-robin TCP load balancer
(what a deployment puts in front), researchers submit to all three, and one
replica is killed with SIGKILL in the middle of a burst: every query is
answered or fails clearly, and what the nodes charged is exactly what the
gateway recorded, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from launcher.network import LocalNetwork
from tests.conftest import scratch_postgres
from varde.crypto import generate_key, public_key_b64
from varde.envelope import SignedEnvelope, peek, seal

from .conftest import ledger_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("postgres"),
    pytest.mark.timeout(240),
]

SITES = ["oslo", "bergen", "trondheim"]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database for one network, dropped afterwards."""
    with scratch_postgres("varde_r") as url:
        yield url


class RoundRobin:
    """A TCP load balancer: each new connection goes to the next replica that accepts it."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._next = itertools.cycle(range(len(ports)))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="round-robin", daemon=True)
        self.port = 0

    def __enter__(self) -> RoundRobin:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.ports:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.ports[next(self._next)]
                )
                break
            except OSError:  # that replica is down: the next one
                continue
        else:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass  # a replica killed mid-request: the node sees its connection drop
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def count(i: int, timeout_s: float = 20.0) -> dict[str, Any]:
    """A feasibility count; each epsilon differs, so no site answers it from its cache."""
    return {
        "project": "nsclc-feasibility",
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": round(0.01 + 0.0001 * i, 6)},
        "timeout_s": timeout_s,
    }


def ask(url: str, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/queries",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=body["timeout_s"] + 20,
    )


def recorded_ok(db_url: str) -> dict[str, list[str]]:
    """Per site, the query ids of every release the gateway recorded that charged the site."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT site, status, payload, signature FROM releases")).all()
    engine.dispose()
    out: dict[str, list[str]] = {}
    for site, status, payload, signature in rows:
        body = peek(SignedEnvelope(payload=payload, signature=signature)).body
        if status == "ok" and not body.get("cached"):
            out.setdefault(site, []).append(str(body["query_id"]))
    return out


def evidence(db_url: str, query_ids: list[str]) -> list[tuple[Any, ...]]:
    """The release rows of ``query_ids`` and whether the query was recorded, for a message."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT r.query_id, r.site, r.status, r.received_at, q.result IS NOT NULL"
                " FROM releases r LEFT JOIN queries q ON q.id = r.query_id"
                " WHERE r.query_id = ANY(:q) ORDER BY r.received_at"
            ),
            {"q": query_ids},
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def assert_charged_as_recorded(net: LocalNetwork, db_url: str) -> None:
    """Each site's ledger holds exactly the charges of the releases the gateway recorded."""
    recorded = recorded_ok(db_url)
    for site in net.sites:
        led = ledger_of(net, site)
        try:
            charged = [c.query_id for c in led.charges()]
        finally:
            led.close()
        assert len(set(charged)) == len(charged), f"{site} charged a query twice"
        kept = recorded.get(site, [])
        twice = [q for q, n in Counter(kept).items() if n > 1]
        assert not twice, f"releases of {site} recorded twice: {twice}; {evidence(db_url, twice)}"
        assert sorted(charged) == sorted(kept), site


def wait_queue_drained(db_url: str, timeout: float) -> int:
    """Wait until every work item is resolved and forgotten; the number left."""
    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                left = int(conn.execute(text("SELECT count(*) FROM work_items")).scalar() or 0)
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(0.5)
    finally:
        engine.dispose()


def pending_items(db_url: str, site: str, n: int, timeout: float) -> bool:
    """Whether ``n`` work items for ``site`` wait (queued or handed out) within ``timeout``."""
    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM work_items"
                        " WHERE site = :s AND state IN ('queued', 'leased')"
                    ),
                    {"s": site},
                ).scalar()
            if (waiting or 0) >= n:
                return True
            time.sleep(0.05)
        return False
    finally:
        engine.dispose()


def logs(net: LocalNetwork) -> str:
    """The last lines of every process's log, for a failure message."""
    names = [net.replica_name(i) for i in range(net.gateway_replicas)] + net.sites
    return "".join(f"\n--- {name}:\n{net._tail(name, 15)}" for name in names)


def network(workdir: Path, db_url: str, replicas: int, sites: list[str]) -> LocalNetwork:
    return LocalNetwork(
        workdir=workdir,
        sites=sites,
        rows=5_000,
        seed=7,
        database_url=db_url,
        gateway_replicas=replicas,
    )


def test_two_replicas_answer_queries_whose_nodes_poll_the_other(
    pg_url: str, tmp_path: Path
) -> None:
    net = network(tmp_path, pg_url, 2, SITES[:2])
    net.start()  # oslo polls replica 1, bergen replica 2
    try:
        headers = {"Authorization": f"Bearer {net.token}"}
        for url in net.replica_urls:  # each replica sees both nodes, wherever they poll
            sites = httpx.get(f"{url}/v1/sites", headers=headers, timeout=10).json()
            assert {s["site"]: s["connected"] for s in sites} == {"oslo": True, "bergen": True}
        for i in range(8):
            resp = ask(net.replica_urls[i % 2], net.token, count(i))
            assert resp.status_code == 200, resp.text + logs(net)
            body = resp.json()
            assert {s["site"]: s["status"] for s in body["sites"]} == {"oslo": "ok", "bergen": "ok"}
            stored = httpx.get(  # recorded once, readable through the other replica
                f"{net.replica_urls[(i + 1) % 2]}/v1/queries/{body['query_id']}",
                headers=headers,
                timeout=10,
            )
            assert stored.status_code == 200, stored.text
        # a node's signed poll replayed to the other replica is refused there too
        key = generate_key()
        token = net.enrollment_token("mallory")
        enrolled = httpx.post(
            f"{net.replica_urls[0]}/v1/nodes/enroll",
            json={"token": token, "site": "mallory", "public_key": public_key_b64(key)},
            timeout=10,
        )
        assert enrolled.status_code == 200, enrolled.text
        poll = seal(
            key,
            kind="poll",
            sender="mallory",
            recipient="gateway",
            body={"wait": 0, "manifest": {"site": "mallory", "fields": [], "statistics": []}},
            ttl=dt.timedelta(seconds=30),
        ).model_dump()
        first = httpx.post(f"{net.replica_urls[0]}/v1/nodes/poll", json=poll, timeout=10)
        assert first.status_code == 200, first.text
        again = httpx.post(f"{net.replica_urls[1]}/v1/nodes/poll", json=poll, timeout=10)
        assert again.status_code == 400 and "replayed" in again.json()["detail"], again.text
        engine = create_engine(pg_url)
        with engine.connect() as conn:  # each item taken by its query; none left to adopt
            states = dict(
                conn.execute(text("SELECT state, count(*) FROM work_items GROUP BY state")).all()
            )
        engine.dispose()
        assert states == {"answered": 16}
    finally:
        net.stop()
    assert_charged_as_recorded(net, pg_url)
    assert {site: len(ids) for site, ids in recorded_ok(pg_url).items()} == {
        "oslo": 8,
        "bergen": 8,
    }


def test_a_replica_killed_mid_burst_loses_nothing_and_charges_nothing_twice(
    pg_url: str, tmp_path: Path
) -> None:
    net = network(tmp_path, pg_url, 3, SITES)
    net.ensure_data()
    net.ensure_policies()
    net.start_gateway()
    with RoundRobin([int(u.rsplit(":", 1)[1]) for u in net.replica_urls]) as balancer:
        net.node_gateway = dict.fromkeys(SITES, balancer.url)
        try:
            for site in SITES:
                net.start_node(site)
            net.wait_connected()
            victim = 1  # the second replica dies; researchers keep asking all three
            answered: dict[str, int] = {}

            def one(i: int, replica: int, delay: float) -> tuple[int, str]:
                time.sleep(delay)
                try:
                    resp = ask(net.replica_urls[replica], net.token, count(i, timeout_s=8))
                except httpx.TransportError:
                    return replica, "connection lost"
                if resp.status_code == 200:
                    body = resp.json()
                    assert {s["status"] for s in body["sites"]} <= {"ok", "unavailable"}, body
                    answered[body["query_id"]] = replica
                    return replica, "answered"
                assert resp.headers["content-type"].startswith("application/json"), resp.text
                assert resp.status_code < 500 or resp.status_code == 503, resp.text
                return replica, f"refused {resp.json()['error']}"

            slow = net._procs["trondheim"].pid  # held still, so queries are in flight at the kill
            os.kill(slow, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(32) as pool:
                    # four queries on the victim first: in flight (trondheim's part pending) ...
                    futures = [pool.submit(one, i, victim, 0.0) for i in range(4)]
                    assert pending_items(pg_url, "trondheim", 4, timeout=20)
                    # ... then a burst over all three, the victim killed in its middle
                    futures += [pool.submit(one, i, i % 3, 0.04 * i) for i in range(4, 40)]
                    time.sleep(0.6)
                    net.stop_process(net.replica_name(victim), signal.SIGKILL)
                    time.sleep(1.0)
                    os.kill(slow, signal.SIGCONT)
                    outcomes = [f.result() for f in futures]
            finally:
                os.kill(slow, signal.SIGCONT)
            by_replica = Counter(outcomes)
            # queries on the survivors are all answered; the victim's fail as lost connections
            for replica in (0, 2):
                assert by_replica[(replica, "answered")] == 12, f"{by_replica}{logs(net)}"
            assert {o for r, o in outcomes if r == victim} <= {"answered", "connection lost"}
            # a survivor adopts the four queries the victim left (after deadline and grace) ...
            assert wait_queue_drained(pg_url, 40) == 0
            engine = create_engine(pg_url)
            with engine.connect() as conn:
                recorded = set(conn.execute(text("SELECT id FROM queries")).scalars())
            engine.dispose()
            print(f"outcomes {dict(by_replica)}; adopted {len(recorded - set(answered))}")
            assert set(answered) <= recorded
            assert len(recorded - set(answered)) >= 4, "the dead replica's queries not adopted"
            after = ask(net.replica_urls[2], net.token, count(99))
            assert after.status_code == 200, after.text
            assert {s["status"] for s in after.json()["sites"]} == {"ok"}
        finally:
            net.stop()
    # ... so every charge at a node is a release the gateway recorded, and none twice
    assert_charged_as_recorded(net, pg_url)
